//! Bad input everywhere: every solver, every oracle call site, every bad value (NaN, ±∞)
//! and an oracle failure give the specific error and leave the solver state and `x` exactly
//! as they were; bad configuration values give `InvalidConfig` naming the field.

use core::fmt::Debug;

use bilevel::Error;
use bilevel::algo::aid::{AdjointSolver, Aid, AidConfig};
use bilevel::algo::itd::{ItdConfig, ItdForward, ItdReverse};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::problem::Counted;
use bilevel::problems::Quadratic;
use bilevel::run::{Outer, Solver, step};

type Q = Quadratic<f64, 2, 4>;

fn problem() -> Q {
    Q::random(5, 10.0, 0.2)
}

#[test]
fn every_solver_keeps_state_under_every_fault() {
    // Building the table runs every check; here: every solver appears with its oracles.
    let table = bilevel_tests::robustness::table();
    for solver in [
        "NBO-GD",
        "NBO-CG",
        "AID-CG",
        "AID-Neumann",
        "AmIGO-GD",
        "ITD (reverse)",
        "ITD (forward)",
        "reference",
        "SOBA",
        "MA-SOBA",
        "SABA",
        "NSBO-SGD",
        "NSBO-SAGA",
        "stocBiO",
        "F2SA",
        "PZOBO-S",
    ] {
        let rows = table.lines().filter(|l| l.starts_with(&format!("| {solver}"))).count();
        assert!(rows >= 2, "{solver}: {rows} rows");
    }
    assert!(!table.contains("panicked"));
    // The published table is this one (the example prints it, then the fuzzing record).
    let doc = format!("{table}\n{}", include_str!("../../fuzz/RUNS.md"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/robustness.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/robustness.md is stale: cargo run --release -p bilevel-tests --example robustness > docs/robustness.md"
    );
}

/// A step with an invalid configuration returns `InvalidConfig` naming `field`, changing
/// nothing.
fn rejects<S>(solver: S, field: &str)
where
    S: Solver<f64, 2, 4> + Clone + PartialEq + Debug,
{
    let counted = Counted::new(problem());
    let (mut s, mut x) = (solver.clone(), [0.3, -0.2]);
    match step(&mut s, &counted, &mut x, &Outer::constant(0.05), 0) {
        Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidConfig({field}), got {other:?}"),
    }
    // Debug text, not ==: a NaN in the configuration is unequal to itself.
    assert_eq!(format!("{s:?}"), format!("{solver:?}"));
    assert_eq!(x, [0.3, -0.2]);
    assert_eq!(counted.counts().total(), 0, "no oracle called before validation");
}

const BAD_STEPS: [f64; 4] = [0.0, -0.1, f64::NAN, f64::INFINITY];

#[test]
fn bad_configuration_values_are_rejected_by_name() {
    for bad in BAD_STEPS {
        rejects(Nbo::new(NboConfig::gradient_descent(bad, 1), [0.0; 4]), "NBO step β");
        let mut cfg = NboConfig::conjugate_gradient(2);
        cfg.tolerance = if bad == 0.0 { -1.0 } else { bad };
        if !(cfg.tolerance >= 0.0 && cfg.tolerance.is_finite()) {
            rejects(Nbo::new(cfg, [0.0; 4]), "NBO tolerance");
        }
        rejects(
            Aid::new(AidConfig::conjugate_gradient(bad, 3, 3), [0.0; 4]),
            "lower step α",
        );
        rejects(
            Aid::new(AidConfig::neumann(0.05, 3, bad, 3), [0.0; 4]),
            "Neumann step η",
        );
        let adjoint = AdjointSolver::GradientDescent {
            step: bad,
            steps: 3,
            warm_start: true,
        };
        let amigo = AidConfig {
            adjoint,
            ..AidConfig::amigo_gd(0.05, 3, 3)
        };
        rejects(Aid::new(amigo, [0.0; 4]), "adjoint step");
        let itd = ItdConfig {
            lower_step: bad,
            lower_steps: 4,
        };
        rejects(ItdForward::new(itd, [0.0; 4]), "lower step α");
        rejects(ItdReverse::<f64, 4, 8>::new(itd, [0.0; 4]), "lower step α");
    }
    rejects(Nbo::new(NboConfig::conjugate_gradient(0), [0.0; 4]), "NBO steps T");
    rejects(
        Aid::new(AidConfig::conjugate_gradient(0.05, 0, 3), [0.0; 4]),
        "lower steps D",
    );
    rejects(
        Aid::new(AidConfig::conjugate_gradient(0.05, 3, 0), [0.0; 4]),
        "adjoint CG steps",
    );
    let itd = ItdConfig {
        lower_step: 0.05,
        lower_steps: 0,
    };
    rejects(ItdForward::new(itd, [0.0; 4]), "lower steps D");
}

#[test]
fn bad_outer_steps_are_rejected_before_any_oracle_call() {
    for bad in BAD_STEPS {
        let solver = Nbo::new(NboConfig::gradient_descent(0.05, 1), [0.0; 4]);
        let counted = Counted::new(problem());
        let (mut s, mut x) = (solver.clone(), [0.3, -0.2]);
        let e = step(&mut s, &counted, &mut x, &Outer::constant(bad), 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    field: "outer step",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!((s, x, counted.counts().total()), (solver, [0.3, -0.2], 0));
    }
}
