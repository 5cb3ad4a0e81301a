//! Approximate implicit differentiation (AID): solve the lower level approximately, then the
//! adjoint system `∇²_yy g·u = ∇_y f` approximately, and step along
//! `∇_x f − ∇²_xy g·u`, everything at the new lower iterate.
//!
//! ```text
//! y ← D gradient steps y ← y − α ∇_y g(x_k, y)          (warm-started from y_{k−1})
//! b ← ∇_y f(x_k, y);  u ≈ H⁻¹ b with H = ∇²_yy g(x_k, y)
//! h ← ∇_x f(x_k, y) − ∇²_xy g(x_k, y)·u
//! ```
//!
//! The variants differ only in how `u` is obtained ([`AdjointSolver`]):
//! - **AID-CG** (Ji, Yang, Liang, ICML 2021; spec §3.4): `N` conjugate-gradient steps,
//!   warm-started from the previous `u`.
//! - **AID-Neumann / AID-TN** (spec §3.5): the truncated Neumann series
//!   `u = η Σ_{q=0}^{Q} (I − ηH)^q b`, restarted from `b` every iteration.
//! - **AmIGO-GD / AmIGO-CG** (Arbel & Mairal, ICLR 2022; spec §3.7) are this solver with a
//!   warm-started gradient-descent or CG adjoint and their own defaults: see
//!   [`crate::algo::amigo`].

use crate::error::{Error, ensure};
use crate::inner;
use crate::linalg;
use crate::linsolve::{LowerHessian, Solve, SolveStatus, conjugate_gradient, gradient_descent, neumann};
use crate::problem::{Batch, Checked, Problem, implicit_hypergradient};
use crate::run::{Adjoint, Bias, Deepening, Diagnostics, Solver, deepen_count};
use crate::scalar::Real;

/// How AID approximates the adjoint `u ≈ [∇²_yy g]⁻¹ ∇_y f`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum AdjointSolver<T> {
    /// `steps` conjugate-gradient steps (`N`); each costs one Hessian-vector product, plus
    /// one for the residual of a warm start.
    ConjugateGradient {
        /// CG steps `N` (≥ 1).
        steps: u32,
        /// Start from the previous iteration's `u` (the amortization of AID-CG and
        /// AmIGO) instead of 0.
        warm_start: bool,
    },
    /// `steps` gradient steps `u ← u − ρ(H u − b)` (AmIGO-GD), one product each.
    GradientDescent {
        /// Step `ρ` (converges for `0 < ρ < 2/L`).
        step: T,
        /// Steps `N` (≥ 1).
        steps: u32,
        /// Start from the previous iteration's `u` instead of 0.
        warm_start: bool,
    },
    /// The truncated Neumann series with `terms` products (`Q`), never warm-started.
    Neumann {
        /// Step `η` (converges for `0 < η < 2/L`; a growing series is an error).
        step: T,
        /// Terms `Q` after the first.
        terms: u32,
    },
}

/// Configuration of AID (and AmIGO).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct AidConfig<T> {
    /// Lower-level gradient step `α` (`≤ 1/L`).
    pub lower_step: T,
    /// Lower-level gradient steps `D` per outer iteration (≥ 1).
    pub lower_steps: u32,
    /// The adjoint solver.
    pub adjoint: AdjointSolver<T>,
    /// The adjoint solve stops early when its residual is at most `tolerance·‖∇_y f‖`.
    /// Default `ε` of `T` (the steps run to their budget in practice).
    pub tolerance: T,
}

impl<T: Real> Default for AidConfig<T> {
    /// AID-CG with `α = 0.1` and `D = N = 10` (the stocBiO repository's step counts;
    /// tune `α ≤ 1/L`).
    fn default() -> Self {
        AidConfig::conjugate_gradient(T::from_f64(0.1), 10, 10)
    }
}

impl<T: Real> AidConfig<T> {
    /// Halves the lower step and the adjoint's gradient or Neumann step
    /// ([`Solver::shorten_steps`]).
    fn halve_steps(&mut self) -> bool {
        let half = T::from_f64(0.5);
        self.lower_step *= half;
        match &mut self.adjoint {
            AdjointSolver::GradientDescent { step, .. } | AdjointSolver::Neumann { step, .. } => *step *= half,
            AdjointSolver::ConjugateGradient { .. } => {}
        }
        true
    }

    /// Sets the lower step and the adjoint's gradient or Neumann step ([`Solver::set_steps`]).
    fn set_steps(&mut self, to: T) -> bool {
        self.lower_step = to;
        match &mut self.adjoint {
            AdjointSolver::GradientDescent { step, .. } | AdjointSolver::Neumann { step, .. } => *step = to,
            AdjointSolver::ConjugateGradient { .. } => {}
        }
        true
    }

