//! The deterministic baselines on the quadratic: AID-CG, AID-Neumann, AmIGO-GD/CG and ITD
//! (reverse and forward mode). Hypergradient estimates against closed forms and central
//! differences, improving with their inner budgets; costs; failures; spec §8 outer loops.

use bilevel::algo::aid::{AdjointSolver, Aid, AidConfig};
use bilevel::algo::amigo::Amigo;
use bilevel::algo::itd::{ItdConfig, ItdForward, ItdReverse, depth_capacity};
use bilevel::curvature::{FIRST_ITERATIONS, LocalSteps};
use bilevel::linalg;
use bilevel::problem::{Batch, Counted, Problem};
use bilevel::problems::Quadratic;
use bilevel::rng::Rng128;
use bilevel::run::{Budget, Outer, Solver, run};
use bilevel::{Error, Oracle};
use bilevel_tests::faults::assert_faults_keep_state;
use bilevel_tests::{rel_err, rel_norm_err};

type Q = Quadratic<f64, 4, 6>;

fn gaussian<const N: usize>(r: &mut Rng128) -> [f64; N] {
    let mut v = [0.0; N];
    r.fill_gaussian(&mut v);
    v
}

fn estimate<S: Solver<f64, 4, 6>, P: Problem<f64, 4, 6>>(solver: &mut S, p: &P, x: &[f64; 4]) -> [f64; 4] {
    let mut h = [0.0; 4];
    solver.hypergradient(p, x, &mut h).unwrap();
    h
}

fn setup(seed: u64) -> (Q, [f64; 4], f64) {
    let q = Q::random(seed, 18.0, 0.1);
    let x = gaussian(&mut Rng128::new(100 + seed));
    let step = 1.0 / q.lower_lipschitz();
    (q, x, step)
}

/// Relative error of one estimate by `config` from lower iterate `y0` against ∇F(x).
fn aid_error(q: &Q, x: &[f64; 4], y0: [f64; 6], config: AidConfig<f64>) -> f64 {
    let h = estimate(&mut Aid::new(config, y0), q, x);
    rel_norm_err(&h, &q.hypergradient(x).unwrap())
}

fn strictly_decreasing(v: &[f64]) -> bool {
    v.windows(2).all(|w| w[1] < w[0])
}

#[test]
fn aid_cg_improves_with_cg_steps_and_lower_steps() {
    let (q, x, alpha) = setup(0);
    let y_star = q.lower_solution(&x).unwrap();
    let by_n: Vec<f64> = [1, 3, 6]
        .iter()
        .map(|&n| aid_error(&q, &x, y_star, AidConfig::conjugate_gradient(alpha, 1, n)))
        .collect();
    assert!(strictly_decreasing(&by_n) && by_n[2] < 1e-11, "{by_n:?}");
    let by_d: Vec<f64> = [10, 50, 200, 700]
        .iter()
        .map(|&d| aid_error(&q, &x, [0.0; 6], AidConfig::conjugate_gradient(alpha, d, 6)))
        .collect();
    assert!(strictly_decreasing(&by_d) && by_d[3] < 1e-11, "{by_d:?}");
}

/// `ρx + Bᵀ u_Q` with `u_Q = η Σ_{q=0}^{Q} (I − ηA)^q (y* − ŷ)`, by explicit matrix products.
fn truncated_neumann_hypergradient(q: &Q, x: &[f64; 4], eta: f64, terms: u32) -> [f64; 4] {
    let y = q.lower_solution(x).unwrap();
    let mut p = [0.0; 6];
    linalg::sub(&y, &q.target, &mut p);
    let mut sum = p;
    for _ in 0..terms {
        let mut ap = [0.0; 6];
        linalg::matvec(&q.a, &p, &mut ap);
        linalg::axpy(-eta, &ap, &mut p);
        linalg::axpy(1.0, &p, &mut sum);
    }
    linalg::scale(eta, &mut sum);
    let mut h = [0.0; 4];
    linalg::matvec_t(&q.b, &sum, &mut h);
    linalg::axpy(q.rho, x, &mut h);
    h
}

