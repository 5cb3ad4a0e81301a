//! The quadratic problem: oracles against differences, closed forms against the reference
//! hypergradient and against differences of F, and x* as a stationary point.

use bilevel::problem::{Batch, FiniteDiff, Problem};
use bilevel::problems::{FiniteSum, Quadratic};
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel::rng::Rng128;
use bilevel_tests::{check_oracles, fd_hypergradient, rel_err, rel_norm_err};

type Q = Quadratic<f64, 4, 6>;

fn point(seed: u64) -> ([f64; 4], [f64; 6], [f64; 6]) {
    let mut r = Rng128::new(seed);
    let (mut x, mut y, mut v) = ([0.0; 4], [0.0; 6], [0.0; 6]);
    r.fill_gaussian(&mut x);
    r.fill_gaussian(&mut y);
    r.fill_gaussian(&mut v);
    (x, y, v)
}

#[test]
fn oracles_match_central_differences() {
    for seed in 0..5 {
        let q = Q::random(seed, 18.0, 0.1);
        let (x, y, v) = point(100 + seed);
        check_oracles(&q, &x, &y, &v, Batch::Full, 1e-7);
    }
}

/// The stochastic methods' finite sum of quadratics, on the whole sum and on a range of its
/// samples.
#[test]
fn finite_sum_oracles_match_central_differences() {
    let p = FiniteSum::<f64, 4, 6, 10>::random(3, 18.0, 0.1, 0.2).unwrap();
    for seed in 0..3 {
        let (x, y, v) = point(200 + seed);
        for batch in [
            Batch::Full,
            Batch::Range {
                id: 1,
                start: 3,
                len: 4,
            },
        ] {
            check_oracles(&p, &x, &y, &v, batch, 1e-7);
        }
    }
}

#[test]
fn closed_form_hypergradient_matches_reference_and_differences() {
    for seed in 0..5 {
        let q = Q::random(seed, 18.0, 0.1);
        let (x, _, _) = point(200 + seed);
        let exact = q.hypergradient(&x).unwrap();
        let r = reference_hypergradient(&q, &x, &[0.0; 6], &ReferenceConfig::default()).unwrap();
        assert!(rel_norm_err(&r.hypergradient, &exact) < 1e-10);
        assert!(rel_norm_err(&r.u, &q.adjoint(&x).unwrap()) < 1e-10);
        let fd = fd_hypergradient(&q, &x, &[0.0; 6], 1e-5);
        assert!(rel_err(&fd, &exact) < 1e-7, "{fd:?} vs {exact:?}");
    }
}

#[test]
fn solution_is_stationary() {
    let q = Q::random(0, 18.0, 0.1);
    let xs = q.solution().unwrap();
    let g = q.hypergradient(&xs).unwrap();
    assert!(bilevel::linalg::norm(&g) < 1e-11, "{g:?}");
}

#[test]
fn condition_number_is_as_requested() {
    let q = Quadratic::<f64, 2, 8>::random(4, 1000.0, 0.1);
    let l = q.lower_lipschitz();
    assert!((l - 1000.0).abs() < 1e-6, "{l}");
}

#[test]
fn finite_difference_adapter_matches_exact_products() {
    let q = Q::random(1, 18.0, 0.1);
    let fd = FiniteDiff(q.clone());
    let (x, y, v) = point(7);
    let (mut a, mut b) = ([0.0; 6], [0.0; 6]);
    q.lower_hvp(&x, &y, &v, Batch::Full, &mut a).unwrap();
    fd.lower_hvp(&x, &y, &v, Batch::Full, &mut b).unwrap();
    assert!(rel_err(&a, &b) < 1e-8);
    let (mut c, mut d) = ([0.0; 4], [0.0; 4]);
    q.lower_cross(&x, &y, &v, Batch::Full, &mut c).unwrap();
    fd.lower_cross(&x, &y, &v, Batch::Full, &mut d).unwrap();
    assert!(rel_err(&c, &d) < 1e-8);
}

#[test]
fn finite_difference_cross_without_grad_x_uses_lower_grad() {
    /// Hides `lower_grad_x`, so the adapter must difference `lower_grad` in x.
    struct NoGradX(Q);
    impl Problem<f64, 4, 6> for NoGradX {
        fn lower_grad(&self, x: &[f64; 4], y: &[f64; 6], b: Batch, o: &mut [f64; 6]) -> Result<(), bilevel::Error> {
            self.0.lower_grad(x, y, b, o)
        }
        fn upper_grad(
            &self,
            x: &[f64; 4],
            y: &[f64; 6],
            b: Batch,
            gx: &mut [f64; 4],
            gy: &mut [f64; 6],
        ) -> Result<(), bilevel::Error> {
            self.0.upper_grad(x, y, b, gx, gy)
        }
    }
    let q = Q::random(2, 18.0, 0.1);
    let (x, y, v) = point(8);
    let (mut c, mut d) = ([0.0; 4], [0.0; 4]);
    q.lower_cross(&x, &y, &v, Batch::Full, &mut c).unwrap();
    FiniteDiff(NoGradX(q))
        .lower_cross(&x, &y, &v, Batch::Full, &mut d)
        .unwrap();
    assert!(rel_err(&c, &d) < 1e-7, "{c:?} {d:?}");
}
