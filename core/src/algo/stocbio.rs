//! stocBiO — stochastic AID with a Neumann-series adjoint (Ji, Yang, Liang; ICML 2021;
//! spec §3.11). One outer iteration `k`:
//!
//! ```text
//! repeat D:  y ← y − α_k ∇_y g(x, y; S_t)                     (warm-started SGD, fresh S_t)
//! b ← ∇_y f(x, y; D_F);  a ← ∇_x f(x, y; D_F)
//! u ← η Σ_{q=0}^{Q} Π_{j≤q} (I − η ∇²_yy g(x, y; B_j)) b      (fresh B_j for every product)
//! h ← a − ∇²_xy g(x, y; D_G)·u
//! ```
//!
//! This is the paper's estimator with the leading `η` and the `q = 0` term (the shared
//! [`crate::linsolve::neumann`] on a [`SampledHessian`]), not the original repository's
//! accumulation, which rescales `u` by up to `1/η` along each eigen-direction (spec §7.2,
//! §7.12). With independent batches its expectation is the deterministic truncated series.
//! `u` is not warm-started.
//!
//! Under the driver's inner tracking (the default) stocBiO is a growing-batch method: it
//! shows the driver its last `u`, so a held step measures both residuals at the full batch.
//! The minibatches double when sampling noise stops the residuals from falling
//! ([`Solver::reduce_noise`]); once they hold the whole data set the series deepens while `u`
//! is short ([`Solver::deepen_adjoint`]: a longer series of sampled products only adds
//! work, not accuracy, while the noise is what limits `u`). The method is then AID-Neumann
//! on the whole data set, which converges. Held steps between estimates take the `D` lower
//! steps alone.

use crate::algo::aid::MAX_NEUMANN_TERMS;
use crate::algo::stochastic::grow_both;
use crate::algo::stochastic::{SampledHessian, stochastic_gradient_descent};
use crate::error::{Error, ensure};
use crate::linsolve::{SolveStatus, neumann};
use crate::problem::{Checked, Problem, implicit_hypergradient};
use crate::run::{Adjoint, Bias, Deepening, Diagnostics, Solver, deepen_count};
use crate::sample::{BatchSource, Minibatches};
use crate::scalar::Real;
use crate::schedule::Schedule;

/// Configuration of stocBiO.
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
pub struct StocBioConfig<T> {
    /// Lower-level SGD step `α_k` (`≤ 1/L`).
    pub lower_step: Schedule<T>,
    /// Lower-level SGD steps `D` per outer iteration (≥ 1).
    pub lower_steps: u32,
    /// Neumann step `η` (`< 2/L`; a growing series is an error).
    pub neumann_step: T,
    /// Neumann products `Q`.
    pub neumann_terms: u32,
}

impl<T: Real> Default for StocBioConfig<T> {
    /// benchopt's defaults: `α = η = 0.1` constant, `D = Q = 10`.
    fn default() -> Self {
        let step = T::from_f64(0.1);
        StocBioConfig {
            lower_step: Schedule::Constant(step),
            lower_steps: 10,
            neumann_step: step,
            neumann_terms: 10,
        }
    }
}

impl<T: Real> StocBioConfig<T> {
    /// Checks the steps and counts.
    pub fn validate(&self) -> Result<(), Error> {
        self.lower_step.validate("stocBiO lower step α")?;
        ensure(self.lower_steps >= 1, "stocBiO lower steps D", "≥ 1")?;
        ensure(
            self.neumann_step.is_finite() && self.neumann_step > T::ZERO,
            "stocBiO Neumann step η",
            "finite and > 0",
        )
    }

    /// Halves the lower-level and Neumann steps.
    fn halve_steps(&mut self) -> bool {
        self.lower_step = self.lower_step.divided_by(T::from_f64(2.0));
        self.neumann_step /= T::from_f64(2.0);
        true
    }
}

/// stocBiO (see the module docs) drawing batches from `S`.
///
/// Cost per outer iteration: `D` lower gradients, 1 upper gradient, `Q` Hessian-vector
/// products, 1 cross product, each on its own batch. State: `y`, the last `u` (for the
/// driver's residual test) and two samplers; the Neumann series needs `2·DY` floats of work
/// space.
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
pub struct StocBio<T, const DY: usize, S = Minibatches> {
    /// The configuration.
    pub config: StocBioConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
    k: u32,
    /// Both samplers hold the whole data set: no noise left to remove.
    full_batches: bool,
    lower_batches: S,
    upper_batches: S,
}

impl<T: Real, const DY: usize, S: BatchSource + Clone> StocBio<T, DY, S> {
    /// Starts at `y0`, drawing batches from `lower` and `upper`.
    pub fn new(config: StocBioConfig<T>, y0: [T; DY], lower: S, upper: S) -> Self {
        StocBio {
            config,
            y: y0,
            u: [T::ZERO; DY],
            k: 0,
            full_batches: false,
            lower_batches: lower,
            upper_batches: upper,
        }
    }
}

