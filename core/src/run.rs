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

    /// Advances the inner state at `x` without an estimate, for a step that holds `x` again
    /// (see [`Driver::tracking`]): by default the full call with its estimate dropped; a
    /// solver whose estimate costs work of its own (qNBO's adjoint steps) skips it. On error
    /// the solver's state is as it was before the call.
    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        let mut h = [T::ZERO; DX];
        self.hypergradient(problem, x, &mut h)
    }

    /// The adjoint the solver carries from one outer iteration to the next, if it carries
    /// one: the driver measures its residual to decide whether `x` may move (see
    /// [`Driver::tracking`]).
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        None
    }

    /// The relative residual behind the last estimate, for a solver that solves its linear
    /// system inside the estimate instead of carrying an adjoint the driver can check
    /// (PZOBO's perturbed paths measure `‖∇²_yy g·δ + ∇²_xy g·u‖ / ‖∇²_xy g·u‖` from their
    /// first and last steps, with their difference's bias). The driver's inner tracking
    /// tests it as it tests an adjoint's residual. `None` by default.
    fn estimate_residual(&self) -> Option<T> {
        None
    }

    /// Makes the next calls' adjoint more accurate after the driver found its residual above
    /// the tolerance (see [`Driver::tracking`]). A solver whose adjoint is a fixed truncation
    /// rebuilt at every call (a Neumann series, an unrolled depth, a fixed number of
    /// refinement steps) deepens it ([`Deepening::Deeper`]: one more call at the new depth
    /// is what helps, repeating it would not) until it is at its capacity
    /// ([`Deepening::AtCapacity`]). By default [`Deepening::Repeat`]: a warm-started adjoint
    /// improves by being called again.
    fn deepen_adjoint(&mut self) -> Deepening {
        Deepening::Repeat
    }

    /// Makes the next calls' estimates less noisy after held steps stopped reducing the
    /// inner residuals (see [`Driver::tracking`]): a solver that samples minibatches doubles
    /// their size, so that its noise falls with the outer progress until the batch is full
    /// and the method deterministic. Returns `false`, changing nothing, when it cannot (the
    /// default: deterministic solvers, and SAGA tables whose rows are fixed batches).
    fn reduce_noise(&mut self) -> bool {
        false
    }

    /// Halves the solver's inner step sizes after a held step's lower residual grew with no
    /// noise left to remove (see [`Driver::tracking`]): gradient steps that diverge at this
    /// `x`. A default step `1/L` taken from the smoothness at the starting `x` is too long
    /// where `x` has made the lower level stiffer (a stronger regularization). Returns
    /// `false`, changing nothing, when the solver takes no such steps (the default).
    fn shorten_steps(&mut self) -> bool {
        false
    }

    /// Sets the inner steps that default to `1/L` (gradient steps on the lower level, a
    /// Neumann or gradient-descent adjoint's step) to `step`, a step from the curvature at
    /// the current point ([`crate::curvature::LocalSteps`]). Returns `false`, changing
    /// nothing, when the solver takes no such steps (the default).
    fn set_steps(&mut self, step: T) -> bool {
        let _ = step;
        false
    }

    /// What keeps the solver's estimates from being `∇F` once its inner state has caught up,
    /// which decides whether a run that passes the stopping test converged (see [`Bias`]).
    fn bias(&self) -> Bias {
        Bias::None
    }
}

/// What keeps a solver's estimates from being the hypergradient once its inner state has
/// caught up ([`Solver::bias`]). A run whose estimate and residuals pass the stopping test
/// with a bias left ends with [`Outcome::DepthLimit`]: `x` is where the method's biased
/// estimate vanishes, not a stationary point of `F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Bias {
    /// Nothing: a vanishing estimate with vanishing residuals is a stationary point of `F`.
    None,
    /// A truncation (Neumann terms, unrolled depth, approximate adjoint) that the solver
    /// deepens under the driver's inner tracking ([`Solver::deepen_adjoint`]); without
    /// tracking it stays as configured.
    Truncation,
    /// A bias no further call removes: PZOBO's fixed-length perturbed paths, F2SA's finite
    /// penalty.
    Fixed,
}

