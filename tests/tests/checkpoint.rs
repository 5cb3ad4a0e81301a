//! Checkpoint and resume: for every solver, stopping after some outer steps, serializing the
//! run into a buffer of the compile-time maximum size, and resuming from the decoded bytes
//! gives the same bits as the uninterrupted run.

use core::fmt::Debug;

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::f2sa::{F2sa, F2saConfig};
use bilevel::algo::itd::{ItdConfig, ItdForward, ItdReverse};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::algo::nsbo::{Nsbo, NsboConfig, NsboSaga};
use bilevel::algo::pzobo::{Pzobo, PzoboConfig};
use bilevel::algo::qnbo::{QnboBfgs, QnboConfig, QnboLbfgs, QnboSr1};
use bilevel::algo::shine::{Shine, ShineConfig};
use bilevel::algo::soba::{Saba, Soba, SobaConfig};
use bilevel::algo::stocbio::{StocBio, StocBioConfig};
use bilevel::checkpoint::{Checkpoint, MaxSize, decode, encode};
use bilevel::problem::{Counted, Problem};
use bilevel::problems::FiniteSum;
use bilevel::problems::Quadratic;
use bilevel::reference::{ReferenceConfig, ReferenceSolver};
use bilevel::run::{Outer, Solver, step};
use bilevel::sample::{FullBatch, Minibatches, Order};
use bilevel::schedule::Schedule;
use serde::Serialize;
use serde::de::DeserializeOwned;

const STEPS: u32 = 12;

fn run_steps<S: Solver<f32, 2, 6>, P: Problem<f32, 2, 6>>(
    problem: &P,
    solver: &mut S,
    x: &mut [f32; 2],
    from: u32,
    to: u32,
) {
    let q = Counted::new(problem);
    // A decaying schedule, so the resumed run must also restore the iteration counter.
    let outer = Outer {
        schedule: Schedule::Decay { c: 0.05, exponent: 0.5 },
        bounds: None,
    };
    for t in from..to {
        step(solver, &q, x, &outer, t).unwrap();
    }
}

fn resume_equals_uninterrupted<S>(fresh: S) -> usize
where
    S: Solver<f32, 2, 6> + Clone + Debug + PartialEq + Serialize + DeserializeOwned + MaxSize,
{
    resume_on(&Quadratic::<f32, 2, 6>::random(9, 30.0, 0.1), fresh)
}

/// Stops after 1, 5 and 11 of 12 steps on `problem`, saves, restores and finishes; the
/// result must equal the uninterrupted run bit for bit. Returns the checkpoint size bound.
fn resume_on<S, P>(problem: &P, fresh: S) -> usize
where
    P: Problem<f32, 2, 6>,
    S: Solver<f32, 2, 6> + Clone + Debug + PartialEq + Serialize + DeserializeOwned + MaxSize,
{
    let x0 = [0.4f32, -0.3];
    let (mut whole, mut xw) = (fresh.clone(), x0);
    run_steps(problem, &mut whole, &mut xw, 0, STEPS);

    for stop in [1, 5, STEPS - 1] {
        let (mut part, mut xp) = (fresh.clone(), x0);
        run_steps(problem, &mut part, &mut xp, 0, stop);
        let saved = Checkpoint {
            iteration: stop,
            x: xp,
            solver: part,
        };
        let mut buf = vec![0u8; <Checkpoint<S, f32, 2> as MaxSize>::POSTCARD_MAX_SIZE];
        let bytes = encode(&saved, &mut buf).unwrap().to_vec();
        let mut back: Checkpoint<S, f32, 2> = decode(&bytes).unwrap();
        assert_eq!(back, saved, "decode(encode(c)) = c");
        run_steps(problem, &mut back.solver, &mut back.x, back.iteration, STEPS);
        assert_eq!(
            back.x.map(f32::to_bits),
            xw.map(f32::to_bits),
            "x after resuming at {stop}"
        );
        assert_eq!(back.solver, whole, "solver state after resuming at {stop}");
        assert_eq!(back.solver.lower().map(f32::to_bits), whole.lower().map(f32::to_bits));
    }
    <Checkpoint<S, f32, 2> as MaxSize>::POSTCARD_MAX_SIZE
}

/// Eight sample quadratics; minibatches of 3 (a short last batch) in shuffled epochs.
fn finite_sum() -> FiniteSum<f32, 2, 6, 8> {
    FiniteSum::random(4, 20.0, 0.1, 0.3).unwrap()
}

fn batches(seed: u64) -> [Minibatches; 2] {
    Minibatches::for_levels((8, 8), 3, Order::Shuffled, seed).unwrap()
}

