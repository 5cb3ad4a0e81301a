//! The one driver: its scale-free adaptive step, its stopping test (relative, on the entries a
//! bound does not block, and on the lower level's residual) and its honesty about runs that
//! did not converge.

use core::ops::ControlFlow;

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::hook::{Call, Hook, Hooked};
use bilevel::problems::Quadratic;
use bilevel::reference::{ReferenceConfig, ReferenceSolver};
use bilevel::run::{Adaptive, Budget, Deepening, Diagnostics, Driver, Outcome, RunReport, Solver, Stopping};
use bilevel::{Counted, Error, Problem, Real};

const DX: usize = 2;
const DY: usize = 4;
type Q = Quadratic<f64, DX, DY>;

/// The upper level multiplied by `c`: the same problem in other units of `F`.
struct Scale(f64);

impl Hook for Scale {
    fn after<T: Real>(&self, call: Call, outputs: &mut [&mut [T]]) -> Result<(), Error> {
        if !call.is_lower() {
            let c = T::from_f64(self.0);
            outputs.iter_mut().flat_map(|o| o.iter_mut()).for_each(|v| *v *= c);
        }
        Ok(())
    }
}

fn trajectory<P: Problem<f64, DX, DY>>(p: &P, rule: Adaptive<f64>, steps: u32) -> Vec<[f64; DX]> {
    let mut driver = Driver::adaptive(rule, None, Budget::iterations(steps), Stopping::never()).unwrap();
    let mut solver = ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]);
    let mut x = [0.5, -0.5];
    let mut xs = Vec::new();
    driver
        .run(&mut solver, &Counted::new(p), &mut x, |_, x, _| {
            xs.push(*x);
            ControlFlow::Continue(())
        })
        .unwrap();
    xs
}

#[test]
fn the_adaptive_steps_do_not_depend_on_the_units_of_f() {
    let q = Q::random(5, 20.0, 0.3);
    for rule in [
        Adaptive::BarzilaiBorwein { radius: 0.7 },
        Adaptive::AdaGradNorm { radius: 0.7 },
    ] {
        let base = trajectory(&Hooked::wrap(&q, Scale(1.0)), rule, 30);
        // Powers of two scale every product exactly: the iterates must be the same bits.
        for c in [1024.0, 1.0 / 1024.0] {
            assert_eq!(
                trajectory(&Hooked::wrap(&q, Scale(c)), rule, 30),
                base,
                "{rule:?}, F × {c}"
            );
        }
        // The first move changes the largest coordinate by the radius.
        let first = (base[0][0] - 0.5).abs().max((base[0][1] + 0.5).abs());
        assert!((first - 0.7).abs() < 1e-12, "{rule:?}: first move {first}");
    }
}

fn run_to_tolerance<S: Solver<f64, DX, DY>>(
    q: &Q,
    solver: &mut S,
    bounds: Option<(f64, f64)>,
    x: &mut [f64; DX],
) -> RunReport<f64> {
    let rule = Adaptive::BarzilaiBorwein { radius: 1.0 };
    let mut driver = Driver::adaptive(rule, bounds, Budget::iterations(500), Stopping::relative(1e-10)).unwrap();
    driver
        .run(solver, &Counted::new(q), x, |_, _, _| ControlFlow::Continue(()))
        .unwrap()
}

#[test]
fn barzilai_borwein_reaches_the_closed_form_optimum_without_settings() {
    for seed in 1..=4 {
        for kappa in [2.0, 50.0] {
            let q = Q::random(seed, kappa, 0.5);
            let x_star = q.solution().unwrap();
            let mut solver = ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]);
            let mut x = [0.0; DX];
            let r = run_to_tolerance(&q, &mut solver, None, &mut x);
            assert_eq!(r.outcome, Outcome::Converged, "seed {seed}, κ {kappa}");
            let err = bilevel::linalg::dist(&x, &x_star) / bilevel::linalg::norm(&x_star).max(1.0);
            assert!(
                err < 1e-8,
                "seed {seed}, κ {kappa}: |x − x*| = {err:e} after {}",
                r.iterations
            );
        }
    }
}

