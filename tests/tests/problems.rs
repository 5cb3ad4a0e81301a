//! Ridge regression, multiclass hyper-cleaning and biased-regularization meta-learning:
//! oracles against central differences, minibatch oracles as means over their rows, and
//! hypergradients (closed form where there is one, the reference otherwise) against central
//! differences of F.

use bilevel::Batch;
use bilevel::problem::Problem;
use bilevel::problems::{HyperCleaning, MetaLearning, Ridge, Samples, Task};
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel::rng::Rng128;
use bilevel_tests::{check_oracles, fd_hypergradient, rel_err, rel_norm_err};

fn random<const N: usize>(rng: &mut Rng128) -> [f64; N] {
    let mut v = [0.0; N];
    rng.fill_gaussian(&mut v);
    v
}

/// A tight reference: the lower level to 1e-13, the adjoint to the default eps^0.75.
fn tight() -> ReferenceConfig<f64> {
    ReferenceConfig {
        lower_tol: 1e-13,
        ..ReferenceConfig::default()
    }
}

/// `start .. start + len` as batch `id`.
fn range(id: u32, start: u32, len: u32) -> Batch {
    Batch::Range { id, start, len }
}

/// Checks that the oracles of `first`, `second` (splitting `full`'s rows into `n1` and `n2`)
/// average to the full-batch oracles, weighted by their row counts.
fn check_minibatch_means<P: Problem<f64, DX, DY>, const DX: usize, const DY: usize>(
    p: &P,
    x: &[f64; DX],
    y: &[f64; DY],
    v: &[f64; DY],
    (first, n1): (Batch, f64),
    (second, n2): (Batch, f64),
    upper: bool,
) {
    let mean_y =
        |a: &[f64; DY], b: &[f64; DY]| -> [f64; DY] { core::array::from_fn(|i| (n1 * a[i] + n2 * b[i]) / (n1 + n2)) };
    let mean_x =
        |a: &[f64; DX], b: &[f64; DX]| -> [f64; DX] { core::array::from_fn(|i| (n1 * a[i] + n2 * b[i]) / (n1 + n2)) };
    let mean = |a: f64, b: f64| (n1 * a + n2 * b) / (n1 + n2);
    let (mut a, mut b, mut full) = ([0.0; DY], [0.0; DY], [0.0; DY]);
    let (mut ax, mut bx, mut fullx) = ([0.0; DX], [0.0; DX], [0.0; DX]);
    if upper {
        p.upper_grad(x, y, first, &mut ax, &mut a).unwrap();
        p.upper_grad(x, y, second, &mut bx, &mut b).unwrap();
        p.upper_grad(x, y, Batch::Full, &mut fullx, &mut full).unwrap();
        assert!(rel_err(&mean_y(&a, &b), &full) < 1e-13, "upper_grad y");
        assert!(rel_err(&mean_x(&ax, &bx), &fullx) < 1e-13, "upper_grad x");
        let (va, vb, vf) = (
            p.upper_value(x, y, first).unwrap(),
            p.upper_value(x, y, second).unwrap(),
            p.upper_value(x, y, Batch::Full).unwrap(),
        );
        assert!((mean(va, vb) - vf).abs() < 1e-13 * (1.0 + vf.abs()), "upper_value");
        return;
    }
    p.lower_grad(x, y, first, &mut a).unwrap();
    p.lower_grad(x, y, second, &mut b).unwrap();
    p.lower_grad(x, y, Batch::Full, &mut full).unwrap();
    assert!(rel_err(&mean_y(&a, &b), &full) < 1e-13, "lower_grad");
    p.lower_hvp(x, y, v, first, &mut a).unwrap();
    p.lower_hvp(x, y, v, second, &mut b).unwrap();
    p.lower_hvp(x, y, v, Batch::Full, &mut full).unwrap();
    assert!(rel_err(&mean_y(&a, &b), &full) < 1e-13, "lower_hvp");
    p.lower_cross(x, y, v, first, &mut ax).unwrap();
    p.lower_cross(x, y, v, second, &mut bx).unwrap();
    p.lower_cross(x, y, v, Batch::Full, &mut fullx).unwrap();
    assert!(rel_err(&mean_x(&ax, &bx), &fullx) < 1e-13, "lower_cross");
    p.lower_grad_x(x, y, first, &mut ax).unwrap();
    p.lower_grad_x(x, y, second, &mut bx).unwrap();
    p.lower_grad_x(x, y, Batch::Full, &mut fullx).unwrap();
    assert!(rel_err(&mean_x(&ax, &bx), &fullx) < 1e-13, "lower_grad_x");
    let (va, vb, vf) = (
        p.lower_value(x, y, first).unwrap(),
        p.lower_value(x, y, second).unwrap(),
        p.lower_value(x, y, Batch::Full).unwrap(),
    );
    assert!((mean(va, vb) - vf).abs() < 1e-13 * (1.0 + vf.abs()), "lower_value");
}

