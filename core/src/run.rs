//! The outer loop: the [`Solver`] trait every algorithm implements, the shared outer update
//! ([`Outer`]: a step-size schedule and an optional box), and the driver ([`run`], or
//! [`step`] for one outer iteration at a time, e.g. one per firmware time slice).

use core::ops::ControlFlow;

use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Counted, OracleCounts, Problem};
use crate::scalar::Real;
use crate::schedule::Schedule;

/// What a solver did inside one outer iteration, beyond the hypergradient estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Diagnostics {
    /// Lower-level steps taken.
    pub inner_steps: u32,
    /// Linear-system (or quasi-Newton subroutine) steps taken.
    pub linear_steps: u32,
    /// Secant pairs accepted into a quasi-Newton memory.
    pub pairs_accepted: u32,
    /// Secant pairs skipped by a safeguard.
    pub pairs_skipped: u32,
    /// Secant pairs accepted after Powell damping.
    pub pairs_damped: u32,
    /// Quasi-Newton directions replaced because they were not descent directions.
    pub resets: u32,
    /// Linear solves that stopped on their budget instead of their tolerance.
    pub solves_unconverged: u32,
}

/// A bilevel algorithm: one outer iteration at a time.
///
/// A solver owns its inner state (the lower iterate `y`, an adjoint `u`, memories, random
/// state). [`Solver::hypergradient`] advances that state at `x` and writes the estimate of
/// `∇F(x)` it used; the outer update of `x` itself is shared ([`Outer`]). On error the
/// solver's state is as it was before the call.
pub trait Solver<T: Real, const DX: usize, const DY: usize> {
    /// Advances the inner state at `x` and writes the hypergradient estimate into `h`.
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error>;

    /// The current lower-level iterate `y`.
    fn lower(&self) -> &[T; DY];
}

/// The shared outer update `x ← Π_box(x − α_t h)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Outer<T> {
    /// Step size `α_t`.
    pub schedule: Schedule<T>,
    /// Optional box `[lo, hi]` applied to every coordinate of `x` (e.g. `[−12, 12]` on
    /// log-regularization, as HOAG does).
    pub bounds: Option<(T, T)>,
}

impl<T: Real> Outer<T> {
    /// Constant step `alpha`, no box.
    pub fn constant(alpha: T) -> Self {
        Outer {
            schedule: Schedule::Constant(alpha),
            bounds: None,
        }
    }

    /// Checks the step sizes and the box.
    pub fn validate(&self) -> Result<(), Error> {
        self.schedule.validate("outer step")?;
        if let Some((lo, hi)) = self.bounds {
            ensure(
                lo.is_finite() && hi.is_finite() && lo <= hi,
                "outer bounds",
                "finite with lo ≤ hi",
            )?;
        }
        Ok(())
    }

    /// `x ← Π(x − α_t h)`; returns `α_t`. `x` is unchanged on error.
    pub fn apply<const DX: usize>(&self, t: u32, x: &mut [T; DX], h: &[T; DX]) -> Result<T, Error> {
        self.validate()?;
        let alpha = self.schedule.at(t);
        let mut next = *x;
        linalg::axpy(-alpha, h, &mut next);
        if let Some((lo, hi)) = self.bounds {
            for v in next.iter_mut() {
                *v = v.max(lo).min(hi);
            }
        }
        if !linalg::all_finite(&next) {
            return Err(Error::NonFinite {
                oracle: None,
                stage: "outer update",
            });
        }
        *x = next;
        Ok(alpha)
    }
}

/// Limits of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Budget {
    /// Outer iterations at most.
    pub max_iterations: u32,
    /// Oracle calls (all kinds) at most; checked after each outer iteration.
    pub max_oracle_calls: u64,
}

impl Budget {
    /// `n` outer iterations, no oracle-call limit.
    pub fn iterations(n: u32) -> Self {
        Budget {
            max_iterations: n,
            max_oracle_calls: u64::MAX,
        }
    }
}

/// One outer iteration, as the observer sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StepReport<T> {
    /// Iteration counter (0 for the first step).
    pub iteration: u32,
    /// `‖h‖` of the hypergradient estimate used.
    pub hypergradient_norm: T,
    /// Outer step size used.
    pub step_size: T,
    /// Cumulative oracle calls after this iteration.
    pub oracle_calls: OracleCounts,
    /// What the solver did.
    pub diagnostics: Diagnostics,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// The hypergradient-norm test held.
    Converged,
    /// The iteration budget ran out.
    IterationBudget,
    /// The oracle-call budget ran out.
    OracleBudget,
    /// The observer asked to stop.
    Stopped,
}