#[test]
fn at_a_bound_the_blocked_entries_do_not_count_against_convergence() {
    let q = Q::random(3, 10.0, 0.5);
    let x_star = q.solution().unwrap();
    // A box that excludes the optimum in the first coordinate only.
    let (lo, hi) = if x_star[0] > 0.0 {
        (-10.0, x_star[0] - 0.5)
    } else {
        (x_star[0] + 0.5, 10.0)
    };
    let (lo, hi) = (lo.min(x_star[1] - 1.0), hi.max(x_star[1] + 1.0));
    let mut solver = ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]);
    let mut x = [0.5 * (lo + hi); DX];
    let r = run_to_tolerance(&q, &mut solver, Some((lo, hi)), &mut x);
    assert_eq!(r.outcome, Outcome::Converged);
    assert!(x[0] == lo || x[0] == hi, "x = {x:?} in [{lo}, {hi}]");
    assert!(r.hypergradient_norm < 1e-6);
}

/// The reference's estimates with a rigged inner state: a lower iterate that never moves
/// from its start (its hypergradients shrink to zero while the lower level is not solved at
/// all), or an adjoint that never moves from 0.
#[derive(Clone, Debug)]
struct Rigged {
    reference: ReferenceSolver<f64, DY>,
    frozen_lower: Option<[f64; DY]>,
    frozen_adjoint: Option<[f64; DY]>,
}

impl Rigged {
    fn lagging_lower() -> Self {
        Rigged {
            reference: ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]),
            frozen_lower: Some([0.0; DY]),
            frozen_adjoint: None,
        }
    }

    fn stuck_adjoint() -> Self {
        Rigged {
            frozen_lower: None,
            frozen_adjoint: Some([0.0; DY]),
            ..Rigged::lagging_lower()
        }
    }
}

impl Solver<f64, DX, DY> for Rigged {
    fn hypergradient<P: Problem<f64, DX, DY>>(
        &mut self,
        p: &P,
        x: &[f64; DX],
        h: &mut [f64; DX],
    ) -> Result<Diagnostics, Error> {
        self.reference.hypergradient(p, x, h)
    }
    fn lower(&self) -> &[f64; DY] {
        self.frozen_lower
            .as_ref()
            .unwrap_or_else(|| Solver::<f64, DX, DY>::lower(&self.reference))
    }
    fn adjoint(&self) -> Option<bilevel::run::Adjoint<'_, f64, DY>> {
        self.frozen_adjoint.as_ref().map(bilevel::run::Adjoint::Solution)
    }
}

#[test]
fn a_small_estimate_from_an_unsolved_lower_level_is_not_convergence() {
    let q = Q::random(2, 10.0, 0.5);
    let mut lagging = Rigged::lagging_lower();
    let mut x = [0.0; DX];
    let r = run_to_tolerance(&q, &mut lagging, None, &mut x);
    assert_eq!(r.outcome, Outcome::IterationBudget);
    assert!(
        r.hypergradient_norm < 1e-9,
        "the estimate itself did pass: {:e}",
        r.hypergradient_norm
    );
    // The same estimates with the lower level solved: converged.
    let mut solver = ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]);
    let mut x = [0.0; DX];
    assert_eq!(
        run_to_tolerance(&q, &mut solver, None, &mut x).outcome,
        Outcome::Converged
    );
}

/// Runs `solver` with Barzilai–Borwein steps and inner tracking `theta` until a relative
/// tolerance of 1e-8, checking that a held step leaves `x` where it was.
fn run_tracked<S: Solver<f64, DX, DY>>(q: &Q, solver: &mut S, theta: f64, x: &mut [f64; DX]) -> (RunReport<f64>, u32) {
    run_tracked_for(q, solver, theta, x, 100_000)
}

