//! Property tests over random problems and configurations: no solver panics, after every
//! step either an error was returned (leaving `x` and the solver as they were) or `x` and the
//! lower iterate are finite, and with sound steps the first step succeeds.

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::itd::{ItdConfig, ItdForward};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::algo::nsbo::{Nsbo, NsboConfig};
use bilevel::algo::qnbo::{QnboBfgs, QnboConfig, QnboSr1};
use bilevel::algo::shine::{Shine, ShineConfig};
use bilevel::algo::soba::{Soba, SobaConfig};
use bilevel::problem::{Counted, Problem};
use bilevel::problems::{FiniteSum, Quadratic};
use bilevel::run::{Outer, Solver, step};
use bilevel::sample::{Minibatches, Order};
use bilevel::schedule::Schedule;
use proptest::prelude::*;

/// Steps a solver up to `steps` times: after every `Ok` the iterates are finite, and an
/// `Err` (which ends the run) leaves `x` and the solver's state as they were. Returns the
/// number of `Ok` steps.
fn check<S, P>(mut solver: S, p: &P, alpha: f64, steps: u32) -> u32
where
    S: Solver<f64, 2, 4> + Clone + std::fmt::Debug,
    P: Problem<f64, 2, 4>,
{
    let counted = Counted::new(p);
    let mut x = [0.3, -0.7];
    let outer = Outer {
        schedule: Schedule::Constant(alpha),
        bounds: None,
    };
    for t in 0..steps {
        let (x_before, before) = (x, solver.clone());
        match step(&mut solver, &counted, &mut x, &outer, t) {
            Ok(r) => {
                assert!(x.iter().all(|v| v.is_finite()), "x not finite after an Ok step");
                assert!(
                    solver.lower().iter().all(|v| v.is_finite()),
                    "y not finite after an Ok step"
                );
                assert!(r.hypergradient_norm.is_finite());
            }
            Err(e) => {
                assert_eq!(x, x_before, "x moved by a failing step ({e:?})");
                // A solver's own error leaves its state as it was (Debug text: configurations
                // may hold NaN steps, which `==` never matches). The driver's rejection of an
                // estimate the solver returned (its norm overflows) comes after the call.
                let rejected_by_driver = matches!(
                    e,
                    bilevel::Error::NonFinite {
                        oracle: None,
                        stage: "hypergradient estimate"
                    }
                );
                if !rejected_by_driver {
                    let (after, before) = (format!("{solver:?}"), format!("{before:?}"));
                    assert_eq!(after, before, "state changed by a failing step ({e:?})");
                }
                return t;
            }
        }
    }
    steps
}

/// Whether a step can be taken: finite and positive.
fn valid(step: f64) -> bool {
    step.is_finite() && step > 0.0
}

/// A step size anywhere from tiny to absurd, sometimes invalid.
fn any_step() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-8.0f64..3.0).prop_map(|e| libm::pow(10.0, e)),
        1 => Just(0.0),
        1 => Just(-1.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn deterministic_solvers_never_panic(
        seed in 0u64..1000,
        kappa in 1.0f64..1e4,
        rho in 0.0f64..2.0,
        beta in any_step(),
        alpha in any_step(),
        inner in 0u32..8,
    ) {
        let q = Quadratic::<f64, 2, 4>::random(seed, kappa, rho);
        let y0 = [0.0; 4];
        // With a lower step within 1/L, a positive outer step and inner steps to take, the
        // first step has nothing to fail on: a solver that always fails does not pass.
        let sound = valid(beta) && beta <= 1.0 / q.lower_lipschitz() && valid(alpha) && inner >= 1;
        let first = if sound { 1 } else { 0 };
        prop_assert!(check(Nbo::new(NboConfig::gradient_descent(beta, inner), y0), &q, alpha, 6) >= first);
        prop_assert!(check(Nbo::new(NboConfig::conjugate_gradient(inner), y0), &q, alpha, 6) >= first);
        prop_assert!(check(Aid::new(AidConfig::conjugate_gradient(beta, inner, inner), y0), &q, alpha, 6) >= first);
        prop_assert!(check(Aid::new(AidConfig::neumann(beta, inner, beta, inner), y0), &q, alpha, 6) >= first);
        let itd = ItdConfig { lower_step: beta, lower_steps: inner };
        prop_assert!(check(ItdForward::new(itd, y0), &q, alpha, 6) >= first);
        let qn = QnboConfig { warmup_step: beta, qn_steps: inner, ..QnboConfig::default() };
        prop_assert!(check(QnboBfgs::<f64, 4>::new(qn, y0), &q, alpha, 6) >= first);
        prop_assert!(check(QnboSr1::<f64, 4, 34>::new(qn, y0), &q, alpha, 6) >= first);
        let shine_first = if valid(alpha) { 1 } else { 0 };
        prop_assert!(check(Shine::<f64, 4, 4>::new(ShineConfig::default(), y0), &q, alpha, 4) >= shine_first);
    }

    #[test]
    fn stochastic_solvers_never_panic(
        seed in 0u64..1000,
        kappa in 1.0f64..1e3,
        noise in 0.0f64..2.0,
        beta in any_step(),
        alpha in any_step(),
        batch in 1usize..12,
    ) {
        // Too much noise makes a sample Hessian indefinite: a clear error, not a test case.
        let p = FiniteSum::<f64, 2, 4, 8>::random(seed, kappa, 0.1, noise);
        prop_assume!(p.is_ok());
        let p = p.unwrap();
        let [l, u] = Minibatches::for_levels((8, 8), batch, Order::Shuffled, seed).unwrap();
        let first = if valid(beta) && valid(alpha) { 1 } else { 0 };
        let nsbo = Nsbo::new(NsboConfig::constant(beta, 1), [0.0; 4], l.clone(), u.clone());
        prop_assert!(check(nsbo, &p, alpha, 6) >= first);
        let soba = Soba::new(SobaConfig::soba(Schedule::Constant(beta)), [0.0; 4], l, u);
        prop_assert!(check(soba, &p, alpha, 6) >= first);
    }
}
