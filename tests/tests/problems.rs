//! The built-in problems over synthetic data: oracles against central differences, minibatch
//! oracles as means over their rows, reference hypergradients against differences of F, and
//! closed forms against the reference.

use bilevel::problem::{Batch, Problem};
use bilevel::problems::{HYPER_CLEANING_DEFAULT_L2, HyperCleaning, Logistic, Ridge, Samples};
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel::rng::Rng128;
use bilevel_tests::{check_oracles, fd_hypergradient, rel_err, rel_norm_err};

const D: usize = 4;
const N_TRAIN: usize = 24;
const N_VAL: usize = 16;

/// Gaussian rows and targets from a noisy linear model: `t = 1[wᵀa + b + noise > 0]` for
/// classification, `t = wᵀa + b + noise` for regression.
fn linear_data<const N: usize>(seed: u64, classify: bool) -> ([[f64; D]; N], [f64; N]) {
    let mut r = Rng128::new(seed);
    let mut w = [0.0; D];
    r.fill_gaussian(&mut w);
    let mut rows = [[0.0; D]; N];
    let mut t = [0.0; N];
    for i in 0..N {
        r.fill_gaussian(&mut rows[i]);
        let z = bilevel::linalg::dot(&w, &rows[i]) + 0.3 + r.gaussian::<f64>();
        t[i] = if classify { f64::from(u8::from(z > 0.0)) } else { z };
    }
    (rows, t)
}

fn gaussian<const N: usize>(r: &mut Rng128) -> [f64; N] {
    let mut v = [0.0; N];
    r.fill_gaussian(&mut v);
    v
}

/// Every minibatch oracle of `p` at `(x, y)` equals the mean over the batch rows of the
/// one-row oracles.
fn check_minibatch_means<P: Problem<f64, DX, DY>, const DX: usize, const DY: usize>(
    p: &P,
    x: &[f64; DX],
    y: &[f64; DY],
    v: &[f64; DY],
    start: u32,
    len: u32,
) {
    let batch = Batch::Range { id: 3, start, len };
    let one = |i: u32| Batch::Range {
        id: 0,
        start: start + i,
        len: 1,
    };
    let n = f64::from(len);
    let mean = |f: &dyn Fn(Batch) -> Vec<f64>| {
        let mut acc = f(one(0));
        for i in 1..len {
            for (a, b) in acc.iter_mut().zip(f(one(i))) {
                *a += b;
            }
        }
        acc.iter().map(|a| a / n).collect::<Vec<_>>()
    };
    let close = |a: &[f64], b: &[f64], what: &str| {
        let e = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs() / 1f64.max(p.abs()))
            .fold(0.0, f64::max);
        assert!(e < 1e-12, "{what}: batch oracle is not the mean over its rows ({e:e})");
    };
    let grad = |b: Batch| {
        let mut o = [0.0; DY];
        p.lower_grad(x, y, b, &mut o).unwrap();
        o.to_vec()
    };
    close(&grad(batch), &mean(&grad), "lower_grad");
    let hvp = |b: Batch| {
        let mut o = [0.0; DY];
        p.lower_hvp(x, y, v, b, &mut o).unwrap();
        o.to_vec()
    };
    close(&hvp(batch), &mean(&hvp), "lower_hvp");
    let cross = |b: Batch| {
        let mut o = [0.0; DX];
        p.lower_cross(x, y, v, b, &mut o).unwrap();
        o.to_vec()
    };
    close(&cross(batch), &mean(&cross), "lower_cross");
    let gradx = |b: Batch| {
        let mut o = [0.0; DX];
        p.lower_grad_x(x, y, b, &mut o).unwrap();
        o.to_vec()
    };
    close(&gradx(batch), &mean(&gradx), "lower_grad_x");
    let upper = |b: Batch| {
        let (mut gx, mut gy) = ([0.0; DX], [0.0; DY]);
        p.upper_grad(x, y, b, &mut gx, &mut gy).unwrap();
        gx.iter().chain(gy.iter()).copied().collect::<Vec<_>>()
    };
    close(&upper(batch), &mean(&upper), "upper_grad");
    let values = |b: Batch| vec![p.lower_value(x, y, b).unwrap(), p.upper_value(x, y, b).unwrap()];
    close(&values(batch), &mean(&values), "values");
}

