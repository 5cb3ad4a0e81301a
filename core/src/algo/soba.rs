//! Single-loop stochastic methods: SOBA, SABA (Dagréou, Ablin, Vaiter, Moreau; NeurIPS
//! 2022; spec §3.8–3.9) and MA-SOBA (Chen, Xiao, Balasubramanian; spec §3.10).
//!
//! State `y`, `v ≈ −[∇²_yy g]⁻¹ ∇_y f` (note the sign, spec §1.1) and, with a moving
//! average, `h`. One outer iteration `t`, in this order:
//!
//! ```text
//! draw a lower batch ξ and an upper batch ζ
//! D_y = ∇_y g(x, y; ξ)                                       all at the old (x, y, v),
//! D_v = ∇²_yy g(x, y; ξ)·v + ∇_y f(x, y; ζ)                   one ξ for the three lower
//! D_x = ∇²_xy g(x, y; ξ)·v + ∇_x f(x, y; ζ)                   oracles (Jacobi)
//! y ← y − ρ_t D_y;   v ← v − ρ'_t D_v
//! MA-SOBA only: h ← h + θ_t (D_x − h), and the outer step uses the new h
//!               (or the previous one, AverageOrder::StepWithPrevious)
//! x ← x − γ_t · (D_x or h)                                    (the shared outer update)
//! ```
//!
//! MA-SOBA's box tracks `z = −v` with `D_z = H z − ∇_y f` and `D_x = ∇_x f − ∇²_xy g·z`:
//! the same arithmetic. SABA replaces each of the five oracle outputs by its SAGA estimate
//! over per-batch tables ([`crate::algo::stochastic::Saga`]) and uses constant steps.
//! These methods need an outer step far below the inner one (spec §7.8): divide the
//! schedule (`Schedule::divided_by`).

use crate::algo::stochastic::{MovingAverage, Saga, SagaTables, averaged, grow_both, single_loop_diagnostics};
use crate::error::Error;
use crate::problem::{Batch, Checked, Problem};
use crate::run::{Adjoint, Diagnostics, Solver};
use crate::sample::{BatchSource, Minibatches};
use crate::scalar::Real;
use crate::schedule::Schedule;

/// Configuration of SOBA, SABA and MA-SOBA.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct SobaConfig<T> {
    /// Step `ρ_t` of `y`.
    pub lower_step: Schedule<T>,
    /// Step `ρ'_t` of `v`.
    pub adjoint_step: Schedule<T>,
    /// MA-SOBA's moving average of the upper direction (`None`: plain SOBA / SABA).
    pub average: Option<MovingAverage<T>>,
}

impl<T: Real> Default for SobaConfig<T> {
    /// SOBA with benchopt's defaults: `ρ_t = 0.1 / √(t+1)` for `y` and `v`.
    fn default() -> Self {
        SobaConfig::soba(Schedule::Decay {
            c: T::from_f64(0.1),
            exponent: T::from_f64(0.5),
        })
    }
}

impl<T: Real> SobaConfig<T> {
    /// Halves the steps of `y` and `v` ([`Solver::shorten_steps`]).
    fn halve_steps(&mut self) -> bool {
        self.lower_step = self.lower_step.divided_by(T::from_f64(2.0));
        self.adjoint_step = self.adjoint_step.divided_by(T::from_f64(2.0));
        true
    }

    /// SOBA: one schedule for `y` and `v`.
    pub fn soba(step: Schedule<T>) -> Self {
        SobaConfig {
            lower_step: step,
            adjoint_step: step,
            average: None,
        }
    }

    /// SABA: constant step `rho` for `y` and `v` (benchopt default 0.1).
    pub fn saba(rho: T) -> Self {
        Self::soba(Schedule::Constant(rho))
    }