#[test]
fn aid_neumann_is_the_truncated_series_and_improves_with_terms() {
    let (q, x, alpha) = setup(1);
    let y_star = q.lower_solution(&x).unwrap();
    for terms in [0, 5, 40] {
        let h = estimate(
            &mut Aid::new(AidConfig::neumann(alpha, 1, alpha, terms), y_star),
            &q,
            &x,
        );
        let expected = truncated_neumann_hypergradient(&q, &x, alpha, terms);
        assert!(rel_err(&h, &expected) < 1e-12, "Q = {terms}");
    }
    let by_q: Vec<f64> = [10, 50, 200, 700]
        .iter()
        .map(|&t| aid_error(&q, &x, y_star, AidConfig::neumann(alpha, 1, alpha, t)))
        .collect();
    assert!(strictly_decreasing(&by_q) && by_q[3] < 1e-12, "{by_q:?}");

    // No warm start: a repeated call at the same point gives the same (biased) estimate.
    let mut aid = Aid::new(AidConfig::neumann(alpha, 1, alpha, 10), y_star);
    let h1 = estimate(&mut aid, &q, &x);
    let h2 = estimate(&mut aid, &q, &x);
    assert!(rel_err(&h1, &h2) < 1e-13);
    assert!(rel_norm_err(&h2, &q.hypergradient(&x).unwrap()) > 0.01);
}

#[test]
fn neumann_step_above_two_over_l_is_an_error_that_keeps_the_state() {
    let (q, x, alpha) = setup(2);
    let y0 = q.lower_solution(&x).unwrap();
    let mut aid = Aid::new(AidConfig::neumann(alpha, 1, 2.3 * alpha, 200), y0);
    let mut h = [0.0; 4];
    let e = aid.hypergradient(&q, &x, &mut h).unwrap_err();
    assert!(matches!(e, Error::Breakdown { .. }), "{e:?}");
    assert_eq!(*aid.lower(), y0);
}

#[test]
fn amigo_gd_improves_with_adjoint_steps_and_warm_starts_amortize() {
    let (q, x, rho) = setup(3);
    let y_star = q.lower_solution(&x).unwrap();
    let by_n: Vec<f64> = [1, 10, 100, 1000]
        .iter()
        .map(|&n| aid_error(&q, &x, y_star, AidConfig::amigo_gd(rho, 1, n)))
        .collect();
    assert!(strictly_decreasing(&by_n) && by_n[3] < 1e-12, "{by_n:?}");

    // One lower and one adjoint step per call, at a fixed x from y = 0: the warm starts of
    // y and u carry the progress, so repeated calls reach ∇F(x) ...
    let exact = q.hypergradient(&x).unwrap();
    let mut amigo: Amigo<f64, 6> = Aid::new(AidConfig::amigo_gd(rho, 1, 1), [0.0; 6]);
    let mut h = [0.0; 4];
    for _ in 0..800 {
        h = estimate(&mut amigo, &q, &x);
    }
    assert!(rel_norm_err(&h, &exact) < 1e-12, "{:e}", rel_norm_err(&h, &exact));
    // ... while a cold-started adjoint stays at the bias of its one step.
    let mut cold = Aid::new(
        AidConfig {
            adjoint: AdjointSolver::GradientDescent {
                step: rho,
                steps: 1,
                warm_start: false,
            },
            ..AidConfig::amigo_gd(rho, 1, 1)
        },
        [0.0; 6],
    );
    for _ in 0..800 {
        h = estimate(&mut cold, &q, &x);
    }
    assert!(rel_norm_err(&h, &exact) > 0.1);
}

