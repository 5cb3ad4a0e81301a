//! NSBO — the stochastic Newton-based methods of Dong, Yang, Yao, Zhang (ICML 2025; spec
//! §3.2): NSBO-SGD, NSBO-SAGA and MA-NSBO-SAGA. Each outer iteration is one NBO-GD step
//! ([`crate::algo::nbo::newton_step`]) on minibatches:
//!
//! ```text
//! draw lower batches ξ_g, ξ_J and upper batches ζ_rhs, ζ_x
//! H·[v, u] = [∇_y g(x, y_k; ξ_g), ∇_y f(x, y_k; ζ_rhs)] by T + 1 gradient steps with step
//!     β_k, v from 0, u warm from u_k; each step's fused product ∇²_yy g(x, y_k; ξ_t)·[v, u]
//!     on a fresh lower batch ξ_t
//! y_{k+1} = y_k − v,   u_{k+1} = u
//! D_x = ∇_x f(x, y_{k+1}; ζ_x) − ∇²_xy g(x, y_{k+1}; ξ_J)·u_{k+1}
//! ```
//!
//! NSBO-SAGA replaces every oracle output by its SAGA estimate over per-batch tables
//! (SABA's bookkeeping, spec §3.9, through [`crate::algo::stochastic::Saga`]): `∇_y g`,
//! `∇_y f`, `∇_x f`, `∇²_xy g·u`, and the Hessian products of the warm-started adjoint `u`
//! (the second vector of each fused product, or a lone product). The Newton vector `v`
//! restarts from 0 every iteration and shrinks with `∇_y g`, so its products pass through
//! as plain minibatch products. MA-NSBO-SAGA (and MA-NSBO-SGD) add MA-SOBA's moving
//! average on `D_x`.

use crate::algo::nbo::{NboBatches, NboConfig, NewtonStep, newton_step};
use crate::algo::stochastic::{MovingAverage, Saga, SagaTables, SampledHessian, averaged, grow_both};
use crate::error::{Error, ensure};
use crate::linsolve::SolveStatus;
use crate::problem::{Checked, Problem};
use crate::run::{Adjoint, Diagnostics, Solver};
use crate::sample::{BatchSource, Minibatches};
use crate::scalar::Real;
use crate::schedule::Schedule;

/// Configuration of NSBO-SGD / NSBO-SAGA.
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
pub struct NsboConfig<T> {
    /// Step `β_k` of the inner gradient steps on both systems (`≤ 1/L`).
    pub step: Schedule<T>,
    /// `T`: each outer iteration takes `T + 1` inner steps. Default 1.
    pub steps: u32,
    /// Moving average of the upper direction (MA-NSBO); `None` by default.
    pub average: Option<MovingAverage<T>>,
}

impl<T: Real> Default for NsboConfig<T> {
    /// `β = 0.1` constant, `T = 1`, no averaging.
    fn default() -> Self {
        NsboConfig::constant(T::from_f64(0.1), 1)
    }
}

impl<T: Real> NsboConfig<T> {
    /// Halves `β` ([`Solver::shorten_steps`]).
    fn halve_steps(&mut self) -> bool {
        self.step = self.step.divided_by(T::from_f64(2.0));
        true
    }

    /// Constant inner step `beta`, `steps + 1` inner steps, no averaging.
    pub fn constant(beta: T, steps: u32) -> Self {
        NsboConfig {
            step: Schedule::Constant(beta),
            steps,
            average: None,
        }
    }

    /// The NBO-GD configuration of iteration `k`. The tolerance is 0: a residual measured
    /// on one minibatch says nothing about convergence, so the inner steps run to their
    /// budget (and a system stops early only on an exactly zero right-hand side).
    fn newton(&self, k: u32) -> NboConfig<T> {
        NboConfig {
            tolerance: T::ZERO,
            ..NboConfig::gradient_descent(self.step.at(k), self.steps)
        }
    }

    /// Checks the schedule, the step count and the averaging weight.
    pub fn validate(&self) -> Result<(), Error> {
        self.step.validate("NSBO step β")?;
        ensure(self.steps < u32::MAX, "NSBO steps T", "< u32::MAX")?;
        if let Some(m) = &self.average {
            m.validate()?;
        }
        Ok(())
    }
}

/// The iterates of NSBO.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
struct Iterates<T, const DX: usize, const DY: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    average: [T; DX],
    k: u32,
}

