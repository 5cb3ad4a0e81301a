//! Logistic regression with scalar and per-feature L2: oracles against central differences,
//! minibatches as means, and the reference hypergradient against differences of F.

use bilevel::Batch;
use bilevel::problem::{Counted, Problem};
use bilevel::problems::{Logistic, Samples};
use bilevel::reference::{ReferenceConfig, ReferenceSolver, reference_hypergradient, reference_value};
use bilevel::rng::Rng128;
use bilevel::run::{Budget, Outer, run};
use bilevel_tests::{check_oracles, fd_hypergradient, rel_err};

const D: usize = 4;

/// Rows with Gaussian features and labels from a noisy linear model.
fn data(seed: u64, n: usize) -> (Vec<[f64; D]>, Vec<f64>) {
    let mut rng = Rng128::new(seed);
    let w = [1.5, -2.0, 0.5, 0.0];
    (0..n)
        .map(|_| {
            let mut a = [0.0; D];
            rng.fill_gaussian(&mut a);
            let z: f64 = a.iter().zip(&w).map(|(a, w)| a * w).sum::<f64>() + 0.3 + rng.gaussian::<f64>();
            (a, if z > 0.0 { 1.0 } else { 0.0 })
        })
        .unzip()
}

struct Data {
    train: (Vec<[f64; D]>, Vec<f64>),
    val: (Vec<[f64; D]>, Vec<f64>),
}

impl Data {
    fn new() -> Self {
        Data {
            train: data(1, 60),
            val: data(2, 40),
        }
    }
    fn problem<const DX: usize>(&self) -> Logistic<'_, f64, D, DX, 5> {
        let train = Samples::new(&self.train.0, &self.train.1).unwrap();
        let val = Samples::new(&self.val.0, &self.val.1).unwrap();
        Logistic::new(train, val).unwrap()
    }
}

fn random<const N: usize>(rng: &mut Rng128) -> [f64; N] {
    let mut v = [0.0; N];
    rng.fill_gaussian(&mut v);
    v
}

#[test]
fn oracles_match_central_differences() {
    let d = Data::new();
    let mut rng = Rng128::new(3);
    let batches = [
        Batch::Full,
        Batch::Range {
            id: 1,
            start: 10,
            len: 17,
        },
    ];
    for _ in 0..4 {
        for b in batches {
            check_oracles(
                &d.problem::<1>(),
                &random(&mut rng),
                &random(&mut rng),
                &random(&mut rng),
                b,
                1e-7,
            );
            check_oracles(
                &d.problem::<4>(),
                &random(&mut rng),
                &random(&mut rng),
                &random(&mut rng),
                b,
                1e-7,
            );
        }
    }
}

#[test]
fn minibatch_oracles_are_means_over_their_rows() {
    let d = Data::new();
    let p = d.problem::<4>();
    let mut rng = Rng128::new(4);
    let (x, y, v) = (random::<4>(&mut rng), random::<5>(&mut rng), random::<5>(&mut rng));
    let (first, rest) = (
        Batch::Range {
            id: 0,
            start: 0,
            len: 25,
        },
        Batch::Range {
            id: 1,
            start: 25,
            len: 35,
        },
    );
    let (mut a, mut b, mut full) = ([0.0; 5], [0.0; 5], [0.0; 5]);
    // The data term is a mean; the penalty is added in full to each batch.
    p.lower_hvp(&x, &y, &v, first, &mut a).unwrap();
    p.lower_hvp(&x, &y, &v, rest, &mut b).unwrap();
    p.lower_hvp(&x, &y, &v, Batch::Full, &mut full).unwrap();
    let mixed: [f64; 5] = core::array::from_fn(|i| (25.0 * a[i] + 35.0 * b[i]) / 60.0);
    assert!(rel_err(&mixed, &full) < 1e-14, "{mixed:?} vs {full:?}");
    let (va, vb) = (
        p.upper_value(&x, &y, first).unwrap(),
        p.upper_value(&x, &y, rest).unwrap(),
    );
    let vf = p.upper_value(&x, &y, Batch::Full).unwrap();
    assert!(
        ((25.0 * va + 15.0 * vb) / 40.0 - vf).abs() < 1e-14,
        "validation batches clamp to 40 rows"
    );
}

#[test]
fn reference_hypergradient_matches_differences_of_f() {
    let d = Data::new();
    let cfg = ReferenceConfig {
        lower_tol: 1e-13,
        ..ReferenceConfig::default()
    };
    for x in [[-2.0], [0.0], [1.5]] {
        let r = reference_hypergradient(&d.problem::<1>(), &x, &[0.0; 5], &cfg).unwrap();
        let fd = fd_hypergradient(&d.problem::<1>(), &x, &[0.0; 5], 1e-4);
        assert!(
            rel_err(&r.hypergradient, &fd) < 1e-6,
            "scalar at {x:?}: {:?} vs {fd:?}",
            r.hypergradient
        );
    }
    let x = [-1.0, 0.5, -3.0, 1.0];
    let r = reference_hypergradient(&d.problem::<4>(), &x, &[0.0; 5], &cfg).unwrap();
    let fd = fd_hypergradient(&d.problem::<4>(), &x, &[0.0; 5], 1e-4);
    assert!(
        rel_err(&r.hypergradient, &fd) < 1e-6,
        "per-feature: {:?} vs {fd:?}",
        r.hypergradient
    );
}