#[test]
fn amigo_cg_is_exact_within_dy_adjoint_steps() {
    let (q, x, rho) = setup(4);
    let y_star = q.lower_solution(&x).unwrap();
    let e = aid_error(&q, &x, y_star, AidConfig::amigo_cg(rho, 1, 6));
    assert!(e < 1e-11, "{e:e}");
    let e2 = aid_error(&q, &x, y_star, AidConfig::amigo_cg(rho, 1, 2));
    assert!(e2 > 1e-6, "{e2:e}");
}

#[test]
fn aid_costs_per_iteration() {
    let (q, x, alpha) = setup(5);
    let p = Counted::new(&q);
    let mut h = [0.0; 4];
    // AID-CG, D = 5, N = 4, warm adjoint: 5 lower gradients, N + 1 products after the first
    // iteration (the first starts from u = 0 and needs no residual product).
    let mut aid = Aid::new(AidConfig::conjugate_gradient(alpha, 5, 4), [0.0; 6]);
    aid.hypergradient(&p, &x, &mut h).unwrap();
    let c = p.counts();
    assert_eq!((c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross), (5, 1, 4, 1));
    p.reset();
    aid.hypergradient(&p, &x, &mut h).unwrap();
    let c = p.counts();
    assert_eq!((c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross), (5, 1, 5, 1));
    p.reset();
    // AID-Neumann with Q = 7: 7 products.
    let mut tn = Aid::new(AidConfig::neumann(alpha, 3, alpha, 7), [0.0; 6]);
    tn.hypergradient(&p, &x, &mut h).unwrap();
    let c = p.counts();
    assert_eq!((c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross), (3, 1, 7, 1));
}

/// `f(x, y_D(x))` for `D` gradient steps from a fixed `y0`: the unrolled objective.
fn unrolled_value(q: &Q, x: &[f64; 4], y0: &[f64; 6], alpha: f64, steps: u32) -> f64 {
    let mut y = *y0;
    let mut g = [0.0; 6];
    for _ in 0..steps {
        q.lower_grad(x, &y, Batch::Full, &mut g).unwrap();
        linalg::axpy(-alpha, &g, &mut y);
    }
    q.upper_value(x, &y, Batch::Full).unwrap()
}

#[test]
fn itd_reverse_is_the_gradient_of_the_unrolled_objective() {
    let (q, x, alpha) = setup(6);
    let y0: [f64; 6] = gaussian(&mut Rng128::new(7));
    for steps in [1, 4, 12] {
        let config = ItdConfig {
            lower_step: alpha,
            lower_steps: steps,
        };
        let h = estimate(&mut ItdReverse::<f64, 6, 16>::new(config, y0), &q, &x);
        let hd = 1e-5;
        let mut fd = [0.0; 4];
        for j in 0..4 {
            let (mut xp, mut xm) = (x, x);
            xp[j] += hd;
            xm[j] -= hd;
            fd[j] =
                (unrolled_value(&q, &xp, &y0, alpha, steps) - unrolled_value(&q, &xm, &y0, alpha, steps)) / (2.0 * hd);
        }
        // Spec §8: 1.3e-9 against differences of the unrolled objective; measured 3e-11.
        assert!(rel_err(&h, &fd) < 1e-9, "D = {steps}: {h:?} vs {fd:?}");
        // Forward mode computes the same derivative.
        let hf = estimate(&mut ItdForward::new(config, y0), &q, &x);
        assert!(rel_err(&hf, &h) < 1e-12, "D = {steps}: {hf:?} vs {h:?}");
    }
}

#[test]
fn itd_from_the_lower_solution_is_neumann_with_d_minus_one_terms_and_improves_with_d() {
    let (q, x, alpha) = setup(7);
    let y_star = q.lower_solution(&x).unwrap();
    let itd = |steps: u32| {
        let config = ItdConfig {
            lower_step: alpha,
            lower_steps: steps,
        };
        estimate(&mut ItdReverse::<f64, 6, 800>::new(config, y_star), &q, &x)
    };
    for d in [1, 6, 30] {
        let expected = truncated_neumann_hypergradient(&q, &x, alpha, d - 1);
        assert!(rel_err(&itd(d), &expected) < 1e-12, "D = {d}");
    }
    let exact = q.hypergradient(&x).unwrap();
    let by_d: Vec<f64> = [5, 20, 100, 700]
        .iter()
        .map(|&d| rel_norm_err(&itd(d), &exact))
        .collect();
    assert!(strictly_decreasing(&by_d) && by_d[3] < 1e-12, "{by_d:?}");
}