    /// AID-CG: `lower_steps` gradient steps with `lower_step`, then `cg_steps` warm-started
    /// CG steps on the adjoint.
    pub fn conjugate_gradient(lower_step: T, lower_steps: u32, cg_steps: u32) -> Self {
        AidConfig {
            lower_step,
            lower_steps,
            adjoint: AdjointSolver::ConjugateGradient {
                steps: cg_steps,
                warm_start: true,
            },
            tolerance: T::EPSILON,
        }
    }

    /// AID-Neumann: `lower_steps` gradient steps with `lower_step`, then the Neumann series
    /// with step `eta` and `terms` products.
    pub fn neumann(lower_step: T, lower_steps: u32, eta: T, terms: u32) -> Self {
        AidConfig {
            lower_step,
            lower_steps,
            adjoint: AdjointSolver::Neumann { step: eta, terms },
            tolerance: T::EPSILON,
        }
    }

    /// Checks step sizes and counts.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = |v: T| v.is_finite() && v > T::ZERO;
        ensure(positive(self.lower_step), "lower step α", "finite and > 0")?;
        ensure(self.lower_steps >= 1, "lower steps D", "≥ 1")?;
        match self.adjoint {
            AdjointSolver::ConjugateGradient { steps, .. } => ensure(steps >= 1, "adjoint CG steps", "≥ 1")?,
            AdjointSolver::GradientDescent { step, steps, .. } => {
                ensure(positive(step), "adjoint step", "finite and > 0")?;
                ensure(steps >= 1, "adjoint GD steps", "≥ 1")?;
            }
            AdjointSolver::Neumann { step, .. } => ensure(positive(step), "Neumann step η", "finite and > 0")?,
        }
        ensure(
            self.tolerance.is_finite() && self.tolerance >= T::ZERO,
            "adjoint tolerance",
            "finite and ≥ 0",
        )
    }
}

/// `u ≈ H⁻¹ b` by `method` at `(x, y)`, starting from `u` (used only by warm starts).
/// Breakdown and divergence become [`Error::Breakdown`].
fn solve_adjoint<P, T, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    method: &AdjointSolver<T>,
    x: &[T; DX],
    y: &[T; DY],
    b: &[T; DY],
    u: &mut [T; DY],
    tol: T,
) -> Result<Solve<T>, Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    let h = LowerHessian {
        oracles,
        x,
        y,
        batch: Batch::Full,
    };
    let s = match *method {
        AdjointSolver::ConjugateGradient { steps, warm_start } => {
            if !warm_start {
                *u = [T::ZERO; DY];
            }
            conjugate_gradient(&h, b, u, steps, tol)?
        }
        AdjointSolver::GradientDescent {
            step,
            steps,
            warm_start,
        } => {
            if !warm_start {
                *u = [T::ZERO; DY];
            }
            gradient_descent(&h, b, u, step, steps, tol)?
        }
        AdjointSolver::Neumann { step, terms } => neumann(&h, b, u, step, terms, tol)?,
    };
    match s.status {
        SolveStatus::Converged | SolveStatus::Budget => Ok(s),
        SolveStatus::Breakdown => Err(Error::Breakdown {
            stage: "adjoint conjugate gradient (pᵀHp ≤ 0)",
        }),
        SolveStatus::Diverged => Err(Error::Breakdown {
            stage: "adjoint solve diverged (step above 2/L)",
        }),
    }
}

/// AID-CG, AID-Neumann and (with [`crate::algo::amigo`]'s configurations) AmIGO. State:
/// the lower iterate `y` (warm start) and the adjoint `u` (warm start where the method
/// uses one).
///
/// Cost per outer iteration: `D` lower gradients, 1 upper gradient, 1 cross product, and
/// the adjoint solve's Hessian-vector products (CG: `N`, plus 1 for a non-zero warm start;
/// GD: `N`, minus 1 from `u = 0`; Neumann: `Q`).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(feature = "serde", serde(bound(deserialize = "T: Real + serde::Deserialize<'de>")))]
pub struct Aid<T, const DY: usize> {
    /// The configuration.
    pub config: AidConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
}

impl<T: Real, const DY: usize> Aid<T, DY> {
    /// Starts at lower iterate `y0` with adjoint `u = 0`.
    pub fn new(config: AidConfig<T>, y0: [T; DY]) -> Self {
        Aid {
            config,
            y: y0,
            u: [T::ZERO; DY],
        }
    }

    /// The lower iterate `y` (as [`Solver::lower`], without naming `DX`).
    pub fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The last adjoint `u`.
    pub fn adjoint(&self) -> &[T; DY] {
        &self.u
    }
}

