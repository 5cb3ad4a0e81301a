//! Each method's hypergradient estimate on per-feature L2 logistic regression (f64) against
//! the reference hypergradient, from the exact lower solution: the error shrinks as the inner
//! budget grows, and the exact-solve methods reach roundoff.

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::itd::{ItdConfig, ItdReverse};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::problems::{Logistic, Samples};
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel::rng::Rng128;
use bilevel::run::Solver;
use bilevel_tests::rel_norm_err;

const D: usize = 4;
const DY: usize = D + 1;

fn rows(seed: u64, n: usize) -> (Vec<[f64; D]>, Vec<f64>) {
    let mut rng = Rng128::new(seed);
    (0..n)
        .map(|_| {
            let mut a = [0.0; D];
            rng.fill_gaussian(&mut a);
            let z = 1.5 * a[0] - 2.0 * a[1] + 0.5 * a[2] + 0.3 + rng.gaussian::<f64>();
            (a, if z > 0.0 { 1.0 } else { 0.0 })
        })
        .unzip()
}

/// Errors of one estimate per budget, for a solver built from the budget.
fn errors<S: Solver<f64, D, DY>>(budgets: &[u32], make: impl Fn(u32, [f64; DY]) -> S) -> Vec<f64> {
    let (tx, tt) = rows(1, 80);
    let (vx, vt) = rows(2, 60);
    let p: Logistic<'_, f64, D, D, DY> =
        Logistic::new(Samples::new(&tx, &tt).unwrap(), Samples::new(&vx, &vt).unwrap()).unwrap();
    let x = [-1.0, 0.5, -2.0, 0.0];
    let cfg = ReferenceConfig {
        lower_tol: 1e-13,
        ..ReferenceConfig::default()
    };
    let r = reference_hypergradient(&p, &x, &[0.0; DY], &cfg).unwrap();
    budgets
        .iter()
        .map(|&b| {
            let mut solver = make(b, r.y);
            let mut h = [0.0; D];
            solver.hypergradient(&p, &x, &mut h).unwrap();
            rel_norm_err(&h, &r.hypergradient)
        })
        .collect()
}

fn decreasing(e: &[f64]) -> bool {
    e.windows(2).all(|w| w[1] < w[0])
}

/// An inner step in the stable range of this data set (the errors below would grow otherwise).
const BETA: f64 = 0.5;

#[test]
fn nbo_estimates_improve_with_inner_steps() {
    let gd = errors(&[0, 3, 15, 60], |t, y| {
        Nbo::new(NboConfig::gradient_descent(BETA, t), y)
    });
    assert!(decreasing(&gd) && gd[3] < 1e-3, "NBO-GD {gd:?}");
    let cg = errors(&[1, 2, 3, 5], |t, y| Nbo::new(NboConfig::conjugate_gradient(t), y));
    assert!(decreasing(&cg[..3]) && cg[3] < 1e-8, "NBO-CG {cg:?}");
}

#[test]
fn aid_and_amigo_estimates_improve_with_adjoint_steps() {
    let cg = errors(&[1, 2, 3, 5], |n, y| {
        Aid::new(AidConfig::conjugate_gradient(BETA, 1, n), y)
    });
    assert!(decreasing(&cg[..3]) && cg[3] < 1e-8, "AID-CG {cg:?}");
    let neumann = errors(&[3, 15, 60, 240], |q, y| {
        Aid::new(AidConfig::neumann(BETA, 1, BETA, q), y)
    });
    assert!(decreasing(&neumann) && neumann[3] < 1e-6, "AID-Neumann {neumann:?}");
    let amigo = errors(&[1, 5, 25, 100], |q, y| Aid::new(AidConfig::amigo_gd(BETA, 1, q), y));
    assert!(decreasing(&amigo) && amigo[3] < 1e-6, "AmIGO-GD {amigo:?}");
}

#[test]
fn itd_estimates_improve_with_unrolled_steps() {
    let itd = errors(&[3, 12, 48, 192], |d, y| {
        ItdReverse::<f64, DY, 200>::new(
            ItdConfig {
                lower_step: BETA,
                lower_steps: d,
            },
            y,
        )
    });
    assert!(decreasing(&itd) && itd[3] < 1e-5, "ITD {itd:?}");
}