/// Steps from the curvature at hand: the wrapper measures the lower Hessian's largest
/// eigenvalue (of `A`, for the quadratic) from below, gives both of AID-Neumann's steps
/// `1/λ_max`, and its call is the bare solver's with those steps plus the power iterations.
#[test]
fn local_steps_follow_the_largest_eigenvalue_of_the_lower_hessian() {
    let (q, x, _) = setup(9);
    let lambda = q.lower_lipschitz();
    let (terms, short) = (20, 0.01 / lambda);
    let y0: [f64; 6] = gaussian(&mut Rng128::new(12));
    let bare_solver = Aid::new(AidConfig::neumann(short, 3, short, terms), y0);
    let mut local = LocalSteps::new::<4>(bare_solver.clone(), 4, short);
    let p = Counted::new(&q);
    let mut last = f64::MAX;
    for call in 0..6 {
        let mut bare = local.solver().clone();
        p.reset();
        let mut h = [0.0; 4];
        local.hypergradient(&p, &x, &mut h).unwrap();
        let with_power_iterations = p.counts();
        let step = local.step();
        assert!(
            step * lambda >= 1.0 - 1e-12 && step <= last,
            "call {call}: {step} after {last}"
        );
        last = step;
        bare.config = AidConfig::neumann(step, 3, step, terms);
        p.reset();
        let hb = estimate(&mut bare, &p, &x);
        assert_eq!(h.map(f64::to_bits), hb.map(f64::to_bits), "call {call}");
        assert_eq!(local.solver(), &bare, "call {call}");
        let iterations = if call == 0 { FIRST_ITERATIONS } else { 4 };
        assert_eq!(
            with_power_iterations.lower_hvp,
            p.counts().lower_hvp + u64::from(iterations),
            "call {call}"
        );
    }
    assert!((last * lambda - 1.0).abs() < 1e-6, "{last} vs 1/{lambda}");
    // A fault anywhere in a step, the power iterations included, leaves the steps, the
    // eigenvector and the solver as they were.
    assert_faults_keep_state(&local, &q, &x, &Outer::constant(0.01), 6);

    // No iterations: the solver as configured, bit for bit, with no extra product.
    let mut off = LocalSteps::new::<4>(bare_solver.clone(), 0, 1.0);
    let mut bare = bare_solver;
    p.reset();
    let h = estimate(&mut off, &p, &x);
    let c = p.counts();
    p.reset();
    assert_eq!(h, estimate(&mut bare, &p, &x));
    assert_eq!((c, off.solver()), (p.counts(), &bare));
}