#[test]
fn logistic_oracles_match_central_differences() {
    let (tr, tt) = linear_data::<N_TRAIN>(1, true);
    let (va, vt) = linear_data::<N_VAL>(2, true);
    let train = Samples::new(&tr, &tt).unwrap();
    let val = Samples::new(&va, &vt).unwrap();
    let scalar = Logistic::<f64, 1, D, { D + 1 }>::new(train, val).unwrap();
    let per_feature = Logistic::<f64, D, D, { D + 1 }>::new(train, val).unwrap();
    let mut r = Rng128::new(3);
    for _ in 0..4 {
        let (y, v) = (gaussian::<{ D + 1 }>(&mut r), gaussian::<{ D + 1 }>(&mut r));
        let x1 = gaussian::<1>(&mut r);
        let xd = gaussian::<D>(&mut r);
        for batch in [
            Batch::Full,
            Batch::Range {
                id: 1,
                start: 5,
                len: 7,
            },
        ] {
            check_oracles(&scalar, &x1, &y, &v, batch, 1e-7);
            check_oracles(&per_feature, &xd, &y, &v, batch, 1e-7);
        }
        check_minibatch_means(&scalar, &x1, &y, &v, 3, 9);
        check_minibatch_means(&per_feature, &xd, &y, &v, 10, 6);
    }
    assert_eq!(scalar.samples(), (N_TRAIN, N_VAL));
}

#[test]
fn ridge_oracles_match_central_differences() {
    let (tr, tt) = linear_data::<N_TRAIN>(4, false);
    let (va, vt) = linear_data::<N_VAL>(5, false);
    let train = Samples::new(&tr, &tt).unwrap();
    let val = Samples::new(&va, &vt).unwrap();
    let scalar = Ridge::<f64, 1, D, { D + 1 }>::new(train, val).unwrap();
    let per_feature = Ridge::<f64, D, D, { D + 1 }>::new(train, val).unwrap();
    let mut r = Rng128::new(6);
    for _ in 0..4 {
        let (y, v) = (gaussian::<{ D + 1 }>(&mut r), gaussian::<{ D + 1 }>(&mut r));
        let x1 = gaussian::<1>(&mut r);
        let xd = gaussian::<D>(&mut r);
        for batch in [
            Batch::Full,
            Batch::Range {
                id: 1,
                start: 2,
                len: 11,
            },
        ] {
            check_oracles(&scalar, &x1, &y, &v, batch, 1e-7);
            check_oracles(&per_feature, &xd, &y, &v, batch, 1e-7);
        }
        check_minibatch_means(&scalar, &x1, &y, &v, 0, 5);
        check_minibatch_means(&per_feature, &xd, &y, &v, 4, 12);
    }
}

/// A batch past the end of the data is empty: the loss terms vanish and only the penalty
/// remains (no division by zero).
#[test]
fn empty_batch_leaves_only_the_penalty() {
    let (tr, tt) = linear_data::<N_TRAIN>(1, true);
    let train = Samples::new(&tr, &tt).unwrap();
    let p = Logistic::<f64, 1, D, { D + 1 }>::new(train, train).unwrap();
    let y = [1.0, -2.0, 0.5, 0.0, 3.0];
    let b = Batch::Range {
        id: 0,
        start: 100,
        len: 4,
    };
    let mut g = [0.0; D + 1];
    p.lower_grad(&[0.0], &y, b, &mut g).unwrap();
    assert_eq!(g, [1.0, -2.0, 0.5, 0.0, 0.0]);
    assert_eq!(p.upper_value(&[0.0], &y, b).unwrap(), 0.0);
}

