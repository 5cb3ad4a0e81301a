//! Fault injection: a problem wrapper that corrupts one chosen oracle call, and the check that
//! every solver turns each corruption into the specific error while keeping its last good
//! state.

use core::cell::Cell;
use core::fmt::Debug;

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

/// Wraps a problem and corrupts call number `call` (from 0) of oracle kind `oracle`; every
/// other call passes through.
#[derive(Debug)]
pub struct Faulty<P> {
    inner: P,
    target: Option<(Oracle, u64, Fault)>,
    seen: Cell<OracleCounts>,
}

impl<P> Faulty<P> {
    /// A wrapper that corrupts nothing.
    pub fn clean(inner: P) -> Self {
        Faulty {
            inner,
            target: None,
            seen: Cell::new(OracleCounts::default()),
        }
    }

    /// A wrapper that corrupts one call.
    pub fn new(inner: P, oracle: Oracle, call: u64, fault: Fault) -> Self {
        Faulty {
            inner,
            target: Some((oracle, call, fault)),
            seen: Cell::new(OracleCounts::default()),
        }
    }

    /// Counts this call and says how to corrupt it, if it is the target.
    fn hit(&self, oracle: Oracle) -> Option<Fault> {
        let mut seen = self.seen.get();
        let slot = slot(&mut seen, oracle);
        let n = *slot;
        *slot += 1;
        self.seen.set(seen);
        match self.target {
            Some((o, call, fault)) if o == oracle && call == n => Some(fault),
            _ => None,
        }
    }
}

fn slot(c: &mut OracleCounts, oracle: Oracle) -> &mut u64 {
    match oracle {
        Oracle::LowerGrad => &mut c.lower_grad,
        Oracle::UpperGrad => &mut c.upper_grad,
        Oracle::LowerHvp => &mut c.lower_hvp,
        Oracle::LowerCross => &mut c.lower_cross,
        Oracle::LowerGradX => &mut c.lower_grad_x,
        Oracle::LowerValue => &mut c.lower_value,
        Oracle::UpperValue => &mut c.upper_value,
    }
}

/// Applies `fault` (if any) to the outputs of a call that returned `result`.
fn corrupt<T: Real>(
    oracle: Oracle,
    fault: Option<Fault>,
    result: Result<(), Error>,
    outs: &mut [&mut [T]],
) -> Result<(), Error> {
    result?;
    match fault {
        None => Ok(()),
        Some(Fault::Fail(code)) => Err(Error::OracleFailed { oracle, code }),
        Some(Fault::Value(v)) => {
            for out in outs.iter_mut() {
                out.fill(T::from_f64(v));
            }
            Ok(())
        }
    }
}

fn corrupt_value<T: Real>(oracle: Oracle, fault: Option<Fault>, value: Result<T, Error>) -> Result<T, Error> {
    let value = value?;
    match fault {
        None => Ok(value),
        Some(Fault::Fail(code)) => Err(Error::OracleFailed { oracle, code }),
        Some(Fault::Value(v)) => Ok(T::from_f64(v)),
    }
}

impl<T: Real, const DX: usize, const DY: usize, P: Problem<T, DX, DY>> Problem<T, DX, DY> for Faulty<P> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let f = self.hit(Oracle::LowerGrad);
        corrupt(Oracle::LowerGrad, f, self.inner.lower_grad(x, y, b, out), &mut [out])
    }
    fn upper_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, gx: &mut [T; DX], gy: &mut [T; DY]) -> Result<(), Error> {
        let f = self.hit(Oracle::UpperGrad);
        corrupt(
            Oracle::UpperGrad,
            f,
            self.inner.upper_grad(x, y, b, gx, gy),
            &mut [gx, gy],
        )
    }
    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let f = self.hit(Oracle::LowerHvp);
        corrupt(Oracle::LowerHvp, f, self.inner.lower_hvp(x, y, v, b, out), &mut [out])
    }
    fn lower_hvp2(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v: &[T; DY],
        w: &[T; DY],
        b: Batch,
        hv: &mut [T; DY],
        hw: &mut [T; DY],
    ) -> Result<(), Error> {
        let f = self.hit(Oracle::LowerHvp);
        corrupt(
            Oracle::LowerHvp,
            f,
            self.inner.lower_hvp2(x, y, v, w, b, hv, hw),
            &mut [hv, hw],
        )
    }
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let f = self.hit(Oracle::LowerCross);
        corrupt(
            Oracle::LowerCross,
            f,
            self.inner.lower_cross(x, y, v, b, out),
            &mut [out],
        )
    }
    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let f = self.hit(Oracle::LowerGradX);
        corrupt(Oracle::LowerGradX, f, self.inner.lower_grad_x(x, y, b, out), &mut [out])
    }
    fn lower_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        let f = self.hit(Oracle::LowerValue);
        corrupt_value(Oracle::LowerValue, f, self.inner.lower_value(x, y, b))
    }
    fn upper_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        let f = self.hit(Oracle::UpperValue);
        corrupt_value(Oracle::UpperValue, f, self.inner.upper_value(x, y, b))
    }
    fn samples(&self) -> (usize, usize) {
        self.inner.samples()
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
    let clean = Counted::new(Faulty::clean(problem.clone()));
    let (mut s, mut xc) = (solver.clone(), *x);
    step(&mut s, &clean, &mut xc, outer, t).expect("the clean step succeeds");
    let mut sites = clean.inner().seen.get();
    assert!(sites.total() > 0, "the step calls no oracle");
    let mut outcomes = Vec::new();
    for oracle in ORACLES {
        for call in 0..*slot(&mut sites, oracle) {
            for fault in BAD_VALUES.into_iter().chain([Fault::Fail(7)]) {
                let faulty = Counted::new(Faulty::new(problem.clone(), oracle, call, fault));
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