#[test]
fn itd_costs_and_capacity() {
    let (q, x, alpha) = setup(8);
    let p = Counted::new(&q);
    let config = ItdConfig {
        lower_step: alpha,
        lower_steps: 9,
    };
    let mut h = [0.0; 4];
    ItdReverse::<f64, 6, 9>::new(config, [0.0; 6])
        .hypergradient(&p, &x, &mut h)
        .unwrap();
    let c = p.counts();
    assert_eq!((c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross), (9, 1, 8, 9));
    p.reset();
    // Forward: (D − 1)·DX products (fused in pairs, counted per product), D·DY cross products.
    ItdForward::new(config, [0.0; 6]).hypergradient(&p, &x, &mut h).unwrap();
    let c = p.counts();
    assert_eq!((c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross), (9, 1, 32, 54));

    // Deeper than the 8 stored iterates: segments recomputed from checkpoints, the same bits
    // as a trajectory stored whole, `D − ⌈D/k⌉` more lower gradients (k: segment length).
    let y0: [f64; 6] = gaussian(&mut Rng128::new(11));
    assert_eq!(depth_capacity(8), 20);
    for (steps, segment) in [(8, 1), (9, 2), (14, 2), (15, 3), (20, 4)] {
        let config = ItdConfig {
            lower_step: alpha,
            lower_steps: steps,
        };
        let (mut whole, mut small) = (
            ItdReverse::<f64, 6, 32>::new(config, y0),
            ItdReverse::<f64, 6, 8>::new(config, y0),
        );
        let (mut hw, mut hs) = ([0.0; 4], [0.0; 4]);
        whole.hypergradient(&q, &x, &mut hw).unwrap();
        p.reset();
        small.hypergradient(&p, &x, &mut hs).unwrap();
        assert_eq!(hs.map(f64::to_bits), hw.map(f64::to_bits), "D = {steps}");
        assert_eq!(small.lower(), whole.lower(), "D = {steps}");
        let c = p.counts();
        let d = u64::from(steps);
        let recomputed = d - d.div_ceil(segment);
        assert_eq!(
            (c.lower_grad, c.lower_hvp, c.lower_cross),
            (d + recomputed, d - 1, d),
            "D = {steps}"
        );
    }

    // Deeper than the checkpoints reach: a capacity error, state unchanged.
    let config = ItdConfig {
        lower_step: alpha,
        lower_steps: 21,
    };
    let mut small = ItdReverse::<f64, 6, 8>::new(config, y0);
    let e = small.hypergradient(&q, &x, &mut h).unwrap_err();
    assert_eq!(
        e,
        Error::Capacity {
            what: "ITD trajectory (checkpointed)",
            capacity: 20
        }
    );
    assert_eq!(*small.lower(), y0);
}

/// A problem with an indefinite lower Hessian `diag(1, −1, 1, 1, 1, 1)`.
struct Indefinite(Q);

impl Problem<f64, 4, 6> for Indefinite {
    fn lower_grad(&self, x: &[f64; 4], y: &[f64; 6], b: Batch, out: &mut [f64; 6]) -> Result<(), Error> {
        self.0.lower_grad(x, &[0.0; 6], b, out)?;
        out[0] += y[0];
        out[1] -= y[1];
        for i in 2..6 {
            out[i] += y[i];
        }
        Ok(())
    }
    fn upper_grad(
        &self,
        x: &[f64; 4],
        y: &[f64; 6],
        b: Batch,
        gx: &mut [f64; 4],
        gy: &mut [f64; 6],
    ) -> Result<(), Error> {
        self.0.upper_grad(x, y, b, gx, gy)?;
        *gy = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        Ok(())
    }
    fn lower_hvp(&self, _: &[f64; 4], _: &[f64; 6], v: &[f64; 6], _: Batch, out: &mut [f64; 6]) -> Result<(), Error> {
        *out = *v;
        out[1] = -v[1];
        Ok(())
    }
    fn lower_cross(&self, x: &[f64; 4], y: &[f64; 6], v: &[f64; 6], b: Batch, out: &mut [f64; 4]) -> Result<(), Error> {
        self.0.lower_cross(x, y, v, b, out)
    }
}

#[test]
fn cg_breakdown_on_an_indefinite_hessian_is_an_error_that_keeps_the_state() {
    let (q, x, _) = setup(9);
    let y0 = [0.2; 6];
    // ∇_y f = e₂, along the negative curvature: pᵀHp = −1 at the first CG step.
    let mut aid = Aid::new(AidConfig::conjugate_gradient(0.1, 2, 3), y0);
    let mut h = [0.0; 4];
    let e = aid.hypergradient(&Indefinite(q), &x, &mut h).unwrap_err();
    assert!(matches!(e, Error::Breakdown { .. }), "{e:?}");
    assert_eq!((*aid.lower(), *aid.adjoint()), (y0, [0.0; 6]));
}