mod ridge {
    use super::*;

    const D: usize = 4;

    /// Gaussian features (one column scaled up, for an uneven spectrum) and targets from a
    /// noisy linear model with bias.
    fn data(seed: u64, n: usize) -> (Vec<[f64; D]>, Vec<f64>) {
        let mut rng = Rng128::new(seed);
        let w = [1.5, -2.0, 0.5, 0.0];
        (0..n)
            .map(|_| {
                let mut a: [f64; D] = random(&mut rng);
                a[1] *= 3.0;
                let t = a.iter().zip(&w).map(|(a, w)| a * w).sum::<f64>() + 0.7 + 2.0 * rng.gaussian::<f64>();
                (a, t)
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
                train: data(11, 30),
                val: data(12, 20),
            }
        }
        fn problem<const DX: usize>(&self) -> Ridge<'_, f64, D, DX, 5> {
            let train = Samples::new(&self.train.0, &self.train.1).unwrap();
            let val = Samples::new(&self.val.0, &self.val.1).unwrap();
            Ridge::new(train, val).unwrap()
        }
    }

    #[test]
    fn oracles_match_central_differences() {
        let d = Data::new();
        let mut rng = Rng128::new(13);
        for _ in 0..4 {
            for b in [Batch::Full, range(1, 7, 11)] {
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
        let mut rng = Rng128::new(14);
        let (x, y, v) = (random::<4>(&mut rng), random::<5>(&mut rng), random::<5>(&mut rng));
        // The data terms are means; the penalty enters every batch in full, so it
        // survives the weighted mean unchanged.
        check_minibatch_means(&p, &x, &y, &v, (range(0, 0, 12), 12.0), (range(1, 12, 50), 18.0), false);
        // Validation has 20 rows: the second range is clamped to 8.
        check_minibatch_means(&p, &x, &y, &v, (range(0, 0, 12), 12.0), (range(1, 12, 50), 8.0), true);
        let mut g = [0.0; 5];
        assert!(p.lower_grad(&x, &y, range(2, 30, 4), &mut g).is_err(), "empty batch");
    }

    #[test]
    fn closed_form_hypergradient_matches_the_reference_and_differences_of_f() {
        let d = Data::new();
        for x in [[-3.0], [0.0], [2.0]] {
            let p = d.problem::<1>();
            let exact = p.hypergradient(&x).unwrap();
            let r = reference_hypergradient(&p, &x, &[0.0; 5], &tight()).unwrap();
            let ys = p.lower_solution(&x).unwrap();
            assert!(rel_norm_err(&r.y, &ys) < 1e-12, "y* at {x:?}");
            assert!(rel_norm_err(&r.u, &p.adjoint(&x).unwrap()) < 1e-10, "u* at {x:?}");
            assert!(
                rel_err(&r.hypergradient, &exact) < 1e-10,
                "reference at {x:?}: {:?} vs {exact:?}",
                r.hypergradient
            );
            let fd = fd_hypergradient(&p, &x, &[0.0; 5], 1e-4);
            assert!(rel_err(&fd, &exact) < 1e-7, "differences at {x:?}: {fd:?} vs {exact:?}");
            // Differences of the closed-form value too (no iterative solve involved).
            let h = 1e-5;
            let fd_closed = (p.value(&[x[0] + h]).unwrap() - p.value(&[x[0] - h]).unwrap()) / (2.0 * h);
            assert!((fd_closed - exact[0]).abs() < 1e-8 * (1.0 + exact[0].abs()));
        }
        let p = d.problem::<4>();
        let x = [-1.0, 0.5, -3.0, 1.0];
        let exact = p.hypergradient(&x).unwrap();
        let r = reference_hypergradient(&p, &x, &[0.0; 5], &tight()).unwrap();
        assert!(rel_err(&r.hypergradient, &exact) < 1e-10, "per-feature reference");
        let fd = fd_hypergradient(&p, &x, &[0.0; 5], 1e-4);
        assert!(rel_err(&fd, &exact) < 1e-7, "per-feature: {fd:?} vs {exact:?}");
        // The hypergradient is not trivially small: the test can fail.
        assert!(bilevel::linalg::norm(&exact) > 1e-3, "{exact:?}");
    }

    #[test]
    fn scalar_penalty_is_the_per_feature_penalty_with_equal_strengths() {
        let d = Data::new();
        let (p1, p4) = (d.problem::<1>(), d.problem::<4>());
        let g1 = p1.hypergradient(&[0.4]).unwrap();
        let g4 = p4.hypergradient(&[0.4; 4]).unwrap();
        let sum: f64 = g4.iter().sum();
        assert!((g1[0] - sum).abs() < 1e-12 * (1.0 + sum.abs()), "{g1:?} vs Σ {g4:?}");
    }

    #[test]
    fn f32_closed_form_agrees_with_f64() {
        let d = Data::new();
        let conv = |v: &[[f64; D]]| v.iter().map(|r| r.map(|a| a as f32)).collect::<Vec<_>>();
        let (tr, va) = (conv(&d.train.0), conv(&d.val.0));
        let (tt, vt): (Vec<f32>, Vec<f32>) = (
            d.train.1.iter().map(|&t| t as f32).collect(),
            d.val.1.iter().map(|&t| t as f32).collect(),
        );
        let p32: Ridge<'_, f32, D, 1, 5> =
            Ridge::new(Samples::new(&tr, &tt).unwrap(), Samples::new(&va, &vt).unwrap()).unwrap();
        let g32 = p32.hypergradient(&[0.5]).unwrap();
        let g64 = d.problem::<1>().hypergradient(&[0.5]).unwrap();
        assert!(rel_err(&g32.map(f64::from), &g64) < 1e-4, "{g32:?} vs {g64:?}");
    }
}

mod hyper_cleaning {
    use super::*;

    const D: usize = 3;
    const C: usize = 3;
    const N: usize = 24;
    const DY: usize = (D + 1) * C;
    type P<'a> = HyperCleaning<'a, f64, D, C, N, DY>;

    /// `n` rows around one centre per class, with the labels of every third row (when
    /// `corrupt`) moved to another class; returns the rows, labels and which were moved.
    fn data(seed: u64, n: usize, corrupt: bool) -> (Vec<[f64; D]>, Vec<f64>, Vec<bool>) {
        let centres = [[2.0, 0.0, 0.5], [-1.0, 1.7, 0.0], [-1.0, -1.7, -0.5]];
        let mut rng = Rng128::new(seed);
        let (mut rows, mut labels, mut moved) = (vec![], vec![], vec![]);
        for i in 0..n {
            let c = i % C;
            let noise: [f64; D] = random(&mut rng);
            rows.push(core::array::from_fn(|j| centres[c][j] + 0.8 * noise[j]));
            let flip = corrupt && i % 3 == 1;
            let label = if flip { (c + 1 + rng.below(2) as usize) % C } else { c };
            labels.push(label as f64);
            moved.push(flip);
        }
        (rows, labels, moved)
    }

    struct Data {
        train: (Vec<[f64; D]>, Vec<f64>, Vec<bool>),
        val: (Vec<[f64; D]>, Vec<f64>, Vec<bool>),
    }

    impl Data {
        fn new() -> Self {
            Data {
                train: data(21, N, true),
                val: data(22, 18, false),
            }
        }
        fn problem(&self) -> P<'_> {
            let train = Samples::new(&self.train.0, &self.train.1).unwrap();
            let val = Samples::new(&self.val.0, &self.val.1).unwrap();
            P::new(train, val).unwrap()
        }
    }

    #[test]
    fn oracles_match_central_differences() {
        let d = Data::new();
        let p = d.problem();
        let mut rng = Rng128::new(23);
        for _ in 0..4 {
            for b in [Batch::Full, range(1, 5, 9)] {
                check_oracles(&p, &random(&mut rng), &random(&mut rng), &random(&mut rng), b, 1e-7);
            }
        }
    }

    #[test]
    fn minibatch_oracles_are_means_over_their_rows() {
        let d = Data::new();
        let p = d.problem();
        let mut rng = Rng128::new(24);
        let (x, y, v) = (random::<N>(&mut rng), random::<DY>(&mut rng), random::<DY>(&mut rng));
        // The ∇_x oracles of a batch are zero outside it, so their weighted mean is the full
        // oracle entry by entry.
        check_minibatch_means(&p, &x, &y, &v, (range(0, 0, 10), 10.0), (range(1, 10, 14), 14.0), false);
        check_minibatch_means(&p, &x, &y, &v, (range(0, 0, 10), 10.0), (range(1, 10, 20), 8.0), true);
        // Single rows too: the full oracle is the mean of the N one-row oracles.
        let (mut one, mut sum) = ([0.0; DY], [0.0; DY]);
        for i in 0..N as u32 {
            p.lower_grad(&x, &y, range(i, i, 1), &mut one).unwrap();
            bilevel::linalg::axpy(1.0 / N as f64, &one, &mut sum);
        }
        let mut full = [0.0; DY];
        p.lower_grad(&x, &y, Batch::Full, &mut full).unwrap();
        assert!(rel_err(&sum, &full) < 1e-13);
    }

    #[test]
    fn reference_hypergradient_matches_differences_of_f() {
        let d = Data::new();
        let p = d.problem();
        let mut rng = Rng128::new(25);
        for x in [[0.0; N], random::<N>(&mut rng)] {
            let r = reference_hypergradient(&p, &x, &[0.0; DY], &tight()).unwrap();
            let fd = fd_hypergradient(&p, &x, &[0.0; DY], 1e-4);
            let e = rel_norm_err(&fd, &r.hypergradient);
            assert!(e < 1e-6, "relative error {e:e}: {:?} vs {fd:?}", r.hypergradient);
            assert!(bilevel::linalg::norm(&r.hypergradient) > 1e-4);
        }
    }

    #[test]
    fn f32_oracles_agree_with_f64() {
        let d = Data::new();
        let rows: Vec<[f32; D]> = d.train.0.iter().map(|r| r.map(|a| a as f32)).collect();
        let vrows: Vec<[f32; D]> = d.val.0.iter().map(|r| r.map(|a| a as f32)).collect();
        let labels: Vec<f32> = d.train.1.iter().map(|&t| t as f32).collect();
        let vlabels: Vec<f32> = d.val.1.iter().map(|&t| t as f32).collect();
        let p32: HyperCleaning<'_, f32, D, C, N, DY> = HyperCleaning::new(
            Samples::new(&rows, &labels).unwrap(),
            Samples::new(&vrows, &vlabels).unwrap(),
        )
        .unwrap();
        let p64 = d.problem();
        let mut rng = Rng128::new(26);
        let (x, y, v) = (random::<N>(&mut rng), random::<DY>(&mut rng), random::<DY>(&mut rng));
        let (x32, y32, v32) = (x.map(|a| a as f32), y.map(|a| a as f32), v.map(|a| a as f32));
        let (mut a32, mut a64) = ([0.0f32; DY], [0.0; DY]);
        p32.lower_hvp(&x32, &y32, &v32, Batch::Full, &mut a32).unwrap();
        p64.lower_hvp(&x, &y, &v, Batch::Full, &mut a64).unwrap();
        assert!(rel_err(&a32.map(f64::from), &a64) < 1e-5);
        let (mut c32, mut c64) = ([0.0f32; N], [0.0; N]);
        p32.lower_cross(&x32, &y32, &v32, Batch::Full, &mut c32).unwrap();
        p64.lower_cross(&x, &y, &v, Batch::Full, &mut c64).unwrap();
        assert!(rel_err(&c32.map(f64::from), &c64) < 1e-5);
    }

    #[test]
    fn the_hypergradient_pushes_corrupted_samples_down() {
        let d = Data::new();
        let p = d.problem();
        let r = reference_hypergradient(&p, &[0.0; N], &[0.0; DY], &tight()).unwrap();
        let moved = &d.train.2;
        let mean = |flag: bool| {
            let v: Vec<f64> = (0..N)
                .filter(|&i| moved[i] == flag)
                .map(|i| r.hypergradient[i])
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (bad, good) = (mean(true), mean(false));
        // Raising a mislabelled sample's weight raises the validation loss (gradient > 0),
        // raising a clean one's lowers it.
        assert!(bad > 0.0 && good < 0.0, "corrupted {bad:e}, clean {good:e}");
        // Most corrupted samples have the larger components: the 8 largest hold at least 6
        // of the 8 corrupted ones.
        let mut order: Vec<usize> = (0..N).collect();
        order.sort_by(|&a, &b| r.hypergradient[b].total_cmp(&r.hypergradient[a]));
        let caught = order[..8].iter().filter(|&&i| moved[i]).count();
        assert_eq!(moved.iter().filter(|&&m| m).count(), 8);
        assert!(
            caught >= 6,
            "{caught} of 8 corrupted samples among the 8 largest: {:?}",
            r.hypergradient
        );
        // Trained on the clean half only (weights e^{−20} ≈ 0 on corrupted samples), the
        // classifier is more accurate on the validation set.
        let cleaned: [f64; N] = core::array::from_fn(|i| if moved[i] { -20.0 } else { 0.0 });
        let r2 = reference_hypergradient(&p, &cleaned, &[0.0; DY], &tight()).unwrap();
        let val = Samples::new(&d.val.0, &d.val.1).unwrap();
        let (before, after) = (P::loss(&val, &r.y).unwrap(), P::loss(&val, &r2.y).unwrap());
        assert!(after < before, "validation loss {before} → {after}");
    }
}