impl<T: Real, const DX: usize, const DY: usize> Iterates<T, DX, DY> {
    /// One NSBO step: batches from `lower`/`upper`, every oracle through `oracles` (plain
    /// or SAGA), Hessian products with fresh lower batches.
    fn next<Q, S>(
        &self,
        config: &NsboConfig<T>,
        oracles: Checked<'_, Q>,
        x: &[T; DX],
        lower: &mut S,
        upper: &mut S,
    ) -> Result<(Self, [T; DX], Diagnostics), Error>
    where
        Q: Problem<T, DX, DY>,
        S: BatchSource,
    {
        config.validate()?;
        let batches = NboBatches {
            lower_grad: lower.next_batch()?,
            upper_grad_rhs: upper.next_batch()?,
            upper_grad: upper.next_batch()?,
            cross: lower.next_batch()?,
        };
        let hessian = SampledHessian::new(oracles, x, &self.y, lower);
        let NewtonStep {
            y,
            u,
            hypergradient,
            solves,
        } = newton_step(oracles, &hessian, x, &self.y, &self.u, &config.newton(self.k), &batches)?;
        let (direction, average) = averaged(config.average.as_ref(), self.k, &self.average, &hypergradient);
        let next = Iterates {
            y,
            u,
            average,
            k: self.k.saturating_add(1),
        };
        let diagnostics = Diagnostics {
            inner_steps: solves[0].steps,
            linear_steps: solves[1].steps,
            solves_unconverged: solves.iter().filter(|s| s.status == SolveStatus::Budget).count() as u32,
            ..Diagnostics::default()
        };
        Ok((next, direction, diagnostics))
    }
}

/// NSBO-SGD (and MA-NSBO-SGD with an average in the configuration): NBO-GD on
/// minibatches from `S`.
///
/// Cost per outer iteration: 1 `∇_y g`, 2 upper gradients, 1 cross product, and one fused
/// Hessian-vector call per inner step (the first a single product while `v = 0`), each on
/// its own lower batch. State: `y`, `u`, `h` (`2·DY + DX` floats) and two samplers.
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
pub struct Nsbo<T, const DX: usize, const DY: usize, S = Minibatches> {
    /// The configuration.
    pub config: NsboConfig<T>,
    state: Iterates<T, DX, DY>,
    lower_batches: S,
    upper_batches: S,
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Nsbo<T, DX, DY, S> {
    /// Starts at `y0` with `u = 0`, drawing batches from `lower` and `upper`.
    pub fn new(config: NsboConfig<T>, y0: [T; DY], lower: S, upper: S) -> Self {
        Nsbo {
            config,
            state: Iterates {
                y: y0,
                u: [T::ZERO; DY],
                average: [T::ZERO; DX],
                k: 0,
            },
            lower_batches: lower,
            upper_batches: upper,
        }
    }

    /// Starts the adjoint at `u0` instead of 0.
    pub fn with_adjoint(mut self, u0: [T; DY]) -> Self {
        self.state.u = u0;
        self
    }

    /// The adjoint `u ≈ [∇²_yy g]⁻¹ ∇_y f`.
    pub fn adjoint(&self) -> &[T; DY] {
        &self.state.u
    }

    /// The minibatch sources, lower level first.
    pub fn sources(&self) -> (&S, &S) {
        (&self.lower_batches, &self.upper_batches)
    }

    /// The minibatch sources, lower level first, to feed them between steps: with
    /// [`Stream`](crate::sample::Stream) sources the caller pushes each minibatch as it
    /// arrives, and a step draws them in arrival order (`T + 3` lower and 2 upper batches
    /// per outer iteration).
    pub fn sources_mut(&mut self) -> (&mut S, &mut S) {
        (&mut self.lower_batches, &mut self.upper_batches)
    }
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Solver<T, DX, DY> for Nsbo<T, DX, DY, S> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let (mut lower, mut upper) = (self.lower_batches.clone(), self.upper_batches.clone());
        let oracles = Checked::new(problem, "NSBO-SGD");
        let (next, direction, diagnostics) = self.state.next(&self.config, oracles, x, &mut lower, &mut upper)?;
        self.state = next;
        self.lower_batches = lower;
        self.upper_batches = upper;
        *h = direction;
        Ok(diagnostics)
    }

    fn lower(&self) -> &[T; DY] {
        &self.state.y
    }

    /// The warm-started `u`, as for NSBO-SAGA: its residual stalling at a held `x` is what
    /// asks for larger batches.
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.state.u))
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }

    /// Doubles both levels' minibatches.
    fn reduce_noise(&mut self) -> bool {
        grow_both(&mut self.lower_batches, &mut self.upper_batches)
    }
}

/// NSBO-SAGA (MA-NSBO-SAGA with an average in the configuration), with SAGA tables for at
/// most `NI` lower-level and `NO` upper-level minibatches. Memory as
/// [`crate::algo::soba::Saba`]: the iterates plus `NI·(2·DY + DX) + NO·(DY + DX)` table
/// floats, and a working copy of the tables on the stack during a step.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct NsboSaga<T, const DX: usize, const DY: usize, const NI: usize, const NO: usize> {
    /// The configuration.
    pub config: NsboConfig<T>,
    state: Iterates<T, DX, DY>,
    lower_batches: Minibatches,
    upper_batches: Minibatches,
    tables: SagaTables<T, DX, DY, NI, NO>,
}

