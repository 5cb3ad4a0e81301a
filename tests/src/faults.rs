//! Fault injection: a hook that corrupts one chosen oracle call, and the check that
//! every solver turns each corruption into the specific error while keeping its last good
//! state.

use core::cell::Cell;
use core::fmt::Debug;

use bilevel::hook::{Call, Hook, Hooked};
use bilevel::problem::{Batch, Counted, OracleCounts, Problem};
use bilevel::run::{Outer, Solver, step};
use bilevel::{Error, Oracle, Real};

/// What the faulty call does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Writes this value (NaN, ±∞) into every output entry.
    Value(f64),
    /// Fails with [`Error::OracleFailed`] and this code.
    Fail(i32),
}

/// The values a sensor or a bad sample can produce.
pub const BAD_VALUES: [Fault; 3] = [
    Fault::Value(f64::NAN),
    Fault::Value(f64::INFINITY),
    Fault::Value(f64::NEG_INFINITY),
];

/// A hook that corrupts call number `call` (from 0) of oracle kind `oracle`, counting a
/// fused call as each of its parts; every other call passes through.
#[derive(Debug, Default)]
pub struct Injector {
    target: Option<(Oracle, u64, Fault)>,
    seen: Cell<OracleCounts>,
    /// The corruption of the call under way, for its outputs.
    pending: Cell<Option<(Oracle, f64)>>,
}

impl Injector {
    /// A hook that corrupts nothing (and counts the call sites).
    pub fn clean() -> Self {
        Injector::default()
    }

    /// A hook that corrupts one call.
    pub fn new(oracle: Oracle, call: u64, fault: Fault) -> Self {
        Injector {
            target: Some((oracle, call, fault)),
            ..Injector::default()
        }
    }
}

impl Hook for Injector {
    fn before(&self, call: Call, batch: Batch) -> Result<Batch, Error> {
        let mut seen = self.seen.get();
        let mut hit = None;
        for &oracle in call.oracles() {
            let n = seen.of_mut(oracle);
            if let Some((o, c, fault)) = self.target
                && o == oracle
                && c == *n
            {
                hit = Some((oracle, fault));
            }
            *n += 1;
        }
        self.seen.set(seen);
        match hit {
            Some((oracle, Fault::Fail(code))) => Err(Error::OracleFailed { oracle, code }),
            Some((oracle, Fault::Value(v))) => {
                self.pending.set(Some((oracle, v)));
                Ok(batch)
            }
            None => Ok(batch),
        }
    }

    fn after<T: Real>(&self, call: Call, outputs: &mut [&mut [T]]) -> Result<(), Error> {
        if let Some((oracle, v)) = self.pending.take() {
            for (out, &o) in outputs.iter_mut().zip(call.outputs()) {
                if o == oracle {
                    out.fill(T::from_f64(v));
                }
            }
        }
        Ok(())
    }
}

const ORACLES: [Oracle; 7] = [
    Oracle::LowerGrad,
    Oracle::UpperGrad,
    Oracle::LowerHvp,
    Oracle::LowerCross,
    Oracle::LowerGradX,
    Oracle::LowerValue,
    Oracle::UpperValue,
];

/// One observed fault: which call was corrupted how, and what the step returned.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultOutcome {
    /// The corrupted oracle.
    pub oracle: Oracle,
    /// Its call number within the step.
    pub call: u64,
    /// The corruption.
    pub fault: Fault,
    /// What the step returned.
    pub error: Error,
}

/// Runs one outer step of `solver` from its current state with every call site of every
/// oracle corrupted in turn by each of [`BAD_VALUES`] and by an oracle failure, and checks
/// that the step returns the error naming that oracle while the solver state and `x` stay
/// exactly as they were. Returns every outcome (for the robustness table); panics naming
/// the call site on any violation, or when the step has no call sites at all.
pub fn assert_faults_keep_state<T, P, S, const DX: usize, const DY: usize>(
    solver: &S,
    problem: &P,
    x: &[T; DX],
    outer: &Outer<T>,
    t: u32,
) -> Vec<FaultOutcome>
where
    T: Real,
    P: Problem<T, DX, DY> + Clone,
    S: Solver<T, DX, DY> + Clone + PartialEq + Debug,
{
    // Call sites of one clean step.
    let clean = Counted::new(Hooked::wrap(problem.clone(), Injector::clean()));
    let (mut s, mut xc) = (solver.clone(), *x);
    step(&mut s, &clean, &mut xc, outer, t).expect("the clean step succeeds");
    let mut sites = clean.inner().hook.seen.get();
    assert!(sites.total() > 0, "the step calls no oracle");
    let mut outcomes = Vec::new();
    for oracle in ORACLES {
        for call in 0..*sites.of_mut(oracle) {
            for fault in BAD_VALUES.into_iter().chain([Fault::Fail(7)]) {
                let faulty = Counted::new(Hooked::wrap(problem.clone(), Injector::new(oracle, call, fault)));
                let (mut s, mut xf) = (solver.clone(), *x);
                let error = match step(&mut s, &faulty, &mut xf, outer, t) {
                    Ok(_) => panic!("{} call {call} with {fault:?}: the step succeeded", oracle.name()),
                    Err(e) => e,
                };
                let expected = match (fault, &error) {
                    (Fault::Value(_), Error::NonFinite { oracle: o, .. }) => *o == Some(oracle),
                    (Fault::Fail(c), Error::OracleFailed { oracle: o, code }) => *o == oracle && *code == c,
                    _ => false,
                };
                assert!(expected, "{} call {call} with {fault:?}: got {error:?}", oracle.name());
                assert_eq!(
                    &s,
                    solver,
                    "{} call {call} with {fault:?}: solver state changed",
                    oracle.name()
                );
                assert!(
                    xf.iter()
                        .zip(x)
                        .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits()),
                    "{} call {call} with {fault:?}: x changed",
                    oracle.name()
                );
                outcomes.push(FaultOutcome {
                    oracle,
                    call,
                    fault,
                    error,
                });
            }
        }
    }
    outcomes
}