/// What [`Solver::deepen_adjoint`] did to a short adjoint, which decides how the driver calls
/// the solver again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Deepening {
    /// Nothing: the adjoint is warm-started, and calling again improves it.
    Repeat,
    /// The next call's truncation is deeper; repeating a call at the old depth would not help.
    Deeper,
    /// The truncation is at its capacity: neither repeating nor deepening helps.
    AtCapacity,
}

/// A solver's carried adjoint, with its sign (spec §1.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Adjoint<'a, T, const DY: usize> {
    /// `u ≈ [∇²_yy g]⁻¹ ∇_y f`.
    Solution(&'a [T; DY]),
    /// `v = −u`, the single-loop methods' sign.
    Negated(&'a [T; DY]),
}

/// What a held step whose residuals did not fall (`stalled`) asks of the solver instead of
/// more calls: less noise (larger minibatches) while there is noise to remove; without, and
/// with the lower residual `grown`, shorter inner steps (they diverge at this `x`). Whether
/// the solver changed.
fn remedy<T: Real, S: Solver<T, DX, DY>, const DX: usize, const DY: usize>(
    solver: &mut S,
    stalled: bool,
    grown: bool,
) -> bool {
    stalled && (solver.reduce_noise() || (grown && solver.shorten_steps()))
}

/// The most calls of the solver one held step of the driver makes (see
/// [`Driver::tracking`]).
pub const MAX_ADVANCES: u32 = 1 << 12;

/// The calls of a held step once more held: twice as many, up to [`MAX_ADVANCES`].
fn twice(advances: u32) -> u32 {
    advances.saturating_mul(2).min(MAX_ADVANCES)
}

/// Deepens a fixed count of inner steps: twice as many plus one (so that 0 grows), up to
/// `cap`; [`Deepening::AtCapacity`], leaving `n` alone, when it is already there.
pub fn deepen_count(n: &mut u32, cap: u32) -> Deepening {
    if *n >= cap {
        return Deepening::AtCapacity;
    }
    *n = n.saturating_mul(2).saturating_add(1).min(cap);
    Deepening::Deeper
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

    /// `h` without the entries that cannot move: an entry at a bound of the box whose step
    /// would leave it is set to 0.
    pub fn free<const DX: usize>(&self, x: &[T; DX], h: &[T; DX]) -> [T; DX] {
        let mut free = *h;
        if let Some((lo, hi)) = self.bounds {
            for (f, &xj) in free.iter_mut().zip(x) {
                if (xj <= lo && *f > T::ZERO) || (xj >= hi && *f < T::ZERO) {
                    *f = T::ZERO;
                }
            }
        }
        free
    }

    /// `‖h‖` over the entries that can move ([`Outer::free`]).
    pub fn free_norm<const DX: usize>(&self, x: &[T; DX], h: &[T; DX]) -> T {
        linalg::norm(&self.free(x, h))
    }

    /// `x ← Π(x − α_t h)`; returns `α_t`. `x` is unchanged on error.
    pub fn apply<const DX: usize>(&self, t: u32, x: &mut [T; DX], h: &[T; DX]) -> Result<T, Error> {
        self.validate()?;
        let alpha = self.schedule.at(t);
        self.move_by(alpha, x, h)?;
        Ok(alpha)
    }

    /// `x ← Π(x − α h)` for any `α ≥ 0` (the schedule is not read); `x` is unchanged on error.
    fn move_by<const DX: usize>(&self, alpha: T, x: &mut [T; DX], h: &[T; DX]) -> Result<(), Error> {
        let mut next = *x;
        linalg::axpy(-alpha, h, &mut next);
        if let Some((lo, hi)) = self.bounds {
            for v in next.iter_mut() {
                *v = v.max(lo).min(hi);
            }
        }
        linalg::ensure_finite(&next, "outer update")?;
        *x = next;
        Ok(())
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
    /// `‖h‖` without the entries that push `x` out of the box where it sits on a bound
    /// (the stationarity the stopping test measures; `hypergradient_norm` without a box).
    pub free_norm: T,
    /// Outer step size used (0 when `x` was held).
    pub step_size: T,
    /// `x` did not move: the inner state lagged behind the outer progress (see
    /// [`Driver::tracking`]) and the solver gets another call at the same `x`.
    pub held: bool,
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
    /// The estimate passed the hypergradient test, but its truncation (the adjoint residual)
    /// is above the tolerance and the solver cannot deepen it further ([`Solver::deepen_adjoint`]),
    /// or the estimates carry a bias that nothing removed ([`Solver::bias`]): `x` is where the
    /// method's biased estimate vanishes, not a stationary point of `F`.
    DepthLimit,
}

impl Outcome {
    /// A short name for reports and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::IterationBudget => "iteration budget",
            Outcome::OracleBudget => "oracle budget",
            Outcome::Stopped => "stopped",
            Outcome::DepthLimit => "depth limit",
        }
    }
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

/// The solver's hypergradient estimate at `x` with its norm, checked: a non-finite estimate,
/// or a finite one whose norm overflows (entries beyond ~√MAX), is no usable step.
fn estimate<T, P, S, const DX: usize, const DY: usize>(
    solver: &mut S,
    problem: &Counted<P>,
    x: &[T; DX],
) -> Result<([T; DX], T, Diagnostics), Error>
where
    T: Real,
    P: Problem<T, DX, DY>,
    S: Solver<T, DX, DY>,
{
    let mut h = [T::ZERO; DX];
    let diagnostics = solver.hypergradient(problem, x, &mut h)?;
    let norm = linalg::norm(&h);
    if !linalg::all_finite(&h) || !norm.is_finite() {
        return Err(Error::NonFinite {
            oracle: None,
            stage: "hypergradient estimate",
        });
    }
    Ok((h, norm, diagnostics))
}

/// `‖∇_y g(x, y)‖` on the full batch (one counted lower gradient).
fn lower_residual<T, P, const DX: usize, const DY: usize>(
    problem: &Counted<P>,
    x: &[T; DX],
    y: &[T; DY],
) -> Result<T, Error>
where
    T: Real,
    P: Problem<T, DX, DY>,
{
    let mut g = [T::ZERO; DY];
    problem.lower_grad(x, y, crate::problem::Batch::Full, &mut g)?;
    let r = linalg::norm(&g);
    if r.is_finite() {
        Ok(r)
    } else {
        Err(Error::NonFinite {
            oracle: Some(crate::error::Oracle::LowerGrad),
            stage: "lower-level residual",
        })
    }
}

/// `a / b`, or 0 when `b` is 0 (nothing to reduce) and `a` too.
pub(crate) fn ratio<T: Real>(a: T, b: T) -> T {
    if b > T::ZERO {
        a / b
    } else if a == T::ZERO {
        T::ZERO
    } else {
        T::MAX
    }
}

/// `‖∇²_yy g(x, y)·u − ∇_y f(x, y)‖` and `‖∇_y f(x, y)‖` on the full batch (one counted
/// Hessian-vector product and one upper gradient).
fn adjoint_residual<T, P, const DX: usize, const DY: usize>(
    problem: &Counted<P>,
    x: &[T; DX],
    y: &[T; DY],
    adjoint: Adjoint<'_, T, DY>,
) -> Result<(T, T), Error>
where
    T: Real,
    P: Problem<T, DX, DY>,
{
    // With `v = −u` the residual is `‖∇²_yy g·v + ∇_y f‖`: the same norm, exactly.
    let (u, sign) = match adjoint {
        Adjoint::Solution(u) => (u, -T::ONE),
        Adjoint::Negated(v) => (v, T::ONE),
    };
    let mut r = [T::ZERO; DY];
    problem.lower_hvp(x, y, u, crate::problem::Batch::Full, &mut r)?;
    let (mut gx, mut b) = ([T::ZERO; DX], [T::ZERO; DY]);
    problem.upper_grad(x, y, crate::problem::Batch::Full, &mut gx, &mut b)?;
    linalg::axpy(sign, &b, &mut r);
    let (residual, scale) = (linalg::norm(&r), linalg::norm(&b));
    if residual.is_finite() && scale.is_finite() {
        Ok((residual, scale))
    } else {
        Err(Error::NonFinite {
            oracle: None,
            stage: "adjoint residual",
        })
    }
}

/// One outer iteration `t` with a fixed schedule: the solver's hypergradient estimate at `x`,
/// then the shared outer update. On error, `x` is unchanged.
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
    let (h, hypergradient_norm, diagnostics) = estimate(solver, problem, x)?;
    let free_norm = outer.free_norm(x, &h);
    let step_size = outer.apply(t, x, &h)?;
    Ok(StepReport {
        iteration: t,
        hypergradient_norm,
        free_norm,
        step_size,
        held: false,
        oracle_calls: problem.counts(),
        diagnostics,
    })
}

