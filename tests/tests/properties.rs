//! Property tests over random problems and configurations: no solver panics, and after every
//! step either an error was returned or `x` and the lower iterate are finite.

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

/// Steps a solver up to `steps` times; on every `Ok` the iterates must be finite.
fn check<S: Solver<f64, 2, 4>, P: Problem<f64, 2, 4>>(mut solver: S, p: &P, alpha: f64, steps: u32) {
    let counted = Counted::new(p);
    let mut x = [0.3, -0.7];
    let outer = Outer {
        schedule: Schedule::Constant(alpha),
        bounds: None,
    };
    for t in 0..steps {
        match step(&mut solver, &counted, &mut x, &outer, t) {
            Ok(r) => {
                assert!(x.iter().all(|v| v.is_finite()), "x not finite after an Ok step");
                assert!(
                    solver.lower().iter().all(|v| v.is_finite()),
                    "y not finite after an Ok step"
                );
                assert!(r.hypergradient_norm.is_finite());
            }
            Err(_) => return,
        }
    }
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
        check(Nbo::new(NboConfig::gradient_descent(beta, inner), y0), &q, alpha, 6);
        check(Nbo::new(NboConfig::conjugate_gradient(inner), y0), &q, alpha, 6);
        check(Aid::new(AidConfig::conjugate_gradient(beta, inner, inner), y0), &q, alpha, 6);
        check(Aid::new(AidConfig::neumann(beta, inner, beta, inner), y0), &q, alpha, 6);
        check(ItdForward::new(ItdConfig { lower_step: beta, lower_steps: inner }, y0), &q, alpha, 6);
        let qn = QnboConfig { warmup_step: beta, qn_steps: inner, ..QnboConfig::default() };
        check(QnboBfgs::<f64, 4>::new(qn, y0), &q, alpha, 6);
        check(QnboSr1::<f64, 4, 34>::new(qn, y0), &q, alpha, 6);
        check(Shine::<f64, 4, 4>::new(ShineConfig::default(), y0), &q, alpha, 4);
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
        check(Nsbo::new(NsboConfig::constant(beta, 1), [0.0; 4], l.clone(), u.clone()), &p, alpha, 6);
        check(Soba::new(SobaConfig::soba(Schedule::Constant(beta)), [0.0; 4], l, u), &p, alpha, 6);
    }
}
