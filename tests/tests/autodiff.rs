//! The dual-number adapter against hand-written oracles (the quadratic) and against central
//! differences (a nonlinear logistic objective), and the reference hypergradient through it.

#![allow(clippy::needless_range_loop)] // matrix formulas read best with indices

use bilevel::autodiff::{AutoDiff, Lift, Objectives};
use bilevel::problems::Quadratic;
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel::rng::Rng128;
use bilevel::scalar::softplus;
use bilevel::{Batch, Error, Problem, Real};
use bilevel_tests::{check_oracles, rel_err};

/// The quadratic problem written as objectives, from its matrices.
struct QuadraticObjectives<T, const DX: usize, const DY: usize>(Quadratic<T, DX, DY>);

impl<T: Real, const DX: usize, const DY: usize> Objectives<T, DX, DY> for QuadraticObjectives<T, DX, DY> {
    fn lower<S: Lift<T>>(&self, x: &[S; DX], y: &[S; DY], _: Batch) -> Result<S, Error> {
        let q = &self.0;
        let mut g = S::ZERO;
        for i in 0..DY {
            let mut ay = S::ZERO;
            for j in 0..DY {
                ay += S::lift(q.a[i][j]) * y[j];
            }
            let mut bx = S::ZERO;
            for k in 0..DX {
                bx += S::lift(q.b[i][k]) * x[k];
            }
            g += y[i] * (S::lift(T::from_f64(0.5)) * ay - bx + S::lift(q.c[i]));
        }
        Ok(g)
    }

    fn upper<S: Lift<T>>(&self, x: &[S; DX], y: &[S; DY], _: Batch) -> Result<S, Error> {
        let q = &self.0;
        let half = S::lift(T::from_f64(0.5));
        let mut f = S::ZERO;
        for i in 0..DY {
            let d = y[i] - S::lift(q.target[i]);
            f += half * d * d;
        }
        for v in x {
            f += half * S::lift(q.rho) * *v * *v;
        }
        Ok(f)
    }
}

#[test]
fn quadratic_oracles_equal_the_hand_written_ones() {
    let q = Quadratic::<f64, 3, 5>::random(7, 50.0, 0.3);
    let ad = AutoDiff::new(QuadraticObjectives(q.clone()));
    let mut rng = Rng128::new(1);
    for _ in 0..5 {
        let (mut x, mut y, mut v) = ([0.0; 3], [0.0; 5], [0.0; 5]);
        rng.fill_gaussian(&mut x);
        rng.fill_gaussian(&mut y);
        rng.fill_gaussian(&mut v);
        let b = Batch::Full;
        let (mut a, mut h) = ([0.0; 5], [0.0; 5]);
        ad.lower_grad(&x, &y, b, &mut a).unwrap();
        q.lower_grad(&x, &y, b, &mut h).unwrap();
        assert!(rel_err(&a, &h) < 1e-13, "lower_grad");
        ad.lower_hvp(&x, &y, &v, b, &mut a).unwrap();
        q.lower_hvp(&x, &y, &v, b, &mut h).unwrap();
        assert!(rel_err(&a, &h) < 1e-13, "lower_hvp");
        let (mut ax, mut hx) = ([0.0; 3], [0.0; 3]);
        ad.lower_cross(&x, &y, &v, b, &mut ax).unwrap();
        q.lower_cross(&x, &y, &v, b, &mut hx).unwrap();
        assert!(rel_err(&ax, &hx) < 1e-13, "lower_cross");
        ad.upper_grad(&x, &y, b, &mut ax, &mut a).unwrap();
        q.upper_grad(&x, &y, b, &mut hx, &mut h).unwrap();
        assert!(rel_err(&ax, &hx) < 1e-13 && rel_err(&a, &h) < 1e-13, "upper_grad");
        let (va, vh) = (ad.lower_value(&x, &y, b).unwrap(), q.lower_value(&x, &y, b).unwrap());
        assert!((va - vh).abs() < 1e-12 * vh.abs().max(1.0), "lower_value");
    }
}

#[test]
fn reference_hypergradient_through_autodiff_matches_the_closed_form() {
    let q = Quadratic::<f64, 2, 4>::random(3, 20.0, 0.5);
    let ad = AutoDiff::new(QuadraticObjectives(q.clone()));
    let x = [0.4, -1.1];
    let r = reference_hypergradient(&ad, &x, &[0.0; 4], &ReferenceConfig::default()).unwrap();
    let exact = q.hypergradient(&x).unwrap();
    assert!(
        rel_err(&r.hypergradient, &exact) < 1e-9,
        "{:?} vs {exact:?}",
        r.hypergradient
    );
}