mod meta_learning {
    use super::*;

    const D: usize = 3;
    const TASKS: usize = 5;
    const DX: usize = D + 1;
    const DY: usize = TASKS * DX;
    type P<'a> = MetaLearning<'a, f64, D, TASKS, DX, DY>;

    /// The shared model every task perturbs.
    const CENTRE: [f64; DX] = [1.0, -2.0, 0.5, 1.5];

    type Rows = (Vec<[f64; D]>, Vec<f64>);

    /// Per task: a model near [`CENTRE`], 4 noisy support rows and 10 query rows from it.
    fn tasks(seed: u64) -> Vec<(Rows, Rows)> {
        let mut rng = Rng128::new(seed);
        (0..TASKS)
            .map(|_| {
                let shift: [f64; DX] = random(&mut rng);
                let model: [f64; DX] = core::array::from_fn(|j| CENTRE[j] + 0.3 * shift[j]);
                let mut rows = |n: usize| -> Rows {
                    (0..n)
                        .map(|_| {
                            let a: [f64; D] = random(&mut rng);
                            let t =
                                (0..D).map(|j| a[j] * model[j]).sum::<f64>() + model[D] + 0.2 * rng.gaussian::<f64>();
                            (a, t)
                        })
                        .unzip()
                };
                (rows(4), rows(10))
            })
            .collect()
    }