/// A scale-free outer step: the first move changes the hyperparameters by at most `radius`
/// (in the units of `x`, measured in the largest coordinate so that neither their number nor
/// zero padding matters), and every later step size comes from the estimates themselves, so no
/// setting depends on the units of `F` (the scale of the data or of the targets).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Adaptive<T> {
    /// Barzilai–Borwein steps `α = sᵀs / sᵀr` (`s`, `r`: the last changes of `x` and of the
    /// estimate), each move at most twice as long as the one before (largest coordinate). For
    /// deterministic estimates.
    BarzilaiBorwein {
        /// Largest change of a hyperparameter in the first move.
        radius: T,
    },
    /// AdaGrad-norm: `α_t = radius / √(Σ_{s≤t} ‖h_s‖²_∞)`, a decreasing step that averages
    /// the noise of stochastic estimates out.
    AdaGradNorm {
        /// Largest change of a hyperparameter in the first move.
        radius: T,
    },
}

impl<T: Real> Adaptive<T> {
    /// The rule for a method's estimates under inner tracking `theta` ([`Driver::tracking`]):
    /// Barzilai–Borwein for deterministic ones (exact once the inner state has caught up),
    /// AdaGrad-norm for noisy ones (their errors do not vanish with the step, so the step
    /// must). A `radius` of 1 changes a log-parametrized strength by one e-fold at most in
    /// the first move.
    pub fn for_estimates(estimates: crate::registry::Estimates, theta: f64, radius: T) -> Self {
        if estimates.noisy(theta) {
            Adaptive::AdaGradNorm { radius }
        } else {
            Adaptive::BarzilaiBorwein { radius }
        }
    }