#[test]
fn invalid_configurations_are_rejected() {
    let (q, x, alpha) = setup(0);
    let mut h = [0.0; 4];
    for config in [
        AidConfig::conjugate_gradient(alpha, 0, 5),
        AidConfig::conjugate_gradient(alpha, 5, 0),
        AidConfig::conjugate_gradient(-1.0, 5, 5),
        AidConfig::neumann(alpha, 5, 0.0, 5),
        AidConfig::amigo_gd(f64::NAN, 5, 5),
    ] {
        let e = Aid::new(config, [0.0; 6]).hypergradient(&q, &x, &mut h).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{config:?}: {e:?}");
    }
    for config in [
        ItdConfig {
            lower_step: alpha,
            lower_steps: 0,
        },
        ItdConfig {
            lower_step: 0.0,
            lower_steps: 3,
        },
    ] {
        let e = ItdReverse::<f64, 6, 4>::new(config, [0.0; 6])
            .hypergradient(&q, &x, &mut h)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
        let e = ItdForward::new(config, [0.0; 6])
            .hypergradient(&q, &x, &mut h)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
    }
}

/// The quadratic with a NaN cross product.
struct NanCross(Q);

impl Problem<f64, 4, 6> for NanCross {
    fn lower_grad(&self, x: &[f64; 4], y: &[f64; 6], b: Batch, out: &mut [f64; 6]) -> Result<(), Error> {
        self.0.lower_grad(x, y, b, out)
    }
    fn upper_grad(
        &self,
        x: &[f64; 4],
        y: &[f64; 6],
        b: Batch,
        gx: &mut [f64; 4],
        gy: &mut [f64; 6],
    ) -> Result<(), Error> {
        self.0.upper_grad(x, y, b, gx, gy)
    }
    fn lower_hvp(&self, x: &[f64; 4], y: &[f64; 6], v: &[f64; 6], b: Batch, out: &mut [f64; 6]) -> Result<(), Error> {
        self.0.lower_hvp(x, y, v, b, out)
    }
    fn lower_cross(&self, _: &[f64; 4], _: &[f64; 6], _: &[f64; 6], _: Batch, out: &mut [f64; 4]) -> Result<(), Error> {
        out[2] = f64::NAN;
        Ok(())
    }
}

#[test]
fn a_non_finite_cross_product_keeps_every_state() {
    let (q, x, alpha) = setup(1);
    let p = NanCross(q);
    let y0 = [0.4; 6];
    let mut h = [0.0; 4];
    let expected = |stage| Error::NonFinite {
        oracle: Some(Oracle::LowerCross),
        stage,
    };
    let mut aid = Aid::new(AidConfig::amigo_gd(alpha, 3, 3), y0);
    assert_eq!(aid.hypergradient(&p, &x, &mut h).unwrap_err(), expected("AID"));
    assert_eq!((*aid.lower(), *aid.adjoint()), (y0, [0.0; 6]));
    let config = ItdConfig {
        lower_step: alpha,
        lower_steps: 3,
    };
    let mut rev = ItdReverse::<f64, 6, 3>::new(config, y0);
    assert_eq!(rev.hypergradient(&p, &x, &mut h).unwrap_err(), expected("ITD reverse"));
    assert_eq!(*rev.lower(), y0);
    let mut fwd = ItdForward::new(config, y0);
    assert_eq!(fwd.hypergradient(&p, &x, &mut h).unwrap_err(), expected("ITD forward"));
    assert_eq!(*fwd.lower(), y0);
}

/// `‖x − x*‖` after `iterations` outer steps of `c/L_Φ` from `x = 0`, or `None` if the run
/// blew up.
fn distance_after<S: Solver<f64, 4, 6>>(q: &Q, mut solver: S, c: f64, iterations: u32) -> Option<f64> {
    let alpha = c / q.hypergradient_lipschitz().unwrap();
    let mut x = [0.0; 4];
    run(
        &mut solver,
        &Counted::new(q),
        &mut x,
        &Outer::constant(alpha),
        Budget::iterations(iterations),
        0.0,
        |_, _| core::ops::ControlFlow::Continue(()),
    )
    .ok()?;
    let d = linalg::dist(&x, &q.solution().unwrap());
    d.is_finite().then_some(d)
}