fn run_tracked_for<S: Solver<f64, DX, DY>>(
    q: &Q,
    solver: &mut S,
    theta: f64,
    x: &mut [f64; DX],
    budget: u32,
) -> (RunReport<f64>, u32) {
    let rule = Adaptive::BarzilaiBorwein { radius: 1.0 };
    let mut driver = Driver::adaptive(rule, None, Budget::iterations(budget), Stopping::relative(1e-8))
        .unwrap()
        .tracking(theta)
        .unwrap();
    let (mut before, mut holds) = (*x, 0);
    let r = driver
        .run(solver, &Counted::new(q), x, |r, x, _| {
            if r.held {
                assert_eq!(*x, before, "a held step moved x at iteration {}", r.iteration);
                assert_eq!(r.step_size, 0.0);
                holds += 1;
            }
            before = *x;
            ControlFlow::Continue(())
        })
        .unwrap();
    (r, holds)
}

/// Calls `check` on quadratics of seeds 1–4 and condition numbers 2 and 50, with their
/// closed-form `x*`, the step `1/L` and a label.
fn for_each_quadratic(mut check: impl FnMut(&Q, &[f64; DX], f64, &str)) {
    for seed in 1..=4 {
        for kappa in [2.0, 50.0] {
            let q = Q::random(seed, kappa, 0.5);
            let x_star = q.solution().unwrap();
            check(
                &q,
                &x_star,
                1.0 / q.lower_lipschitz(),
                &format!("seed {seed}, κ {kappa}"),
            );
        }
    }
}

#[test]
fn with_tracking_single_loop_methods_reach_the_closed_form_optimum_without_settings() {
    for_each_quadratic(|q, x_star, beta, label| {
        // One gradient step on y and on u per call (NBO-GD with T = 0 is SOBA's update), and
        // AID-CG with a single lower step: both lag far behind x without tracking.
        let mut nbo = Nbo::new(NboConfig::gradient_descent(beta, 0), [0.0; DY]);
        reaches_x_star(q, x_star, &mut nbo, &format!("nbo-gd, {label}"));
        let mut aid = Aid::new(AidConfig::conjugate_gradient(beta, 1, 1), [0.0; DY]);
        reaches_x_star(q, x_star, &mut aid, &format!("aid-cg, {label}"));
    });
}

fn reaches_x_star<S: Solver<f64, DX, DY>>(q: &Q, x_star: &[f64; DX], solver: &mut S, name: &str) {
    let mut x = [0.0; DX];
    let (r, holds) = run_tracked(q, solver, 0.1, &mut x);
    let err = bilevel::linalg::dist(&x, x_star) / bilevel::linalg::norm(x_star).max(1.0);
    assert_eq!(r.outcome, Outcome::Converged, "{name}: {r:?}");
    assert!(holds > 0, "{name}: nothing to hold for?");
    assert!(err < 1e-6, "{name}: |x − x*| = {err:e} after {} steps", r.iterations);
}

#[test]
fn tracking_holds_x_while_the_lower_iterate_or_the_adjoint_lags() {
    let q = Q::random(2, 10.0, 0.5);
    let fresh = || ReferenceSolver::new(ReferenceConfig::default(), [0.0; DY]);
    let x0 = [0.3, -0.2];
    let mut x = x0;
    let (r, holds) = run_tracked_for(&q, &mut Rigged::lagging_lower(), 0.1, &mut x, 50);
    assert_eq!(
        (r.outcome, holds, x),
        (Outcome::IterationBudget, r.iterations, x0),
        "lagging y"
    );
    let (r, holds) = run_tracked_for(&q, &mut Rigged::stuck_adjoint(), 0.1, &mut x, 50);
    assert_eq!(
        (r.outcome, holds, x),
        (Outcome::IterationBudget, r.iterations, x0),
        "lagging u"
    );
    // With both caught up the same estimates move x at once.
    let (r, holds) = run_tracked(&q, &mut fresh(), 0.1, &mut x);
    assert_eq!((r.outcome, holds), (Outcome::Converged, 0));
}