    fn problem(data: &[(Rows, Rows)], lambda: f64) -> P<'_> {
        let tasks: [Task<'_, f64, D>; TASKS] = core::array::from_fn(|i| {
            let ((sa, st), (qa, qt)) = &data[i];
            Task {
                support: Samples::new(sa, st).unwrap(),
                query: Samples::new(qa, qt).unwrap(),
            }
        });
        P::new(tasks, lambda).unwrap()
    }

    #[test]
    fn oracles_match_central_differences() {
        let data = tasks(31);
        let p = problem(&data, 2.0);
        let mut rng = Rng128::new(32);
        for _ in 0..4 {
            for b in [Batch::Full, range(1, 1, 3)] {
                check_oracles(&p, &random(&mut rng), &random(&mut rng), &random(&mut rng), b, 1e-7);
            }
        }
    }

    #[test]
    fn meta_batch_oracles_are_means_over_their_tasks() {
        let data = tasks(33);
        let p = problem(&data, 2.0);
        let mut rng = Rng128::new(34);
        let (x, y, v) = (random::<DX>(&mut rng), random::<DY>(&mut rng), random::<DY>(&mut rng));
        for upper in [false, true] {
            check_minibatch_means(&p, &x, &y, &v, (range(0, 0, 2), 2.0), (range(1, 2, 9), 3.0), upper);
        }
    }

    #[test]
    fn hypergradients_match_the_closed_form_and_differences_of_f() {
        let data = tasks(35);
        let mut rng = Rng128::new(36);
        for lambda in [0.3, 2.0, 20.0] {
            let p = problem(&data, lambda);
            let x: [f64; DX] = random(&mut rng);
            let exact = p.hypergradient(&x).unwrap();
            let r = reference_hypergradient(&p, &x, &[0.0; DY], &tight()).unwrap();
            assert!(rel_norm_err(&r.y, &p.lower_solution(&x).unwrap()) < 1e-12);
            let e = rel_err(&r.hypergradient, &exact);
            assert!(e < 1e-10, "λ = {lambda}: reference {:?} vs {exact:?}", r.hypergradient);
            let fd = fd_hypergradient(&p, &x, &[0.0; DY], 1e-4);
            let e = rel_err(&fd, &r.hypergradient);
            assert!(e < 1e-7, "λ = {lambda}: differences {fd:?} vs {:?}", r.hypergradient);
            assert!(bilevel::linalg::norm(&exact) > 1e-3);
        }
    }

    #[test]
    fn the_learned_prior_beats_no_prior_on_new_tasks() {
        let data = tasks(37);
        let p = problem(&data, 2.0);
        // F is a convex quadratic in x: plain gradient descent on the closed form.
        let mut x = [0.0; DX];
        for _ in 0..2000 {
            let g = p.hypergradient(&x).unwrap();
            bilevel::linalg::axpy(-2.0, &g, &mut x);
        }
        let g = p.hypergradient(&x).unwrap();
        assert!(
            bilevel::linalg::norm(&g) < 1e-10,
            "‖∇F‖ = {:e}",
            bilevel::linalg::norm(&g)
        );
        let (f0, f1) = (p.value(&[0.0; DX]).unwrap(), p.value(&x).unwrap());
        assert!(f1 < 0.5 * f0, "F: {f0} → {f1}");
        // New tasks from the same family: adapting from the learned prior predicts their
        // query sets better than adapting from zero.
        let fresh = tasks(38);
        let q = problem(&fresh, 2.0);
        let (from_zero, from_prior) = (q.value(&[0.0; DX]).unwrap(), q.value(&x).unwrap());
        assert!(from_prior < 0.5 * from_zero, "new tasks: {from_zero} → {from_prior}");
        assert!(
            bilevel::linalg::dist(&x, &CENTRE) < 0.5 * bilevel::linalg::norm(&CENTRE),
            "{x:?}"
        );
    }
}
