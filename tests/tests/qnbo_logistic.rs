//! qNBO on logistic regression with a tuned L2 strength (synthetic data): the
//! hypergradient at fixed points against the reference, and the outer loop against the
//! optimum found with the reference hypergradient.

use std::ops::ControlFlow;

use bilevel::algo::qnbo::{AdjointSource, ExtraSteps, Qnbo, QnboConfig};
use bilevel::inner::StepRule;
use bilevel::problem::Counted;
use bilevel::problems::{Logistic, Samples};
use bilevel::qn::{DenseBfgs, InverseHessian, LSr1};
use bilevel::reference::{ReferenceConfig, ReferenceSolver, reference_hypergradient, reference_value};
use bilevel::rng::Rng128;
use bilevel::run::{Budget, Outer, Solver, run};
use bilevel_tests::rel_norm_err;

const D: usize = 4;
const DY: usize = D + 1;
const N_TRAIN: usize = 40;
const N_VAL: usize = 30;

fn data<const N: usize>(seed: u64) -> ([[f64; D]; N], [f64; N]) {
    let mut r = Rng128::new(seed);
    let w = [1.0, -2.0, 0.5, 1.5];
    let mut rows = [[0.0; D]; N];
    let mut t = [0.0; N];
    for i in 0..N {
        r.fill_gaussian(&mut rows[i]);
        let z = bilevel::linalg::dot(&w, &rows[i]) + 0.3 + 1.5 * r.gaussian::<f64>();
        t[i] = f64::from(u8::from(z > 0.0));
    }
    (rows, t)
}

fn config(adjoint_steps: u32) -> QnboConfig<f64> {
    QnboConfig {
        warmup_steps: 0,
        step: StepRule::armijo(),
        qn_steps: 60,
        lower_tolerance: 1e-12,
        adjoint: AdjointSource::SubroutineB {
            step: StepRule::armijo(),
            steps: ExtraSteps::Constant(adjoint_steps),
        },
        ..QnboConfig::default()
    }
}

fn with_problem<R>(f: impl FnOnce(&Logistic<'_, f64, D, 1, DY>) -> R) -> R {
    let (ta, tt) = data::<N_TRAIN>(1);
    let (va, vt) = data::<N_VAL>(2);
    let train = Samples::new(&ta, &tt).unwrap();
    let validation = Samples::new(&va, &vt).unwrap();
    f(&Logistic::new(train, validation).unwrap())
}

/// Relative error of one qNBO hypergradient at `x` (from `y = 0`) against the reference.
fn hyper_err<H: InverseHessian<f64, DY>>(p: &Logistic<'_, f64, D, 1, DY>, x: f64, cfg: QnboConfig<f64>) -> f64 {
    let r = reference_hypergradient(p, &[x], &[0.0; DY], &ReferenceConfig::default()).unwrap();
    let mut s = Qnbo::<f64, H, DY>::new(cfg, [0.0; DY]);
    let mut h = [0.0; 1];
    Solver::<f64, 1, DY>::hypergradient(&mut s, p, &[x], &mut h).unwrap();
    rel_norm_err(&h, &r.hypergradient)
}

#[test]
fn hypergradient_at_fixed_points_against_the_reference() {
    // A solves the lower level to ‖∇g‖ ≤ 1e-12 (Armijo); B then starts at a converged y,
    // its steps fall under the tiny-step floor and u comes from A's pairs (spec §2.5).
    // Measured relative errors at x = −3, −1, 1: BFGS 4.5e-2, 5.3e-2, 7.2e-3; SR1 7.0e-3,
    // 2.2e-2, 5.5e-4. The quasi-Newton adjoint is accurate only along the directions the
    // lower solve explored, so 1e-6 is out of reach for this estimator.
    with_problem(|p| {
        for x in [-3.0, -1.0, 1.0] {
            let bfgs = hyper_err::<DenseBfgs<f64, DY>>(p, x, config(20));
            let sr1 = hyper_err::<LSr1<f64, DY, 64>>(p, x, config(20));
            assert!(bfgs < 0.1 && sr1 < 0.05, "x = {x}: {bfgs} {sr1}");
        }
    });
}

#[test]
fn outer_loop_against_the_reference_optimum() {
    with_problem(|p| {
        let cp = Counted::new(*p);
        let mut reference = ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]);
        let mut x_ref = [0.0];
        let r = run(
            &mut reference,
            &cp,
            &mut x_ref,
            &Outer::constant(1.0),
            Budget::iterations(3000),
            1e-12,
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(r.outcome, bilevel::run::Outcome::Converged);
        let (v_ref, _) = reference_value(p, &x_ref, &[0.0; DY], &ReferenceConfig::default()).unwrap();
        // Measured: x_ref = −3.233, validation loss 0.5274; qNBO-BFGS (A: 60 Armijo steps,
        // B: 20) ends at x = −3.247 (1.4e-2 from x_ref), validation loss 4.1e-6 above it:
        // the bias of the quasi-Newton adjoint (see the test above).
        let mut s = Qnbo::<f64, DenseBfgs<f64, DY>, DY>::new(config(20), [0.0; DY]);
        let mut x = [0.0];
        run(
            &mut s,
            &cp,
            &mut x,
            &Outer::constant(1.0),
            Budget::iterations(500),
            0.0,
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
        let (v, _) = reference_value(p, &x, &[0.0; DY], &ReferenceConfig::default()).unwrap();
        assert!((x[0] - x_ref[0]).abs() < 0.03, "{x:?} {x_ref:?}");
        assert!(v >= v_ref - 1e-12 && (v - v_ref) / v_ref < 1e-5, "{v} {v_ref}");
    });
}