#[test]
fn a_tracking_ratio_that_is_negative_or_not_finite_is_refused() {
    for theta in [-0.1, f64::NAN, f64::INFINITY] {
        let d = Driver::<f64, DX>::adaptive(
            Adaptive::BarzilaiBorwein { radius: 1.0 },
            None,
            Budget::iterations(1),
            Stopping::never(),
        )
        .unwrap();
        assert!(d.tracking(theta).is_err(), "θ = {theta}");
    }
}

#[test]
fn a_radius_that_is_not_positive_is_refused() {
    for radius in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let r = Driver::<f64, DX>::adaptive(
            Adaptive::BarzilaiBorwein { radius },
            None,
            Budget::iterations(1),
            Stopping::never(),
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidConfig {
                    field: "outer radius",
                    ..
                })
            ),
            "{radius}"
        );
    }
}

/// Methods whose adjoint is a fixed truncation rebuilt at every call: a Neumann series of
/// two terms, two unrolled steps (with room for more), SHINE's two-pair memory. The driver
/// deepens each until its residual follows the outer progress, and all reach `x*`.
#[test]
fn with_tracking_truncated_methods_deepen_until_they_reach_the_closed_form_optimum() {
    use bilevel::algo::aid::AdjointSolver;
    use bilevel::algo::itd::{ItdConfig, ItdReverse};
    use bilevel::algo::shine::{Shine, ShineConfig};
    for_each_quadratic(|q, x_star, beta, label| {
        let mut neumann = Aid::new(AidConfig::neumann(beta, 10, beta, 2), [0.0; DY]);
        reaches_x_star(q, x_star, &mut neumann, &format!("aid-neumann, {label}"));
        let AdjointSolver::Neumann { terms, .. } = neumann.config.adjoint else {
            unreachable!()
        };
        assert!(terms > 2, "the series was not deepened");
        let config = ItdConfig {
            lower_step: beta,
            lower_steps: 2,
        };
        let mut itd = ItdReverse::<f64, DY, 4096>::new(config, [0.0; DY]);
        reaches_x_star(q, x_star, &mut itd, &format!("itd, {label}"));
        assert!(itd.config.lower_steps > 2, "the unrolled depth was not deepened");
        let mut shine = Shine::<f64, DY, 2>::new(ShineConfig::default(), [0.0; DY]);
        reaches_x_star(q, x_star, &mut shine, &format!("shine, {label}"));
    });
}

/// A truncation at the solver's capacity cannot follow the outer progress: the run stops at
/// the method's biased fixed point and says so, never "converged".
#[test]
fn a_truncation_at_its_capacity_ends_at_the_depth_limit_not_converged() {
    use bilevel::algo::itd::{ItdConfig, ItdReverse};
    let q = Q::random(3, 50.0, 0.5);
    let x_star = q.solution().unwrap();
    let config = ItdConfig {
        lower_step: 1.0 / q.lower_lipschitz(),
        lower_steps: 2,
    };
    let mut itd = ItdReverse::<f64, DY, 4>::new(config, [0.0; DY]);
    let mut x = [0.0; DX];
    let (r, _) = run_tracked(&q, &mut itd, 0.1, &mut x);
    assert_eq!(r.outcome, Outcome::DepthLimit, "{r:?}");
    // Four stored iterates reach six unrolled steps by recomputing segments.
    assert_eq!(itd.config.lower_steps, 6);
    let err = bilevel::linalg::dist(&x, &x_star) / bilevel::linalg::norm(&x_star).max(1.0);
    assert!(
        err > 1e-3,
        "six unrolled steps at κ = 50 cannot be exact: |x − x*| = {err:e}"
    );
}