impl<T: Real, const DY: usize, S: BatchSource + Clone> StocBio<T, DY, S> {
    /// The `D` lower-level SGD steps from `y` at `x`, on copies: the new `y` and the lower
    /// sampler after them (the caller commits them once nothing can fail).
    fn lower_steps<P: Problem<T, DX, DY>, const DX: usize>(
        &self,
        oracles: Checked<'_, P>,
        x: &[T; DX],
    ) -> Result<([T; DY], S), Error> {
        self.config.validate()?;
        let mut lower = self.lower_batches.clone();
        let mut y = self.y;
        let alpha = self.config.lower_step.at(self.k);
        stochastic_gradient_descent(oracles, x, &mut y, alpha, self.config.lower_steps, &mut lower)?;
        Ok((y, lower))
    }
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Solver<T, DX, DY> for StocBio<T, DY, S> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let oracles = Checked::new(problem, "stocBiO");
        let (y, mut lower) = self.lower_steps(oracles, x)?;
        let mut upper = self.upper_batches.clone();
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        oracles.upper_grad(x, &y, upper.next_batch()?, &mut grad_x, &mut grad_y)?;
        let mut u = [T::ZERO; DY];
        let solve = {
            let hessian = SampledHessian::new(oracles, x, &y, &mut lower);
            neumann(
                &hessian,
                &grad_y,
                &mut u,
                self.config.neumann_step,
                self.config.neumann_terms,
                T::ZERO,
            )?
        };
        if solve.status == SolveStatus::Diverged {
            return Err(Error::Breakdown {
                stage: "stocBiO Neumann series diverged (step η above 2/L)",
            });
        }
        implicit_hypergradient(&oracles, x, &y, &u, lower.next_batch()?, &mut grad_x)?;
        self.y = y;
        self.u = u;
        self.k = self.k.saturating_add(1);
        self.lower_batches = lower;
        self.upper_batches = upper;
        *h = grad_x;
        Ok(Diagnostics {
            inner_steps: self.config.lower_steps,
            linear_steps: solve.steps,
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The Neumann series' terms.
    fn bias(&self) -> Bias {
        Bias::Truncation
    }

    /// The `D` lower-level steps alone: a `u` built now would be rebuilt at the next call.
    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        let (y, lower) = self.lower_steps(Checked::new(problem, "stocBiO"), x)?;
        self.y = y;
        self.lower_batches = lower;
        Ok(Diagnostics {
            inner_steps: self.config.lower_steps,
            ..Diagnostics::default()
        })
    }

    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.u))
    }

    /// Doubles the Neumann terms `Q` once the batches are full; before, the noise is
    /// removed first ([`Deepening::Repeat`]: a hold that then stalls grows the batches).
    fn deepen_adjoint(&mut self) -> Deepening {
        if self.full_batches {
            deepen_count(&mut self.config.neumann_terms, MAX_NEUMANN_TERMS)
        } else {
            Deepening::Repeat
        }
    }

    /// Doubles both levels' minibatches.
    fn reduce_noise(&mut self) -> bool {
        let grown = grow_both(&mut self.lower_batches, &mut self.upper_batches);
        self.full_batches = !grown;
        grown
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }
}

// ---------------------------------------------------------------------------------------
// Registry entry.

use crate::registry::{BATCH_SIZE, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start};

const LOWER_STEPS: Setting = Setting::count("lower_steps", "lower-level SGD steps D per outer step", 1, u32::MAX, 10);
const NEUMANN_STEP: Setting = Setting::lower_step("neumann_step", "step η of the Neumann series (< 2/L)");
const NEUMANN_TERMS: Setting = Setting::count("neumann_terms", "terms Q of the Neumann series", 0, u32::MAX, 10);

/// stocBiO.
pub struct StocBioMethod;

impl MethodSpec for StocBioMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "stocbio",
        family: Family::StocBio,
        summary: "D lower SGD steps, then the adjoint by a Neumann series of sampled Hessian products",
        estimates: Estimates::GrowingBatch,
        settings: &[LOWER_STEP, LOWER_STEPS, NEUMANN_STEP, NEUMANN_TERMS, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = StocBio<T, DY, Minibatches>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = StocBioConfig {
            lower_step: Schedule::Constant(s.real(&LOWER_STEP)),
            lower_steps: s.count(&LOWER_STEPS),
            neumann_step: s.real(&NEUMANN_STEP),
            neumann_terms: s.count(&NEUMANN_TERMS),
        };
        c.validate()?;
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), None)?;
        Ok(StocBio::new(c, start.y0, lower, upper))
    }
}