impl<T: Real, const DX: usize, const DY: usize> Solver<T, DX, DY> for Aid<T, DY> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        self.config.validate()?;
        let oracles = Checked::new(problem, "AID");
        let mut y = self.y;
        inner::gradient_descent(
            oracles,
            x,
            &mut y,
            self.config.lower_step,
            self.config.lower_steps,
            Batch::Full,
        )?;
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        oracles.upper_grad(x, &y, Batch::Full, &mut grad_x, &mut grad_y)?;
        let mut u = self.u;
        let tol = self.config.tolerance * linalg::norm(&grad_y);
        let solve = solve_adjoint(oracles, &self.config.adjoint, x, &y, &grad_y, &mut u, tol)?;
        implicit_hypergradient(&oracles, x, &y, &u, Batch::Full, &mut grad_x)?;
        self.y = y;
        self.u = u;
        *h = grad_x;
        Ok(Diagnostics {
            inner_steps: self.config.lower_steps,
            linear_steps: solve.steps,
            solves_unconverged: u32::from(solve.status == SolveStatus::Budget),
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// A Neumann series is a truncation; CG and gradient descent on `u` are warm-started.
    fn bias(&self) -> Bias {
        match self.config.adjoint {
            AdjointSolver::Neumann { .. } => Bias::Truncation,
            _ => Bias::None,
        }
    }

    /// The `D` lower steps alone: the adjoint, warm-started or rebuilt, is left for the next
    /// estimate (an adjoint solved against a lagging `y` would be solved again).
    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        self.config.validate()?;
        let AidConfig {
            lower_step,
            lower_steps,
            ..
        } = self.config;
        inner::advance_by_gradient_steps(Checked::new(problem, "AID"), x, &mut self.y, lower_step, lower_steps)
    }

    /// The adjoint of the last call: warm-started by CG and gradient descent, the last
    /// truncated series for Neumann.
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.u))
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }

    fn set_steps(&mut self, step: T) -> bool {
        self.config.set_steps(step)
    }

    /// A Neumann series restarts from `∇_y f` at every call, so only more terms make it
    /// exact, up to [`MAX_NEUMANN_TERMS`]. CG and gradient descent are warm-started:
    /// repeating the call is enough.
    fn deepen_adjoint(&mut self) -> Deepening {
        match &mut self.config.adjoint {
            AdjointSolver::Neumann { terms, .. } => deepen_count(terms, MAX_NEUMANN_TERMS),
            _ => Deepening::Repeat,
        }
    }
}

/// The most terms [`Solver::deepen_adjoint`] gives a Neumann series (a million Hessian-vector
/// products per estimate: beyond, the outer loop's budget is the better stop).
pub const MAX_NEUMANN_TERMS: u32 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::curvature::LocalSteps;
use crate::registry::{
    CURVATURE_ITERATIONS, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start,
};

pub(crate) const LOWER_STEPS: Setting = Setting::count(
    "lower_steps",
    "lower-level gradient steps D per outer step",
    1,
    u32::MAX,
    10,
);
const CG_STEPS: Setting = Setting::count("cg_steps", "conjugate-gradient steps on the adjoint", 1, u32::MAX, 10);
const NEUMANN_STEP: Setting = Setting::lower_step("neumann_step", "step η of the Neumann series (< 2/L)");
const NEUMANN_TERMS: Setting = Setting::count("neumann_terms", "terms of the Neumann series", 0, u32::MAX, 50);

/// AID-CG.
pub struct AidCgMethod;
/// AID-Neumann.
pub struct AidNeumannMethod;

pub(crate) fn build_aid<T: Real, const DY: usize>(c: AidConfig<T>, start: &Start<T, DY>) -> Result<Aid<T, DY>, Error> {
    c.validate()?;
    Ok(Aid::new(c, start.y0))
}

impl MethodSpec for AidCgMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "aid-cg",
        family: Family::Aid,
        summary: "D warm-started gradient steps, then the adjoint by warm-started conjugate gradient",
        estimates: Estimates::Tracked,
        settings: &[LOWER_STEP, LOWER_STEPS, CG_STEPS, CURVATURE_ITERATIONS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = LocalSteps<Aid<T, DY>, T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = AidConfig::conjugate_gradient(s.real(&LOWER_STEP), s.count(&LOWER_STEPS), s.count(&CG_STEPS));
        Ok(LocalSteps::from_settings::<DX>(build_aid(c, start)?, s, &[&LOWER_STEP]))
    }
}

impl MethodSpec for AidNeumannMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "aid-neumann",
        family: Family::Aid,
        summary: "D warm-started gradient steps, then the adjoint by a truncated Neumann series",
        estimates: Estimates::Truncated,
        settings: &[
            LOWER_STEP,
            LOWER_STEPS,
            NEUMANN_STEP,
            NEUMANN_TERMS,
            CURVATURE_ITERATIONS,
        ],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = LocalSteps<Aid<T, DY>, T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = AidConfig::neumann(
            s.real(&LOWER_STEP),
            s.count(&LOWER_STEPS),
            s.real(&NEUMANN_STEP),
            s.count(&NEUMANN_TERMS),
        );
        Ok(LocalSteps::from_settings::<DX>(
            build_aid(c, start)?,
            s,
            &[&LOWER_STEP, &NEUMANN_STEP],
        ))
    }
}
