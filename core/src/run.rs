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

/// Runs outer iterations until `‖h‖ ≤ tol` (the estimate at the current `x`, before its
/// step), a budget runs out, or `observer` returns `Break`. The observer sees each step and
/// the updated `x` (log it, toggle a timing pin, write a trace). `tol = 0` runs the whole
/// budget: single-loop methods (SOBA, SABA, MA-SOBA) start from a zero adjoint, so their
/// first estimate can be exactly zero without `x` being stationary.
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
    ensure(tol.is_finite() && tol >= T::ZERO, "tolerance", "finite and ≥ 0")?;
    let mut last = T::MAX;
    for t in 0..budget.max_iterations {
        let r = step(solver, problem, x, outer, t)?;
        last = r.hypergradient_norm;
        let report = |outcome| RunReport {
            outcome,
            iterations: t + 1,
            hypergradient_norm: last,
            oracle_calls: problem.counts(),
        };
        if observer(&r, x).is_break() {
            return Ok(report(Outcome::Stopped));
        }
        if tol > T::ZERO && last <= tol {
            return Ok(report(Outcome::Converged));
        }
        if problem.counts().total() >= budget.max_oracle_calls {
            return Ok(report(Outcome::OracleBudget));
        }
    }
    Ok(RunReport {
        outcome: Outcome::IterationBudget,
        iterations: budget.max_iterations,
        hypergradient_norm: last,
        oracle_calls: problem.counts(),
    })
}