/// Binary logistic regression with exp-parametrized per-feature L2 (bias unpenalized):
/// features `D = 2`, weights and bias in `y`, one λ per feature in `x`.
struct Logistic {
    train: [([f64; 2], f64); 12],
    val: [([f64; 2], f64); 8],
}

impl Logistic {
    fn new(seed: u64) -> Self {
        let mut rng = Rng128::new(seed);
        let mut row = || {
            let mut a = [0.0; 2];
            rng.fill_gaussian(&mut a);
            let label = if a[0] - 0.5 * a[1] + 0.3 * rng.gaussian::<f64>() > 0.0 {
                1.0
            } else {
                -1.0
            };
            (a, label)
        };
        Self {
            train: core::array::from_fn(|_| row()),
            val: core::array::from_fn(|_| row()),
        }
    }

    fn loss<S: Lift<f64>>(rows: &[([f64; 2], f64)], y: &[S; 3]) -> S {
        let mut s = S::ZERO;
        for (a, label) in rows {
            let z = S::lift(a[0]) * y[0] + S::lift(a[1]) * y[1] + y[2];
            s += softplus(-S::lift(*label) * z);
        }
        s / S::lift(rows.len() as f64)
    }
}

impl Objectives<f64, 2, 3> for Logistic {
    fn lower<S: Lift<f64>>(&self, x: &[S; 2], y: &[S; 3], _: Batch) -> Result<S, Error> {
        let half = S::lift(0.5);
        Ok(Self::loss(&self.train, y) + half * (x[0].exp() * y[0] * y[0] + x[1].exp() * y[1] * y[1]))
    }
    fn upper<S: Lift<f64>>(&self, _: &[S; 2], y: &[S; 3], _: Batch) -> Result<S, Error> {
        Ok(Self::loss(&self.val, y))
    }
}

#[test]
fn logistic_oracles_match_central_differences() {
    let p = AutoDiff::new(Logistic::new(11));
    let mut rng = Rng128::new(2);
    for _ in 0..5 {
        let (mut x, mut y, mut v) = ([0.0; 2], [0.0; 3], [0.0; 3]);
        rng.fill_gaussian(&mut x);
        rng.fill_gaussian(&mut y);
        rng.fill_gaussian(&mut v);
        check_oracles(&p, &x, &y, &v, Batch::Full, 1e-7);
    }
}

#[test]
fn f32_objectives_differentiate_too() {
    let q = Quadratic::<f32, 2, 3>::random(5, 10.0, 0.1);
    let ad = AutoDiff::new(QuadraticObjectives(q.clone()));
    let (x, y, v) = ([0.5f32, -0.25], [1.0f32, 2.0, -1.0], [0.5f32, 0.5, 1.0]);
    let (mut a, mut h) = ([0.0f32; 3], [0.0f32; 3]);
    ad.lower_hvp(&x, &y, &v, Batch::Full, &mut a).unwrap();
    q.lower_hvp(&x, &y, &v, Batch::Full, &mut h).unwrap();
    for i in 0..3 {
        assert!((a[i] - h[i]).abs() < 1e-4 * h[i].abs().max(1.0), "{a:?} vs {h:?}");
    }
}

/// Errors of the objectives reach the caller unchanged.
struct Failing;
impl Objectives<f64, 1, 1> for Failing {
    fn lower<S: Lift<f64>>(&self, _: &[S; 1], _: &[S; 1], _: Batch) -> Result<S, Error> {
        Err(Error::OracleFailed {
            oracle: bilevel::Oracle::LowerValue,
            code: 3,
        })
    }
    fn upper<S: Lift<f64>>(&self, _: &[S; 1], y: &[S; 1], _: Batch) -> Result<S, Error> {
        Ok(y[0])
    }
}

#[test]
fn objective_errors_propagate() {
    let p = AutoDiff::new(Failing);
    let mut out = [0.0];
    let e = p.lower_hvp(&[0.0], &[0.0], &[1.0], Batch::Full, &mut out).unwrap_err();
    assert_eq!(
        e,
        Error::OracleFailed {
            oracle: bilevel::Oracle::LowerValue,
            code: 3
        }
    );
}