    /// MA-SOBA: constant step `rho` for `y` and `v`, moving average with weight `theta`
    /// (the public implementation: `θ = 0.1`, stepping with the updated average).
    pub fn ma_soba(rho: T, theta: T) -> Self {
        SobaConfig {
            average: Some(MovingAverage::constant(theta)),
            ..Self::saba(rho)
        }
    }

    /// Checks the schedules and the averaging weight.
    pub fn validate(&self) -> Result<(), Error> {
        self.lower_step.validate("SOBA lower step ρ")?;
        self.adjoint_step.validate("SOBA adjoint step ρ'")?;
        if let Some(m) = &self.average {
            m.validate()?;
        }
        Ok(())
    }
}

/// The iterates of a single-loop method.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
struct SingleLoop<T, const DX: usize, const DY: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    v: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    average: [T; DX],
    t: u32,
}

impl<T: Real, const DX: usize, const DY: usize> SingleLoop<T, DX, DY> {
    fn new(y0: [T; DY]) -> Self {
        SingleLoop {
            y: y0,
            v: [T::ZERO; DY],
            average: [T::ZERO; DX],
            t: 0,
        }
    }

    /// One iteration through `oracles` (plain or SAGA) on batches `(ξ, ζ)`: returns the next
    /// iterates and the direction for the outer step.
    fn next<P: Problem<T, DX, DY>>(
        &self,
        config: &SobaConfig<T>,
        oracles: Checked<'_, P>,
        x: &[T; DX],
        lower: Batch,
        upper: Batch,
    ) -> Result<(Self, [T; DX]), Error> {
        config.validate()?;
        let (y, v) = (&self.y, &self.v);
        let mut d_y = [T::ZERO; DY];
        let mut d_v = [T::ZERO; DY];
        let mut d_x = [T::ZERO; DX];
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        oracles.lower_grad_hvp(x, y, v, lower, &mut d_y, &mut d_v)?;
        oracles.lower_cross(x, y, v, lower, &mut d_x)?;
        oracles.upper_grad(x, y, upper, &mut grad_x, &mut grad_y)?;
        let (rho, rho_v) = (config.lower_step.at(self.t), config.adjoint_step.at(self.t));
        let mut next = *self;
        for i in 0..DY {
            d_v[i] += grad_y[i];
            next.y[i] -= rho * d_y[i];
            next.v[i] -= rho_v * d_v[i];
        }
        for j in 0..DX {
            d_x[j] += grad_x[j];
        }
        let (direction, average) = averaged(config.average.as_ref(), self.t, &self.average, &d_x);
        next.average = average;
        next.t = self.t.saturating_add(1);
        crate::linalg::ensure_finite(&next.y, "SOBA update")?;
        crate::linalg::ensure_finite(&next.v, "SOBA update")?;
        Ok((next, direction))
    }
}