// Spec §8, on Q1-like draws (κ = 18, dx = 4, dy = 6, ρ = 0.1, inner steps 1/L). Measured
// on seeds 0–9 at 1/L_Φ after 3000 iterations: AID-CG (D = N = 5) ≤ 3e-14 on all but
// seed 1 (1e-9: L_Φ/ρ = 250, slow outer conditioning); AmIGO-GD (T = N = 5) ≤ 3e-14 on
// eight seeds (seed 1: 6e-7, seed 6 diverges).

#[test]
fn aid_cg_and_amigo_gd_reach_x_star_at_one_over_l_phi() {
    for seed in [0, 2, 3, 4, 5] {
        let q = Q::random(seed, 18.0, 0.1);
        let step = 1.0 / q.lower_lipschitz();
        let d = distance_after(
            &q,
            Aid::new(AidConfig::conjugate_gradient(step, 5, 5), [0.0; 6]),
            1.0,
            3000,
        );
        assert!(d.is_some_and(|d| d < 1e-12), "AID-CG, seed {seed}: {d:?}");
        let d = distance_after(&q, Aid::new(AidConfig::amigo_gd(step, 5, 5), [0.0; 6]), 1.0, 3000);
        assert!(d.is_some_and(|d| d < 1e-12), "AmIGO-GD, seed {seed}: {d:?}");
    }
}

#[test]
fn biased_baselines_converge_to_a_bias_that_shrinks_with_their_budget() {
    // AID-Neumann and ITD have a fixed truncation: x converges to a biased point, closer to
    // x* as Q or D grows.
    let q = Q::random(2, 18.0, 0.1);
    let step = 1.0 / q.lower_lipschitz();
    let neumann: Vec<f64> = [5, 20, 80]
        .iter()
        .map(|&t| distance_after(&q, Aid::new(AidConfig::neumann(step, 5, step, t), [0.0; 6]), 0.5, 3000).unwrap())
        .collect();
    assert!(
        strictly_decreasing(&neumann) && neumann[0] > 1e-3 && neumann[2] < 1e-2,
        "{neumann:?}"
    );
    let itd: Vec<f64> = [5, 20, 80]
        .iter()
        .map(|&d| {
            let config = ItdConfig {
                lower_step: step,
                lower_steps: d,
            };
            distance_after(&q, ItdReverse::<f64, 6, 80>::new(config, [0.0; 6]), 0.5, 3000).unwrap()
        })
        .collect();
    assert!(strictly_decreasing(&itd) && itd[0] > 1e-3 && itd[2] < 1e-2, "{itd:?}");
}

/// The comparison's labels: a run whose iterates blow up is `diverged`; a biased method at its
/// floor (one Neumann term) is not.
#[test]
fn a_run_that_blows_up_is_labelled_diverged_and_a_biased_floor_is_not() {
    use bilevel_tests::runs::run_to_target;
    let (q, x, alpha) = setup(10);
    let grad = |x: &[f64; 4]| q.hypergradient(x).unwrap();
    let l_f = q.hypergradient_lipschitz().unwrap();
    let mut cg = Aid::new(AidConfig::conjugate_gradient(alpha, 10, 10), [0.0; 6]);
    let r = run_to_target(&mut cg, &q, x, 100.0 / l_f, 2000, grad, 1e-8);
    assert!(r.diverged && r.reached.is_none(), "{r:?}");
    let mut neumann = Aid::new(AidConfig::neumann(alpha, 10, alpha, 1), [0.0; 6]);
    let r = run_to_target(&mut neumann, &q, x, 0.5 / l_f, 20_000, grad, 1e-10);
    assert!(!r.diverged && r.reached.is_none() && r.best_relative < 0.5, "{r:?}");
}