    fn radius(&self) -> T {
        match *self {
            Adaptive::BarzilaiBorwein { radius } | Adaptive::AdaGradNorm { radius } => radius,
        }
    }

    /// Checks the radius.
    pub fn validate(&self) -> Result<(), Error> {
        let r = self.radius();
        ensure(r.is_finite() && r > T::ZERO, "outer radius", "finite and > 0")
    }
}

/// What the adaptive step remembers between outer iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Memory<T, const DX: usize> {
    x: [T; DX],
    h: [T; DX],
    alpha: T,
    last_move: T,
    sum_squares: T,
    started: bool,
}

impl<T: Real, const DX: usize> Memory<T, DX> {
    fn new() -> Self {
        Memory {
            x: [T::ZERO; DX],
            h: [T::ZERO; DX],
            alpha: T::ZERO,
            last_move: T::ZERO,
            sum_squares: T::ZERO,
            started: false,
        }
    }

    /// The step size for estimate `h` (norm `norm`) at `x`.
    fn step_size(&mut self, rule: &Adaptive<T>, x: &[T; DX], h: &[T; DX]) -> T {
        // Lengths are measured in the largest coordinate: a move of `radius` changes no
        // hyperparameter by more than `radius`, whatever their number (and zero padding).
        let largest = linalg::norm_inf(h);
        if largest == T::ZERO {
            return T::ZERO;
        }
        let radius = rule.radius();
        match *rule {
            Adaptive::AdaGradNorm { .. } => {
                self.sum_squares += largest * largest;
                radius / self.sum_squares.sqrt()
            }
            Adaptive::BarzilaiBorwein { .. } => {
                let first = radius / largest;
                if !self.started || !(self.alpha > T::ZERO) {
                    return first;
                }
                let (mut ss, mut sr) = (T::ZERO, T::ZERO);
                for j in 0..DX {
                    let sj = x[j] - self.x[j];
                    ss += sj * sj;
                    sr += sj * (h[j] - self.h[j]);
                }
                let alpha = if sr > T::ZERO && ss > T::ZERO {
                    ss / sr
                } else {
                    self.alpha + self.alpha
                };
                let longest = if self.last_move > T::ZERO {
                    self.last_move + self.last_move
                } else {
                    radius
                };
                if alpha * largest > longest {
                    longest / largest
                } else {
                    alpha
                }
            }
        }
    }
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
pub struct Driver<T, const DX: usize> {
    outer: Outer<T>,
    adaptive: Option<Adaptive<T>>,
    memory: Memory<T, DX>,
    budget: Budget,
    stopping: Stopping<T>,
    iteration: u32,
    first_norm: T,
    last_norm: T,
    first_residual: T,
    tracking: T,
    theta: T,
    best_norm: T,
    last_move_norm: T,
    last_estimate_norm: T,
    inner: InnerErrors<T>,
    target: T,
    depth_limited: bool,
    /// The last estimate deepened the solver's truncated adjoint.
    deepened: bool,
    holding: bool,
    advances: u32,
}

/// The inner residuals where an estimate was made, relative to their scales.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct InnerErrors<T> {
    /// `‖∇_y g‖` at the solver's iterate.
    residual: T,
    /// `residual` over its value at the start.
    lower: T,
    /// `‖∇²_yy g·u − ∇_y f‖ / ‖∇_y f‖` for a solver with an adjoint `u`, or the residual the
    /// solver measured itself ([`Solver::estimate_residual`]), else 0.
    adjoint: T,
}