impl<T: Real, const DX: usize, const DY: usize, const NI: usize, const NO: usize> NsboSaga<T, DX, DY, NI, NO> {
    /// Starts at `y0` with `u = 0` and zero tables; [`Error::Capacity`] when the samplers
    /// have more minibatches than the tables have rows.
    pub fn new(config: NsboConfig<T>, y0: [T; DY], lower: Minibatches, upper: Minibatches) -> Result<Self, Error> {
        Ok(NsboSaga {
            config,
            state: Iterates {
                y: y0,
                u: [T::ZERO; DY],
                average: [T::ZERO; DX],
                k: 0,
            },
            tables: SagaTables::new((lower.batches(), upper.batches()))?,
            lower_batches: lower,
            upper_batches: upper,
        })
    }

    /// The adjoint `u ≈ [∇²_yy g]⁻¹ ∇_y f`.
    pub fn adjoint(&self) -> &[T; DY] {
        &self.state.u
    }
}

impl<T: Real, const DX: usize, const DY: usize, const NI: usize, const NO: usize> Solver<T, DX, DY>
    for NsboSaga<T, DX, DY, NI, NO>
{
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let (mut lower, mut upper) = (self.lower_batches.clone(), self.upper_batches.clone());
        let saga = Saga::new(problem, self.tables.clone());
        let oracles = Checked::new(&saga, "NSBO-SAGA");
        let (next, direction, diagnostics) = self.state.next(&self.config, oracles, x, &mut lower, &mut upper)?;
        self.tables = saga.into_tables();
        self.state = next;
        self.lower_batches = lower;
        self.upper_batches = upper;
        *h = direction;
        Ok(diagnostics)
    }

    fn lower(&self) -> &[T; DY] {
        &self.state.y
    }

    /// The warm-started `u`: at a held `x` its SAGA steps make it exact, so the driver may
    /// wait for it.
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.state.u))
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::algo::nbo::STEPS;
use crate::registry::{
    BATCH_SIZE, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, SAGA_BATCHES, Setting, Settings, Start,
};

const THETA: Setting = Setting::fraction("theta", "weight θ of the new direction in the moving average", 0.1);

/// NSBO-SGD.
pub struct NsboSgdMethod;
/// NSBO-SAGA with tables of [`SAGA_BATCHES`] rows.
pub struct NsboSagaMethod;
/// MA-NSBO-SAGA.
pub struct MaNsboSagaMethod;

fn saga<T: Real, const DX: usize, const DY: usize>(
    c: NsboConfig<T>,
    s: &Settings,
    start: &Start<T, DY>,
) -> Result<NsboSaga<T, DX, DY, SAGA_BATCHES, SAGA_BATCHES>, Error> {
    c.validate()?;
    let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), Some(SAGA_BATCHES))?;
    let solver = NsboSaga::<T, DX, DY, SAGA_BATCHES, SAGA_BATCHES>::new(c, start.y0, lower, upper)?;
    Ok(solver)
}

impl MethodSpec for NsboSgdMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "nsbo-sgd",
        family: Family::Nsbo,
        summary: "NBO on minibatches: stochastic Newton step and adjoint by SGD on a shared sampled Hessian",
        estimates: Estimates::GrowingBatch,
        settings: &[LOWER_STEP, STEPS, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Nsbo<T, DX, DY, Minibatches>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = NsboConfig::constant(s.real(&LOWER_STEP), s.count(&STEPS));
        c.validate()?;
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), None)?;
        Ok(Nsbo::new(c, start.y0, lower, upper))
    }
}

impl MethodSpec for NsboSagaMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "nsbo-saga",
        family: Family::Nsbo,
        summary: "NSBO with SAGA variance reduction of every oracle (tables of one row per minibatch)",
        estimates: Estimates::VarianceReduced,
        settings: &[LOWER_STEP, STEPS, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = NsboSaga<T, DX, DY, SAGA_BATCHES, SAGA_BATCHES>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        saga(NsboConfig::constant(s.real(&LOWER_STEP), s.count(&STEPS)), s, start)
    }
}

impl MethodSpec for MaNsboSagaMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "ma-nsbo-saga",
        family: Family::Nsbo,
        summary: "NSBO-SAGA with a moving average of the hypergradient",
        estimates: Estimates::VarianceReduced,
        settings: &[LOWER_STEP, STEPS, THETA, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = NsboSaga<T, DX, DY, SAGA_BATCHES, SAGA_BATCHES>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = NsboConfig {
            average: Some(MovingAverage::constant(s.real(&THETA))),
            ..NsboConfig::constant(s.real(&LOWER_STEP), s.count(&STEPS))
        };
        saga(c, s, start)
    }
}