#[test]
fn logistic_reference_hypergradient_matches_differences_of_f() {
    let (tr, tt) = linear_data::<N_TRAIN>(7, true);
    let (va, vt) = linear_data::<N_VAL>(8, true);
    let train = Samples::new(&tr, &tt).unwrap();
    let val = Samples::new(&va, &vt).unwrap();
    let scalar = Logistic::<f64, 1, D, { D + 1 }>::new(train, val).unwrap();
    let per_feature = Logistic::<f64, D, D, { D + 1 }>::new(train, val).unwrap();
    let cfg = ReferenceConfig::default();
    let y0 = [0.0; D + 1];
    for x in [[-2.0], [0.0], [1.5]] {
        let r = reference_hypergradient(&scalar, &x, &y0, &cfg).unwrap();
        let fd = fd_hypergradient(&scalar, &x, &y0, 1e-5);
        let e = rel_err(&r.hypergradient, &fd);
        assert!(e < 1e-7, "x = {x:?}: {:?} vs {fd:?} ({e:e})", r.hypergradient);
        assert!(
            r.hypergradient[0].abs() > 1e-4,
            "a vanishing hypergradient tests nothing"
        );
    }
    let mut rng = Rng128::new(9);
    for _ in 0..3 {
        let x = gaussian::<D>(&mut rng);
        let r = reference_hypergradient(&per_feature, &x, &y0, &cfg).unwrap();
        let fd = fd_hypergradient(&per_feature, &x, &y0, 1e-5);
        let e = rel_err(&r.hypergradient, &fd);
        assert!(e < 1e-7, "x = {x:?}: {:?} vs {fd:?} ({e:e})", r.hypergradient);
    }
}

#[test]
fn ridge_closed_form_matches_reference_and_differences_of_f() {
    let (tr, tt) = linear_data::<N_TRAIN>(10, false);
    let (va, vt) = linear_data::<N_VAL>(11, false);
    let train = Samples::new(&tr, &tt).unwrap();
    let val = Samples::new(&va, &vt).unwrap();
    let scalar = Ridge::<f64, 1, D, { D + 1 }>::new(train, val).unwrap();
    let per_feature = Ridge::<f64, D, D, { D + 1 }>::new(train, val).unwrap();
    let cfg = ReferenceConfig::default();
    let y0 = [0.0; D + 1];
    for x in [[-1.0], [0.5], [2.0]] {
        let exact = scalar.hypergradient(&x).unwrap();
        let r = reference_hypergradient(&scalar, &x, &y0, &cfg).unwrap();
        assert!(rel_norm_err(&r.y, &scalar.lower_solution(&x).unwrap()) < 1e-11);
        assert!(
            rel_norm_err(&r.hypergradient, &exact) < 1e-9,
            "{:?} vs {exact:?}",
            r.hypergradient
        );
        let fd = fd_hypergradient(&scalar, &x, &y0, 1e-5);
        assert!(rel_err(&fd, &exact) < 1e-7, "{fd:?} vs {exact:?}");
        assert!(exact[0].abs() > 1e-4, "a vanishing hypergradient tests nothing");
    }
    let mut rng = Rng128::new(12);
    for _ in 0..3 {
        let x = gaussian::<D>(&mut rng);
        let exact = per_feature.hypergradient(&x).unwrap();
        let r = reference_hypergradient(&per_feature, &x, &y0, &cfg).unwrap();
        assert!(
            rel_norm_err(&r.hypergradient, &exact) < 1e-9,
            "{:?} vs {exact:?}",
            r.hypergradient
        );
        let fd = fd_hypergradient(&per_feature, &x, &y0, 1e-5);
        assert!(rel_err(&fd, &exact) < 1e-7, "{fd:?} vs {exact:?}");
    }
}

const CLASSES: usize = 3;
const DY_CLEAN: usize = (D + 1) * CLASSES;