/// A lower level that starts far from its solution (`y₀` a thousand units away) under
/// single-loop methods at κ = 50: held steps call [`Solver::advance`] more often while `y`
/// stays short, so it is caught up in a few measured steps, not in one per gradient step.
#[test]
fn a_lower_level_far_behind_is_caught_up_in_a_few_held_steps() {
    for_each_quadratic(|q, x_star, beta, label| {
        let far = [1e3; DY];
        let mut nbo = Nbo::new(NboConfig::gradient_descent(beta, 0), far);
        let mut aid = Aid::new(AidConfig::conjugate_gradient(beta, 1, 1), far);
        let check = |(r, _): (RunReport<f64>, u32), x: [f64; DX], name: &str| {
            let err = bilevel::linalg::dist(&x, x_star) / bilevel::linalg::norm(x_star).max(1.0);
            assert_eq!(r.outcome, Outcome::Converged, "{name}, {label}: {r:?}");
            // One measured step per gradient step would take thousands at κ = 50.
            assert!(r.iterations <= 300, "{name}, {label}: {} steps", r.iterations);
            assert!(err < 1e-6, "{name}, {label}: |x − x*| = {err:e}");
        };
        let mut x = [0.0; DX];
        let r = run_tracked(q, &mut nbo, 0.1, &mut x);
        check(r, x, "nbo-gd");
        let mut x = [0.0; DX];
        let r = run_tracked(q, &mut aid, 0.1, &mut x);
        check(r, x, "aid-cg");
    });
}

/// A solver that counts its estimates since it last deepened its adjoint.
#[derive(Clone, Debug)]
struct Watched<S> {
    inner: S,
    since_deeper: core::cell::Cell<Option<u32>>,
    deepenings: u32,
}

impl<S: Solver<f64, DX, DY>> Solver<f64, DX, DY> for Watched<S> {
    fn hypergradient<P: Problem<f64, DX, DY>>(
        &mut self,
        p: &P,
        x: &[f64; DX],
        h: &mut [f64; DX],
    ) -> Result<Diagnostics, Error> {
        self.since_deeper.set(self.since_deeper.get().map(|n| n + 1));
        self.inner.hypergradient(p, x, h)
    }
    fn lower(&self) -> &[f64; DY] {
        self.inner.lower()
    }
    fn advance<P: Problem<f64, DX, DY>>(&mut self, p: &P, x: &[f64; DX]) -> Result<Diagnostics, Error> {
        self.inner.advance(p, x)
    }
    fn adjoint(&self) -> Option<bilevel::run::Adjoint<'_, f64, DY>> {
        self.inner.adjoint()
    }
    fn deepen_adjoint(&mut self) -> Deepening {
        let d = self.inner.deepen_adjoint();
        if d == Deepening::Deeper {
            self.since_deeper.set(Some(0));
            self.deepenings += 1;
        }
        d
    }
}