/// SOBA and MA-SOBA (see the module docs) drawing batches from `S` (a
/// [`Minibatches`] sampler, a [`crate::sample::Stream`], or [`crate::sample::FullBatch`]).
///
/// Cost per outer iteration: 1 `∇_y g`, 1 `∇²_yy g·v`, 1 `∇²_xy g·v` (one lower batch),
/// 1 upper gradient (one upper batch). State: `y`, `v`, `h` (`2·DY + DX` floats) and two
/// samplers.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: serde::Serialize, S: serde::Serialize",
        deserialize = "T: Real + serde::Deserialize<'de>, S: serde::Deserialize<'de>"
    ))
)]
pub struct Soba<T, const DX: usize, const DY: usize, S = Minibatches> {
    /// The configuration.
    pub config: SobaConfig<T>,
    state: SingleLoop<T, DX, DY>,
    lower_batches: S,
    upper_batches: S,
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Soba<T, DX, DY, S> {
    /// Starts at `y0` with `v = 0`, `h = 0`, drawing lower-level batches from `lower` and
    /// upper-level batches from `upper`.
    pub fn new(config: SobaConfig<T>, y0: [T; DY], lower: S, upper: S) -> Self {
        Soba {
            config,
            state: SingleLoop::new(y0),
            lower_batches: lower,
            upper_batches: upper,
        }
    }

    /// `v ≈ −[∇²_yy g]⁻¹ ∇_y f`.
    pub fn adjoint(&self) -> &[T; DY] {
        &self.state.v
    }

    /// Starts `v` at `v0` instead of 0.
    pub fn with_adjoint(mut self, v0: [T; DY]) -> Self {
        self.state.v = v0;
        self
    }

    /// The moving average `h` (zero without averaging).
    pub fn average(&self) -> &[T; DX] {
        &self.state.average
    }

    /// The lower-level sampler (e.g. to push batches into a stream).
    pub fn lower_batches_mut(&mut self) -> &mut S {
        &mut self.lower_batches
    }

    /// The upper-level sampler.
    pub fn upper_batches_mut(&mut self) -> &mut S {
        &mut self.upper_batches
    }
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Solver<T, DX, DY> for Soba<T, DX, DY, S> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let (mut lower, mut upper) = (self.lower_batches.clone(), self.upper_batches.clone());
        let (bl, bu) = (lower.next_batch()?, upper.next_batch()?);
        let (next, direction) = self
            .state
            .next(&self.config, Checked::new(problem, "SOBA"), x, bl, bu)?;
        self.state = next;
        self.lower_batches = lower;
        self.upper_batches = upper;
        *h = direction;
        Ok(single_loop_diagnostics())
    }

    fn lower(&self) -> &[T; DY] {
        &self.state.y
    }

    /// The warm-started `v = −u`: the driver holds `x` until its full-batch residual has
    /// caught up, and its stalling there is what asks for larger batches.
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Negated(&self.state.v))
    }

    /// Doubles both levels' minibatches.
    fn reduce_noise(&mut self) -> bool {
        grow_both(&mut self.lower_batches, &mut self.upper_batches)
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }
}

/// SABA: SOBA over SAGA estimates, with tables for at most `NI` lower-level and `NO`
/// upper-level minibatches (spec §3.9). With a moving average in the configuration this is
/// MA-SABA.
///
/// Memory: the iterates (`2·DY + DX`) plus `NI·(2·DY + DX) + NO·(DY + DX)` table floats
/// and five mean rows; an outer step works on a copy of the tables (committed only when
/// the step succeeds), so the stack needs the tables once more.
///
/// ```
/// use bilevel::algo::soba::{Saba, SobaConfig};
/// use bilevel::problem::{Counted, Problem};
/// use bilevel::problems::FiniteSum;
/// use bilevel::run::{step, Outer};
/// use bilevel::sample::{Minibatches, Order};
/// // 12 samples in batches of 4: three table rows per level.
/// let p = FiniteSum::<f64, 2, 3, 12>::random(1, 5.0, 0.2, 0.2).unwrap();
/// let q = p.mean();
/// let [lower, upper] = Minibatches::for_levels(p.samples(), 4, Order::Shuffled, 7).unwrap();
/// let rho = 0.5 / q.lower_lipschitz();
/// let mut saba = Saba::<f64, 2, 3, 3, 3>::new(SobaConfig::saba(rho), [0.0; 3], lower, upper).unwrap();
/// let outer = Outer::constant(0.05 / q.hypergradient_lipschitz().unwrap());
/// let (counted, mut x) = (Counted::new(&p), [0.0; 2]);
/// for t in 0..20_000 {
///     step(&mut saba, &counted, &mut x, &outer, t).unwrap();
/// }
/// // Variance reduction: the minibatch method converges to the exact solution.
/// assert!(bilevel::linalg::dist(&x, &q.solution().unwrap()) < 1e-8);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct Saba<T, const DX: usize, const DY: usize, const NI: usize, const NO: usize> {
    /// The configuration.
    pub config: SobaConfig<T>,
    state: SingleLoop<T, DX, DY>,
    lower_batches: Minibatches,
    upper_batches: Minibatches,
    tables: SagaTables<T, DX, DY, NI, NO>,
}