/// Summary of a finished run.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunReport<T> {
    /// Why it ended.
    pub outcome: Outcome,
    /// Outer iterations taken.
    pub iterations: u32,
    /// `‖h‖` of the last hypergradient estimate.
    pub hypergradient_norm: T,
    /// Oracle calls in total.
    pub oracle_calls: OracleCounts,
}

/// One outer iteration `t`: the solver's hypergradient estimate at `x`, then the shared
/// outer update. On error, `x` is unchanged.
pub fn step<T, P, S, const DX: usize, const DY: usize>(
    solver: &mut S,
    problem: &Counted<P>,
    x: &mut [T; DX],
    outer: &Outer<T>,
    t: u32,
) -> Result<StepReport<T>, Error>
where
    T: Real,
    P: Problem<T, DX, DY>,
    S: Solver<T, DX, DY>,
{
    outer.validate()?;
    let mut h = [T::ZERO; DX];
    let diagnostics = solver.hypergradient(problem, x, &mut h)?;
    // A finite estimate whose norm overflows (entries beyond ~√MAX) is no usable step either.
    let hypergradient_norm = linalg::norm(&h);
    if !linalg::all_finite(&h) || !hypergradient_norm.is_finite() {
        return Err(Error::NonFinite {
            oracle: None,
            stage: "hypergradient estimate",
        });
    }
    let step_size = outer.apply(t, x, &h)?;
    Ok(StepReport {
        iteration: t,
        hypergradient_norm,
        step_size,
        oracle_calls: problem.counts(),
        diagnostics,
    })
}

/// When a run has converged: `‖h_t‖ ≤ absolute` or `‖h_t‖ ≤ relative·‖h_first‖`, with
/// `h_first` the first non-zero estimate of the run. A zero tolerance disables its test; an
/// estimate that is exactly zero at the first step never counts (single-loop methods start
/// from a zero adjoint, so their first estimate can be zero without `x` being stationary).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stopping<T> {
    /// Tolerance relative to the first non-zero hypergradient norm (scale-free).
    pub relative: T,
    /// Absolute tolerance on the hypergradient norm.
    pub absolute: T,
}

impl<T: Real> Stopping<T> {
    /// Relative tolerance only.
    pub fn relative(relative: T) -> Self {
        Stopping {
            relative,
            absolute: T::ZERO,
        }
    }

    /// Absolute tolerance only.
    pub fn absolute(absolute: T) -> Self {
        Stopping {
            relative: T::ZERO,
            absolute,
        }
    }

    /// No test: the run ends on its budget (or its observer).
    pub fn never() -> Self {
        Stopping::absolute(T::ZERO)
    }

    /// Checks that both tolerances are finite and `≥ 0`.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = |v: T| v.is_finite() && v >= T::ZERO;
        ensure(ok(self.relative), "relative tolerance", "finite and ≥ 0")?;
        ensure(ok(self.absolute), "tolerance", "finite and ≥ 0")
    }
}

/// The one outer loop: every front end (the `run` function, the command line, the C
/// library, the firmware) steps a solver through a driver. It owns the outer update, the
/// budget, the stopping test and the iteration counter, all checked once at construction,
/// so a caller can run one step per time slice ([`Driver::step`]) or to the end
/// ([`Driver::run`]) and get the same bits.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Driver<T> {
    outer: Outer<T>,
    budget: Budget,
    stopping: Stopping<T>,
    iteration: u32,
    first_norm: T,
    last_norm: T,
}

impl<T: Real> Driver<T> {
    /// A driver at iteration 0; errors name an invalid step, box or tolerance.
    pub fn new(outer: Outer<T>, budget: Budget, stopping: Stopping<T>) -> Result<Self, Error> {
        outer.validate()?;
        stopping.validate()?;
        Ok(Driver {
            outer,
            budget,
            stopping,
            iteration: 0,
            first_norm: T::ZERO,
            last_norm: T::MAX,
        })
    }

    /// Outer iterations taken.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// `‖h‖` of the last estimate (`T::MAX` before the first step).
    pub fn hypergradient_norm(&self) -> T {
        self.last_norm
    }