/// A truncated adjoint rebuilt at every call does not improve by repetition: after it is
/// deepened, the held step makes one call at the new depth, however long the hold has lasted.
#[test]
fn after_deepening_a_truncated_adjoint_the_driver_calls_once_at_the_new_depth() {
    for_each_quadratic(|q, x_star, beta, label| {
        let mut solver = Watched {
            inner: Aid::new(AidConfig::neumann(beta, 10, beta, 2), [0.0; DY]),
            since_deeper: core::cell::Cell::new(None),
            deepenings: 0,
        };
        let rule = Adaptive::BarzilaiBorwein { radius: 1.0 };
        let mut driver = Driver::adaptive(rule, None, Budget::iterations(100_000), Stopping::relative(1e-8))
            .unwrap()
            .tracking(0.1)
            .unwrap();
        let mut x = [0.0; DX];
        let mut checked = 0;
        let r = driver
            .run(&mut solver, &Counted::new(q), &mut x, |r, _, s| {
                // The deepening of this step itself set the count to 0; one of the step before
                // left it at the calls made since.
                if let Some(n) = s.since_deeper.get() {
                    assert!(
                        n <= 1,
                        "{label}: {n} estimates at one depth after deepening (iteration {})",
                        r.iteration
                    );
                    if n == 1 {
                        checked += 1;
                        s.since_deeper.set(None);
                    }
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(r.outcome, Outcome::Converged, "{label}");
        assert!(bilevel::linalg::dist(&x, x_star) < 1e-6 * bilevel::linalg::norm(x_star).max(1.0));
        assert!(solver.deepenings > 1 && checked > 0, "{label}: nothing deepened");
    });
}

/// Without the driver's tracking a truncation stays as configured: a run whose estimate
/// vanishes at the method's biased fixed point says so (depth limit), never "converged".
#[test]
fn a_fixed_truncation_without_tracking_ends_at_the_depth_limit_not_converged() {
    let q = Q::random(3, 50.0, 0.5);
    let x_star = q.solution().unwrap();
    let beta = 1.0 / q.lower_lipschitz();
    let mut neumann = Aid::new(AidConfig::neumann(beta, 10, beta, 2), [0.0; DY]);
    let mut x = [0.0; DX];
    let (r, _) = run_tracked(&q, &mut neumann, 0.0, &mut x);
    assert_eq!(r.outcome, Outcome::DepthLimit, "{r:?}");
    let err = bilevel::linalg::dist(&x, &x_star) / bilevel::linalg::norm(&x_star).max(1.0);
    assert!(
        err > 1e-3,
        "two Neumann terms at κ = 50 cannot be exact: |x − x*| = {err:e}"
    );
    // A warm-started adjoint has no such bias: the same run with conjugate gradient converges.
    let mut cg = Aid::new(AidConfig::conjugate_gradient(beta, 10, 2), [0.0; DY]);
    let mut x = [0.0; DX];
    let (r, _) = run_tracked(&q, &mut cg, 0.0, &mut x);
    assert_eq!(r.outcome, Outcome::Converged, "{r:?}");
}

/// An oracle-call budget ends the run after the first iteration that reaches it, as
/// `OracleBudget` (never `Converged`), with the calls of that iteration the only excess:
/// the same run with an iteration budget shows how many calls each iteration made.
#[test]
fn an_oracle_call_budget_ends_the_run_after_the_iteration_that_reaches_it() {
    let q = Q::random(3, 50.0, 0.5);
    let rule = Adaptive::BarzilaiBorwein { radius: 1.0 };
    let beta = 1.0 / q.lower_lipschitz();
    let mut calls = Vec::new();
    let mut solver = Nbo::new(NboConfig::gradient_descent(beta, 1), [0.0; DY]);
    let mut driver = Driver::adaptive(rule, None, Budget::iterations(40), Stopping::relative(1e-12)).unwrap();
    let mut x = [0.0; DX];
    driver
        .run(&mut solver, &Counted::new(&q), &mut x, |step, _, _| {
            calls.push(step.oracle_calls.total());
            ControlFlow::Continue(())
        })
        .unwrap();
    for limit in [calls[3] - 1, calls[3], calls[3] + 1, calls[10]] {
        let budget = Budget {
            max_iterations: 40,
            max_oracle_calls: limit,
        };
        let mut solver = Nbo::new(NboConfig::gradient_descent(beta, 1), [0.0; DY]);
        let mut driver = Driver::adaptive(rule, None, budget, Stopping::relative(1e-12)).unwrap();
        let mut x = [0.0; DX];
        let counted = Counted::new(&q);
        let r = driver
            .run(&mut solver, &counted, &mut x, |_, _, _| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(r.outcome, Outcome::OracleBudget, "limit {limit}");
        let first_at_limit = calls.iter().position(|&c| c >= limit).unwrap();
        assert_eq!(r.iterations as usize, first_at_limit + 1, "limit {limit}");
        assert_eq!(r.oracle_calls.total(), calls[first_at_limit], "limit {limit}");
    }
}