impl<T: Real> InnerErrors<T> {
    /// Not measured (yet): blocks nothing and passes every test.
    fn none(residual: T) -> Self {
        InnerErrors {
            residual,
            lower: T::ZERO,
            adjoint: T::ZERO,
        }
    }

    /// The larger relative error.
    fn largest(&self) -> T {
        if self.adjoint > self.lower {
            self.adjoint
        } else {
            self.lower
        }
    }

    /// The error that repeating the call can still reduce: the adjoint's does not count once
    /// its truncation is at the solver's capacity.
    fn blocking(&self, depth_limited: bool) -> T {
        if depth_limited { self.lower } else { self.largest() }
    }
}

impl<T: Real, const DX: usize> Driver<T, DX> {
    /// A driver at iteration 0 stepping with `outer`'s schedule; errors name an invalid step,
    /// box or tolerance.
    pub fn new(outer: Outer<T>, budget: Budget, stopping: Stopping<T>) -> Result<Self, Error> {
        outer.validate()?;
        stopping.validate()?;
        Ok(Driver {
            outer,
            adaptive: None,
            memory: Memory::new(),
            budget,
            stopping,
            iteration: 0,
            first_norm: T::ZERO,
            last_norm: T::MAX,
            first_residual: T::ZERO,
            tracking: T::ZERO,
            theta: T::ZERO,
            best_norm: T::MAX,
            last_move_norm: T::MAX,
            last_estimate_norm: T::MAX,
            inner: InnerErrors {
                residual: T::MAX,
                lower: T::MAX,
                adjoint: T::MAX,
            },
            target: T::ZERO,
            depth_limited: false,
            deepened: false,
            holding: false,
            advances: 1,
        })
    }

    /// A driver at iteration 0 stepping with the scale-free `rule` inside `bounds` (`None`:
    /// no box).
    pub fn adaptive(
        rule: Adaptive<T>,
        bounds: Option<(T, T)>,
        budget: Budget,
        stopping: Stopping<T>,
    ) -> Result<Self, Error> {
        rule.validate()?;
        let outer = Outer {
            schedule: Schedule::Constant(T::ONE),
            bounds,
        };
        let mut d = Driver::new(outer, budget, stopping)?;
        d.adaptive = Some(rule);
        Ok(d)
    }