impl<T: Real, const DX: usize, const DY: usize, const NI: usize, const NO: usize> Saba<T, DX, DY, NI, NO> {
    /// Starts at `y0` with `v = 0` and zero tables. [`Error::Capacity`] when the samplers
    /// have more minibatches than the tables have rows.
    pub fn new(config: SobaConfig<T>, y0: [T; DY], lower: Minibatches, upper: Minibatches) -> Result<Self, Error> {
        Ok(Saba {
            config,
            state: SingleLoop::new(y0),
            tables: SagaTables::new((lower.batches(), upper.batches()))?,
            lower_batches: lower,
            upper_batches: upper,
        })
    }

    /// `v ≈ −[∇²_yy g]⁻¹ ∇_y f`.
    pub fn adjoint(&self) -> &[T; DY] {
        &self.state.v
    }
}

impl<T: Real, const DX: usize, const DY: usize, const NI: usize, const NO: usize> Solver<T, DX, DY>
    for Saba<T, DX, DY, NI, NO>
{
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let (mut lower, mut upper) = (self.lower_batches.clone(), self.upper_batches.clone());
        let (bl, bu) = (lower.next_batch()?, upper.next_batch()?);
        let saga = Saga::new(problem, self.tables.clone());
        let (next, direction) = self.state.next(&self.config, Checked::new(&saga, "SABA"), x, bl, bu)?;
        self.tables = saga.into_tables();
        self.state = next;
        self.lower_batches = lower;
        self.upper_batches = upper;
        *h = direction;
        Ok(single_loop_diagnostics())
    }

    fn lower(&self) -> &[T; DY] {
        &self.state.y
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::registry::{
    BATCH_SIZE, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, SAGA_BATCHES, Setting, Settings, Start,
};

const RHO: Setting = Setting::lower_step("rho", "step ρ of y and of the adjoint (≤ 1/L)");
const THETA: Setting = Setting::fraction("theta", "weight θ of the new direction in the moving average", 0.1);

/// SOBA.
pub struct SobaMethod;
/// SABA with tables of [`SAGA_BATCHES`] rows.
pub struct SabaMethod;
/// MA-SOBA.
pub struct MaSobaMethod;

impl MethodSpec for SobaMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "soba",
        family: Family::Soba,
        summary: "single loop: one SGD step on y and on the adjoint per outer step; cheapest step",
        estimates: Estimates::GrowingBatch,
        settings: &[LOWER_STEP, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Soba<T, DX, DY, Minibatches>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = SobaConfig::soba(Schedule::Constant(s.real(&LOWER_STEP)));
        c.validate()?;
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), None)?;
        Ok(Soba::new(c, start.y0, lower, upper))
    }
}

impl MethodSpec for SabaMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "saba",
        family: Family::Soba,
        summary: "SOBA with SAGA variance reduction: converges with constant steps",
        estimates: Estimates::VarianceReduced,
        settings: &[RHO, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Saba<T, DX, DY, SAGA_BATCHES, SAGA_BATCHES>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = SobaConfig::saba(s.real(&RHO));
        c.validate()?;
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), Some(SAGA_BATCHES))?;
        let solver = Saba::<T, DX, DY, SAGA_BATCHES, SAGA_BATCHES>::new(c, start.y0, lower, upper)?;
        Ok(solver)
    }
}

impl MethodSpec for MaSobaMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "ma-soba",
        family: Family::Soba,
        summary: "SOBA with a moving average of the hypergradient",
        estimates: Estimates::GrowingBatch,
        settings: &[RHO, THETA, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Soba<T, DX, DY, Minibatches>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = SobaConfig::ma_soba(s.real(&RHO), s.real(&THETA));
        c.validate()?;
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), None)?;
        Ok(Soba::new(c, start.y0, lower, upper))
    }
}