    /// `‖h‖` of the first non-zero estimate (0 before there is one).
    pub fn first_norm(&self) -> T {
        self.first_norm
    }

    /// The outer update.
    pub fn outer(&self) -> &Outer<T> {
        &self.outer
    }

    /// A new budget (counted from iteration 0), e.g. more steps for a run that goes on.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// A new stopping test; an invalid one is refused and the old one kept.
    pub fn set_stopping(&mut self, stopping: Stopping<T>) -> Result<(), Error> {
        stopping.validate()?;
        self.stopping = stopping;
        Ok(())
    }

    /// Whether the last estimate passed the stopping test.
    pub fn converged(&self) -> bool {
        let norm = self.last_norm;
        if self.iteration == 0 || (self.iteration == 1 && norm == T::ZERO) {
            return false;
        }
        let Stopping { relative, absolute } = self.stopping;
        (absolute > T::ZERO && norm <= absolute)
            || (relative > T::ZERO && self.first_norm > T::ZERO && norm <= relative * self.first_norm)
    }

    /// One outer iteration: the solver's estimate at `x`, then the outer update. Returns the
    /// step's report and, when the run is over, why. On error nothing changes: not `x`, not
    /// the solver, not the driver.
    pub fn step<P, S, const DX: usize, const DY: usize>(
        &mut self,
        solver: &mut S,
        problem: &Counted<P>,
        x: &mut [T; DX],
    ) -> Result<(StepReport<T>, Option<Outcome>), Error>
    where
        P: Problem<T, DX, DY>,
        S: Solver<T, DX, DY>,
    {
        let r = step(solver, problem, x, &self.outer, self.iteration)?;
        self.iteration += 1;
        self.last_norm = r.hypergradient_norm;
        if self.first_norm == T::ZERO {
            self.first_norm = r.hypergradient_norm;
        }
        let outcome = if self.converged() {
            Some(Outcome::Converged)
        } else if problem.counts().total() >= self.budget.max_oracle_calls {
            Some(Outcome::OracleBudget)
        } else if self.iteration >= self.budget.max_iterations {
            Some(Outcome::IterationBudget)
        } else {
            None
        };
        Ok((r, outcome))
    }

    /// Steps until the stopping test holds, a budget runs out, or `observer` returns
    /// `Break` (it sees each step, the updated `x` and the solver: log them, toggle a timing
    /// pin, write a trace). An error ends the run with `x` at its last good value.
    pub fn run<P, S, F, const DX: usize, const DY: usize>(
        &mut self,
        solver: &mut S,
        problem: &Counted<P>,
        x: &mut [T; DX],
        mut observer: F,
    ) -> Result<RunReport<T>, Error>
    where
        P: Problem<T, DX, DY>,
        S: Solver<T, DX, DY>,
        F: FnMut(&StepReport<T>, &[T; DX], &S) -> ControlFlow<()>,
    {
        let outcome = loop {
            if self.iteration >= self.budget.max_iterations {
                break Outcome::IterationBudget;
            }
            let (r, outcome) = self.step(solver, problem, x)?;
            if observer(&r, x, solver).is_break() {
                break Outcome::Stopped;
            }
            if let Some(o) = outcome {
                break o;
            }
        };
        Ok(RunReport {
            outcome,
            iterations: self.iteration,
            hypergradient_norm: self.last_norm,
            oracle_calls: problem.counts(),
        })
    }
}

/// Runs outer iterations from iteration 0 until `‖h‖ ≤ tol` (the estimate at the current
/// `x`, before its step), a budget runs out, or `observer` returns `Break`: a [`Driver`] with
/// an absolute tolerance. `tol = 0` runs the whole budget.
pub fn run<T, P, S, F, const DX: usize, const DY: usize>(
    solver: &mut S,
    problem: &Counted<P>,
    x: &mut [T; DX],
    outer: &Outer<T>,
    budget: Budget,
    tol: T,
    mut observer: F,
) -> Result<RunReport<T>, Error>
where
    T: Real,
    P: Problem<T, DX, DY>,
    S: Solver<T, DX, DY>,
    F: FnMut(&StepReport<T>, &[T; DX]) -> ControlFlow<()>,
{
    Driver::new(*outer, budget, Stopping::absolute(tol))?.run(solver, problem, x, |r, x, _| observer(r, x))
}