#[test]
fn tuned_strength_beats_a_fine_grid() {
    let d = Data::new();
    let p = Counted::new(d.problem::<1>());
    let mut solver = ReferenceSolver::new(ReferenceConfig::default(), [0.0; 5]);
    let mut x = [0.0];
    let outer = Outer {
        bounds: Some((-12.0, 12.0)),
        ..Outer::constant(2.0)
    };
    run(
        &mut solver,
        &p,
        &mut x,
        &outer,
        Budget::iterations(500),
        1e-9,
        |_, _| core::ops::ControlFlow::Continue(()),
    )
    .unwrap();
    let cfg = ReferenceConfig::default();
    let f = |x: f64| reference_value(p.inner(), &[x], &[0.0; 5], &cfg).unwrap().0;
    let tuned = f(x[0]);
    let best = (0..=400)
        .map(|i| f(-8.0 + 0.025 * i as f64))
        .fold(f64::INFINITY, f64::min);
    assert!(
        tuned <= best + 1e-9,
        "tuned ln λ = {} gives {tuned}, grid best {best}",
        x[0]
    );
    assert!(x[0] > -8.0 && x[0] < 2.0, "an interior optimum: ln λ = {}", x[0]);
}

#[test]
fn f32_oracles_agree_with_f64() {
    let d = Data::new();
    let conv = |v: &[[f64; D]]| v.iter().map(|r| r.map(|a| a as f32)).collect::<Vec<_>>();
    let (tr, va) = (conv(&d.train.0), conv(&d.val.0));
    let (tt, vt): (Vec<f32>, Vec<f32>) = (
        d.train.1.iter().map(|&t| t as f32).collect(),
        d.val.1.iter().map(|&t| t as f32).collect(),
    );
    let p32: Logistic<'_, f32, D, 1, 5> =
        Logistic::new(Samples::new(&tr, &tt).unwrap(), Samples::new(&va, &vt).unwrap()).unwrap();
    let p64 = d.problem::<1>();
    let y = [0.3, -0.2, 0.1, 0.5, -0.4];
    let (mut g32, mut g64) = ([0.0f32; 5], [0.0; 5]);
    p32.lower_grad(&[0.5], &y.map(|v| v as f32), Batch::Full, &mut g32)
        .unwrap();
    p64.lower_grad(&[0.5], &y, Batch::Full, &mut g64).unwrap();
    assert!(rel_err(&g32.map(f64::from), &g64) < 1e-5);
}

/// The top eigenvalue of a symmetric positive semi-definite matrix by dense power iteration
/// (independent of the library's passes over the rows).
fn top_eigenvalue<const N: usize>(h: &[[f64; N]; N]) -> f64 {
    let mut v = [1.0; N];
    let mut top = 0.0;
    for _ in 0..5000 {
        let w: [f64; N] = core::array::from_fn(|i| (0..N).map(|j| h[i][j] * v[j]).sum());
        let norm = libm::sqrt(w.iter().map(|a| a * a).sum::<f64>());
        top = (0..N).map(|i| v[i] * w[i]).sum::<f64>() / v.iter().map(|a| a * a).sum::<f64>();
        v = w.map(|a| a / norm);
    }
    top
}

/// The lower Hessian at `(x, y)`, column by column from the Hessian-vector oracle.
fn lower_hessian(p: &Logistic<'_, f64, D, 1, 5>, x: &[f64; 1], y: &[f64; 5]) -> [[f64; 5]; 5] {
    let mut h = [[0.0; 5]; 5];
    for (j, column) in h.iter_mut().enumerate() {
        let mut e = [0.0; 5];
        e[j] = 1.0;
        p.lower_hvp(x, y, &e, Batch::Full, column).unwrap();
    }
    h
}

#[test]
fn lower_smoothness_is_the_largest_curvature_of_the_lower_level() {
    let d = Data::new();
    let p = d.problem::<1>();
    let x = [-12.0];
    let s = p.lower_smoothness(&x);
    // At y = 0 every logistic curvature is ¼: the bound is attained there.
    let top = top_eigenvalue(&lower_hessian(&p, &x, &[0.0; 5]));
    assert!(
        (s.full - top).abs() <= 1e-4 * top,
        "L = {} against the Hessian's {top}",
        s.full
    );
    assert_eq!(p.lower_lipschitz(&x), s.full);
    // Elsewhere the curvature is smaller.
    let mut rng = Rng128::new(5);
    for _ in 0..5 {
        let y: [f64; 5] = random(&mut rng);
        assert!(top_eigenvalue(&lower_hessian(&p, &x, &y)) <= s.full);
    }
    // A single row's Hessian ¼ââᵀ + Λ has top eigenvalue ¼‖â‖² (+ λ at most).
    let row = d
        .train
        .0
        .iter()
        .map(|r| 1.0 + r.iter().map(|v| v * v).sum::<f64>())
        .fold(0.0, f64::max);
    assert!(
        (s.row - (0.25 * row + libm::exp(-12.0))).abs() <= 1e-12 * row,
        "{}",
        s.row
    );
    assert_eq!(s.rows, d.train.0.len());
    // Minibatches lie between: a batch of the whole set is the full constant.
    assert!(s.at_batch(8) > s.full && s.at_batch(8) < s.row);
    assert_eq!(s.at_batch(d.train.0.len()), s.full);
}