    /// Inner accuracy that follows the outer progress (HOAG's decreasing tolerances, made
    /// relative so that no unit enters): an estimate moves `x` only when, after the call that
    /// made it, the lower residual `‖∇_y g‖` at the solver's iterate is at most `θ·ρ` times its
    /// value at the start and, for a solver that carries an adjoint `u`
    /// ([`Solver::adjoint`]), `‖∇²_yy g·u − ∇_y f‖ ≤ θ·ρ·‖∇_y f‖`; `ρ = ‖h_best‖/‖h_first‖` is
    /// the hypergradient's progress (`h_first`: the estimate of the first move, `h_best` the
    /// smallest that moved `x`, or this one), so the tolerance never loosens. Otherwise the
    /// step holds `x` ([`StepReport::held`]); while the residuals stay short, the next steps
    /// only advance the inner state ([`Solver::advance`]). A method whose inner work per call
    /// is a constant (a few gradient steps, one Newton step) thus does as much as the outer
    /// progress needs instead of drifting on estimates from a lagging `y` or `u`. The first
    /// estimate after a move that is larger than the move's halves `θ` (an estimate is off
    /// by up to the inner condition number times the residual, which no fixed `θ` covers).
    /// An adjoint that is rebuilt by a fixed truncation at every call (a Neumann series, an
    /// unrolled depth) does not improve by repetition: when its residual is short the
    /// solver deepens it ([`Solver::deepen_adjoint`]); at the solver's capacity it stops holding `x`,
    /// and a run that then passes the hypergradient test ends with [`Outcome::DepthLimit`],
    /// never [`Outcome::Converged`]. A step held again repeats the solver's call (its
    /// [`Solver::advance`] when only `y` is short) a number of times that doubles while the
    /// hold lasts (up to [`MAX_ADVANCES`]) and halves at each move of `x`: an inner state far
    /// behind is caught up in a few measured steps, and the work per step follows what the
    /// outer progress needs. A held step that did not reduce the residuals it waits for asks
    /// the solver for less noise ([`Solver::reduce_noise`]: larger minibatches) before more
    /// calls; one whose lower residual grew, with no noise left to remove, asks for shorter
    /// inner steps ([`Solver::shorten_steps`]). Held steps count as iterations. `θ = 0` (the
    /// default) turns it off; a negative or non-finite `θ` is refused. Each step then costs one more lower gradient (and, with an
    /// adjoint, one Hessian-vector product and one upper gradient).
    pub fn tracking(mut self, theta: T) -> Result<Self, Error> {
        ensure(
            theta.is_finite() && theta >= T::ZERO,
            "inner tracking ratio",
            "finite and ≥ 0",
        )?;
        self.tracking = theta;
        self.theta = theta;
        Ok(self)
    }

    /// Outer iterations taken.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// `‖h‖` of the last estimate without the entries a bound blocks (`T::MAX` before the
    /// first step): what the stopping test measures.
    pub fn hypergradient_norm(&self) -> T {
        self.last_norm
    }

    /// The same norm of the first non-zero estimate (0 before there is one; with
    /// [`Driver::tracking`], the estimate of the first move).
    pub fn first_norm(&self) -> T {
        self.first_norm
    }