#[test]
fn stochastic_solvers_resume_with_their_samplers_tables_and_averages() {
    let p = finite_sum();
    let [l, u] = batches(1);
    resume_on(&p, Soba::new(SobaConfig::saba(0.02), [0.0; 6], l.clone(), u.clone()));
    resume_on(
        &p,
        Soba::new(SobaConfig::ma_soba(0.02, 0.5), [0.0; 6], l.clone(), u.clone()),
    );
    let saba = Saba::<f32, 2, 6, 3, 3>::new(SobaConfig::saba(0.02), [0.0; 6], l.clone(), u.clone()).unwrap();
    let size = resume_on(&p, saba);
    assert!(
        size > 3 * 3 * 6 * 4,
        "the SAGA tables are in the checkpoint ({size} bytes)"
    );
    resume_on(
        &p,
        Nsbo::new(NsboConfig::constant(0.02, 1), [0.0; 6], l.clone(), u.clone()),
    );
    let saga = NsboSaga::<f32, 2, 6, 3, 3>::new(NsboConfig::constant(0.02, 1), [0.0; 6], l.clone(), u.clone()).unwrap();
    resume_on(&p, saga);
    resume_on(
        &p,
        StocBio::new(StocBioConfig::default(), [0.0; 6], l.clone(), u.clone()),
    );
    let f2sa = F2saConfig {
        lower_step: Schedule::Constant(0.02),
        lower_smoothness: 25.0,
        ..F2saConfig::default()
    };
    resume_on(&p, F2sa::new(f2sa, [0.0; 6], l.clone(), u.clone()));
    resume_on(&p, Pzobo::new(PzoboConfig::default(), [0.0; 6], 7, l, u));
    resume_on(
        &p,
        Pzobo::new(PzoboConfig::default(), [0.0; 6], 7, FullBatch, FullBatch),
    );
}

#[test]
fn nbo_resumes_bit_for_bit() {
    resume_equals_uninterrupted(Nbo::new(NboConfig::gradient_descent(0.02, 1), [0.0; 6]));
    resume_equals_uninterrupted(Nbo::new(NboConfig::conjugate_gradient(2), [0.0; 6]));
}

#[test]
fn aid_and_amigo_resume_bit_for_bit() {
    resume_equals_uninterrupted(Aid::new(AidConfig::conjugate_gradient(0.02, 3, 3), [0.0; 6]));
    resume_equals_uninterrupted(Aid::new(AidConfig::neumann(0.02, 3, 0.02, 4), [0.0; 6]));
    resume_equals_uninterrupted(Aid::new(AidConfig::amigo_gd(0.02, 3, 2), [0.0; 6]));
}

#[test]
fn itd_and_reference_resume_bit_for_bit() {
    let cfg = ItdConfig {
        lower_step: 0.02,
        lower_steps: 4,
    };
    resume_equals_uninterrupted(ItdReverse::<f32, 6, 8>::new(cfg, [0.0; 6]));
    resume_equals_uninterrupted(ItdForward::new(cfg, [0.0; 6]));
    resume_equals_uninterrupted(ReferenceSolver::new(ReferenceConfig::default(), [0.0; 6]));
}

#[test]
fn quasi_newton_solvers_resume_bit_for_bit() {
    let cfg = QnboConfig {
        warmup_step: 0.02,
        ..QnboConfig::default()
    };
    resume_equals_uninterrupted(QnboBfgs::<f32, 6>::new(cfg, [0.0; 6]));
    resume_equals_uninterrupted(QnboSr1::<f32, 6, 34>::new(cfg, [0.0; 6]));
    resume_equals_uninterrupted(QnboLbfgs::<f32, 6, 4>::new(cfg, [0.0; 6]));
    resume_equals_uninterrupted(Shine::<f32, 6, 4>::new(ShineConfig::default(), [0.0; 6]));
}

#[test]
fn checkpoint_sizes_are_exact_for_fixed_size_state() {
    // iteration (varint ≤ 5) + x (2 × 4) + config + y and u (2 × 6 × 4).
    let max = <Checkpoint<Nbo<f32, 6>, f32, 2> as MaxSize>::POSTCARD_MAX_SIZE;
    let saved = Checkpoint {
        iteration: u32::MAX,
        x: [1.0f32; 2],
        solver: Nbo::<f32, 6>::new(NboConfig::default(), [1.0; 6]),
    };
    let mut buf = vec![0u8; max];
    let n = encode(&saved, &mut buf).unwrap().len();
    assert!(n <= max && max - n <= 8, "max {max}, actual {n}");
    // The scratch trajectory of reverse ITD is not stored.
    let itd = <ItdReverse<f32, 6, 64> as MaxSize>::POSTCARD_MAX_SIZE;
    assert!(itd < 64, "{itd}");
}