/// Rows with `C` classes from a random linear scorer plus noise; a fraction `flip` of the
/// labels replaced by a uniformly drawn class.
fn class_data<const N: usize>(seed: u64, flip: f64) -> ([[f64; D]; N], [f64; N]) {
    let mut r = Rng128::new(seed);
    let mut w = [[0.0; D]; CLASSES];
    for row in w.iter_mut() {
        r.fill_gaussian(row);
    }
    let mut rows = [[0.0; D]; N];
    let mut t = [0.0; N];
    for i in 0..N {
        r.fill_gaussian(&mut rows[i]);
        let mut best = (f64::NEG_INFINITY, 0);
        for (c, wc) in w.iter().enumerate() {
            let z = bilevel::linalg::dot(wc, &rows[i]) + 0.5 * r.gaussian::<f64>();
            if z > best.0 {
                best = (z, c);
            }
        }
        let mut k = best.1 as u32;
        if r.uniform::<f64>() < flip {
            k = r.below(CLASSES as u32);
        }
        t[i] = f64::from(k);
    }
    (rows, t)
}

#[test]
fn hyper_cleaning_oracles_match_central_differences() {
    let (tr, tt) = class_data::<N_TRAIN>(20, 0.5);
    let (va, vt) = class_data::<N_VAL>(21, 0.0);
    let train = Samples::new(&tr, &tt).unwrap();
    let val = Samples::new(&va, &vt).unwrap();
    let p = HyperCleaning::<f64, N_TRAIN, D, CLASSES, DY_CLEAN>::new(train, val, HYPER_CLEANING_DEFAULT_L2).unwrap();
    assert_eq!(p.samples(), (N_TRAIN, N_VAL));
    let mut r = Rng128::new(22);
    for _ in 0..3 {
        let x = gaussian::<N_TRAIN>(&mut r);
        let y = gaussian::<DY_CLEAN>(&mut r);
        let v = gaussian::<DY_CLEAN>(&mut r);
        for batch in [
            Batch::Full,
            Batch::Range {
                id: 2,
                start: 8,
                len: 5,
            },
        ] {
            check_oracles(&p, &x, &y, &v, batch, 1e-7);
        }
        check_minibatch_means(&p, &x, &y, &v, 4, 10);
    }
    // A minibatch touches only its own sample weights.
    let (x, y, v) = (
        gaussian::<N_TRAIN>(&mut r),
        gaussian::<DY_CLEAN>(&mut r),
        gaussian::<DY_CLEAN>(&mut r),
    );
    let mut cross = [0.0; N_TRAIN];
    p.lower_cross(
        &x,
        &y,
        &v,
        Batch::Range {
            id: 0,
            start: 6,
            len: 4,
        },
        &mut cross,
    )
    .unwrap();
    for (i, c) in cross.iter().enumerate() {
        assert_eq!(*c != 0.0, (6..10).contains(&i), "entry {i}: {c}");
    }
}

#[test]
fn hyper_cleaning_reference_hypergradient_matches_differences_of_f() {
    let (tr, tt) = class_data::<N_TRAIN>(23, 0.5);
    let (va, vt) = class_data::<N_VAL>(24, 0.0);
    let train = Samples::new(&tr, &tt).unwrap();
    let val = Samples::new(&va, &vt).unwrap();
    let p = HyperCleaning::<f64, N_TRAIN, D, CLASSES, DY_CLEAN>::new(train, val, HYPER_CLEANING_DEFAULT_L2).unwrap();
    let mut rng = Rng128::new(25);
    let y0 = [0.0; DY_CLEAN];
    for _ in 0..2 {
        let x = gaussian::<N_TRAIN>(&mut rng);
        let r = reference_hypergradient(&p, &x, &y0, &ReferenceConfig::default()).unwrap();
        let fd = fd_hypergradient(&p, &x, &y0, 1e-5);
        let e = rel_err(&r.hypergradient, &fd);
        assert!(e < 1e-7, "{:?} vs {fd:?} ({e:e})", r.hypergradient);
        assert!(
            bilevel::linalg::norm(&fd) > 1e-3,
            "a vanishing hypergradient tests nothing"
        );
    }
}