    /// The last measured lower-level residual `‖∇_y g‖` and its value at the start (`T::MAX`
    /// and 0 before they were measured; measured with a relative tolerance or tracking).
    pub fn lower_residual(&self) -> (T, T) {
        (self.inner.residual, self.first_residual)
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

    /// Whether an estimate of stationarity `norm` at this iteration passes the test on the
    /// hypergradient (an exactly zero estimate at the first step never does).
    fn norm_test(&self, norm: T, first_norm: T) -> bool {
        if self.iteration == 0 && norm == T::ZERO {
            return false;
        }
        let Stopping { relative, absolute } = self.stopping;
        (absolute > T::ZERO && norm <= absolute)
            || (relative > T::ZERO && first_norm > T::ZERO && norm <= relative * first_norm)
    }

    /// One outer iteration: the solver's estimate at `x`, then the outer update (or, with
    /// [`Driver::tracking`], a hold). Returns the step's report and, when the run is over,
    /// why. With a relative tolerance or tracking, the first step (before its estimate, at the
    /// solver's starting lower iterate) and every step that tests also evaluate the inner
    /// residuals; tracking measures them at every step. On error `x` and the driver are
    /// unchanged, and so is the solver when its own call failed (a residual that fails after
    /// it, or a held step's later advance, leaves the solver's completed calls in place).
    pub fn step<P, S, const DY: usize>(
        &mut self,
        solver: &mut S,
        problem: &Counted<P>,
        x: &mut [T; DX],
    ) -> Result<(StepReport<T>, Option<Outcome>), Error>
    where
        P: Problem<T, DX, DY>,
        S: Solver<T, DX, DY>,
    {
        // The lower level's residual at the start sets the scale of the residual tests.
        let relative = self.stopping.relative;
        let tracks = self.tracking > T::ZERO;
        let mut first_residual = self.first_residual;
        if (relative > T::ZERO || tracks) && self.iteration == 0 {
            first_residual = lower_residual(problem, x, solver.lower())?;
        }
        let has_first = self.first_norm > T::ZERO;
        // A hold that left the lower level short of the tolerance the hold was decided against
        // (measured after that call, at this same `x`) is followed by another, without an
        // estimate. (A short adjoint alone needs the full call: the next estimate.)
        if tracks && self.holding && !(self.inner.lower <= self.target) {
            let mut diagnostics = solver.advance(problem, x)?;
            for _ in 1..self.advances {
                diagnostics = solver.advance(problem, x)?;
            }
            let residual = lower_residual(problem, x, solver.lower())?;
            let (stalled, grew) = (!(residual < self.inner.residual), residual > self.inner.residual);
            self.inner.residual = residual;
            self.inner.lower = ratio(residual, first_residual);
            let short = !(self.inner.lower <= self.target);
            if short && !remedy(solver, stalled, grew) {
                self.advances = twice(self.advances);
            }
            let r = StepReport {
                iteration: self.iteration,
                hypergradient_norm: self.last_estimate_norm,
                free_norm: self.last_norm,
                step_size: T::ZERO,
                held: true,
                oracle_calls: problem.counts(),
                diagnostics,
            };
            self.iteration += 1;
            return Ok((r, self.budget_outcome(problem)));
        }
        // A step held again repeats the call: its earlier repetitions only advance the state.
        // After a deepening one call at the new depth is what the hold waits for.
        let repeats = if tracks && self.holding && !self.deepened {
            self.advances
        } else {
            1
        };
        for _ in 1..repeats {
            estimate(solver, problem, x)?;
        }
        let (h, hypergradient_norm, diagnostics) = estimate(solver, problem, x)?;
        // Entries a bound blocks neither move nor shape the step size.
        let h = self.outer.free(x, &h);
        let free_norm = linalg::norm(&h);
        let first_norm = if has_first { self.first_norm } else { free_norm };
        let h_test = self.norm_test(free_norm, first_norm);
        // The hypergradient's progress so far: the smallest estimate that moved `x` (this one
        // if smaller), so the inner tolerance only decreases, as HOAG's does.
        let best = if free_norm < self.best_norm {
            free_norm
        } else {
            self.best_norm
        };
        // Residuals of the inner problems where the estimate was made, relative to their
        // scales: an estimate from a lagging `y` or `u` can be small, or point the wrong way,
        // without `x` being stationary.
        let mut inner = InnerErrors::none(self.inner.residual);
        if tracks || (relative > T::ZERO && h_test) {
            inner = self.inner_errors(solver, problem, x, first_residual)?;
        }
        // An estimate larger than the one of the last move says that move overshot or its
        // estimate was off: tighten the inner tolerance (an inaccurate estimate is off by up to
        // the inner problem's condition number times its residual, which no fixed ratio covers).
        // Once per move: the first estimate after it decides.
        let grew = tracks && has_first && free_norm > self.last_move_norm;
        let theta = if grew {
            self.theta * T::from_f64(0.5)
        } else {
            self.theta
        };
        let target = self.inner_target(theta, best, has_first);
        // A truncated adjoint that is short once the lower level has caught up is deepened for
        // the next call; at its capacity it no longer holds `x` (the method then moves on its
        // biased estimates, as published).
        let deepening = if tracks && !self.depth_limited && inner.lower <= target && inner.adjoint > target {
            solver.deepen_adjoint()
        } else {
            Deepening::Repeat
        };
        let deepened = deepening == Deepening::Deeper;
        let depth_limited = tracks && (self.depth_limited || deepening == Deepening::AtCapacity);
        let held = tracks && !(inner.blocking(depth_limited) <= target);
        // A hold again that did not reduce its residuals, as in the held lower branch above.
        let stalled =
            held && self.holding && !(inner.blocking(depth_limited) < self.inner.blocking(self.depth_limited));
        let remedied = remedy(solver, stalled, inner.residual > self.inner.residual);
        let biased = match solver.bias() {
            Bias::None => false,
            Bias::Truncation => !tracks,
            Bias::Fixed => true,
        };
        let converged = h_test && (relative == T::ZERO || inner.largest() <= relative) && !biased;
        // At the method's biased fixed point only the lower level can still be measured:
        // the adjoint's residual is what the truncation leaves.
        let at_depth_limit = h_test && (depth_limited || biased) && inner.lower <= relative;
        let mut memory = self.memory;
        let alpha = if held {
            T::ZERO
        } else {
            let alpha = match self.adaptive {
                None => self.outer.schedule.at(self.iteration),
                Some(rule) => memory.step_size(&rule, x, &h),
            };
            let before = *x;
            self.outer.move_by(alpha, x, &h)?;
            memory.x = before;
            memory.h = h;
            memory.alpha = alpha;
            let mut moved = *x;
            linalg::axpy(-T::ONE, &before, &mut moved);
            memory.last_move = linalg::norm_inf(&moved);
            memory.started = true;
            alpha
        };
        self.memory = memory;
        self.first_residual = first_residual;
        let r = StepReport {
            iteration: self.iteration,
            hypergradient_norm,
            free_norm,
            step_size: alpha,
            held,
            oracle_calls: problem.counts(),
            diagnostics,
        };
        self.iteration += 1;
        self.last_norm = free_norm;
        self.theta = theta;
        self.last_estimate_norm = hypergradient_norm;
        self.inner = inner;
        self.target = target;
        self.depth_limited = depth_limited;
        self.deepened = deepened;
        self.advances = if !held {
            (self.advances / 2).max(1)
        } else if self.holding && !remedied && !deepened {
            twice(self.advances)
        } else {
            self.advances
        };
        self.holding = held;
        if !held && free_norm > T::ZERO {
            self.best_norm = best;
            self.last_move_norm = free_norm;
        } else if grew {
            // Only the first estimate after a move is compared with the move's.
            self.last_move_norm = T::MAX;
        }
        if !held && !has_first {
            self.first_norm = first_norm;
        }
        let outcome = if converged {
            Some(Outcome::Converged)
        } else if at_depth_limit {
            Some(Outcome::DepthLimit)
        } else {
            self.budget_outcome(problem)
        };
        Ok((r, outcome))
    }

    /// The budget that ran out, if one did.
    fn budget_outcome<P>(&self, problem: &Counted<P>) -> Option<Outcome> {
        if problem.counts().total() >= self.budget.max_oracle_calls {
            Some(Outcome::OracleBudget)
        } else if self.iteration >= self.budget.max_iterations {
            Some(Outcome::IterationBudget)
        } else {
            None
        }
    }

    /// The inner tolerance `θ·‖h_best‖/‖h_first‖` (`θ` before the first move), never below
    /// what the precision resolves.
    fn inner_target(&self, theta: T, best: T, has_first: bool) -> T {
        let progress = if has_first { best / self.first_norm } else { T::ONE };
        let floor = T::from_f64(16.0) * T::EPSILON;
        if theta * progress > floor {
            theta * progress
        } else {
            floor
        }
    }

    /// The inner residuals at the solver's iterate: the lower one relative to
    /// `first_residual`, the adjoint's (for a solver with an adjoint) relative to `‖∇_y f‖`.
    fn inner_errors<P, S, const DY: usize>(
        &self,
        solver: &S,
        problem: &Counted<P>,
        x: &[T; DX],
        first_residual: T,
    ) -> Result<InnerErrors<T>, Error>
    where
        P: Problem<T, DX, DY>,
        S: Solver<T, DX, DY>,
    {
        let residual = lower_residual(problem, x, solver.lower())?;
        let mut adjoint = T::ZERO;
        if let Some(carried) = solver.adjoint() {
            let (r, b) = adjoint_residual(problem, x, solver.lower(), carried)?;
            adjoint = ratio(r, b);
        }
        if let Some(own) = solver.estimate_residual().filter(|&own| !(own <= adjoint)) {
            adjoint = own;
        }
        Ok(InnerErrors {
            residual,
            lower: ratio(residual, first_residual),
            adjoint,
        })
    }

    /// Steps until the stopping test holds, a budget runs out, or `observer` returns
    /// `Break` (it sees each step, the updated `x` and the solver: log them, toggle a timing
    /// pin, write a trace). An error ends the run with `x` at its last good value.
    pub fn run<P, S, F, const DY: usize>(
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
