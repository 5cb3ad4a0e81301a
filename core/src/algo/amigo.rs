//! AmIGO — amortized implicit gradient optimization (Arbel & Mairal, ICLR 2022; spec §3.7),
//! deterministic AmIGO-GD and AmIGO-CG.
//!
//! ```text
//! repeat T:  y ← y − ρ ∇_y g(x, y)                     (warm-started y)
//! b ← ∇_y f(x, y)
//! repeat N:  u ← u − ρ_u (H u − b)                     (warm-started u; AmIGO-CG: N CG steps)
//! h ← ∇_x f(x, y) − ∇²_xy g(x, y)·u
//! ```
//!
//! This is AID ([`crate::algo::aid`]) with a warm-started gradient-descent (or CG) adjoint:
//! the warm starts of `y` and `u` *are* the amortization. Only the defaults differ, so the
//! solver is [`Aid`] and this module supplies AmIGO's configurations. The NBO paper
//! compares against AmIGO with `Q = N = 1` and `Q = N = 10` linear-system steps.

use crate::algo::aid::{AdjointSolver, Aid, AidConfig};
use crate::scalar::Real;

/// AmIGO is the AID solver with an AmIGO configuration.
pub type Amigo<T, const DY: usize> = Aid<T, DY>;

impl<T: Real> AidConfig<T> {
    /// AmIGO-GD: `lower_steps` (`T`) gradient steps on `y` and `adjoint_steps` (`N`)
    /// gradient steps on `u`, both with step `step` (`ρ = ρ_u`, as benchopt), both
    /// warm-started.
    pub fn amigo_gd(step: T, lower_steps: u32, adjoint_steps: u32) -> Self {
        AidConfig {
            lower_step: step,
            lower_steps,
            adjoint: AdjointSolver::GradientDescent {
                step,
                steps: adjoint_steps,
                warm_start: true,
            },
            tolerance: T::EPSILON,
        }
    }

    /// AmIGO-CG: `lower_steps` gradient steps with `step` on `y`, `adjoint_steps` CG steps
    /// on `u`, both warm-started (AID-CG with AmIGO's defaults).
    pub fn amigo_cg(step: T, lower_steps: u32, adjoint_steps: u32) -> Self {
        AidConfig::conjugate_gradient(step, lower_steps, adjoint_steps)
    }

    /// AmIGO-GD with benchopt's defaults: `ρ = 0.1`, `T = N = 10` (tune `ρ ≤ 1/L`).
    pub fn amigo() -> Self {
        AidConfig::amigo_gd(T::from_f64(0.1), 10, 10)
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::algo::aid::{LOWER_STEPS, build_aid};
use crate::curvature::LocalSteps;
use crate::error::Error;
use crate::registry::{
    CURVATURE_ITERATIONS, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start,
};

const ADJOINT_STEPS: Setting = Setting::count("adjoint_steps", "warm-started steps N on the adjoint", 1, u32::MAX, 10);

/// AmIGO-GD.
pub struct AmigoGdMethod;
/// AmIGO-CG.
pub struct AmigoCgMethod;

impl MethodSpec for AmigoGdMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "amigo-gd",
        family: Family::Aid,
        summary: "amortized implicit gradient: warm-started gradient descent on y and on the adjoint",
        estimates: Estimates::Tracked,
        settings: &[LOWER_STEP, LOWER_STEPS, ADJOINT_STEPS, CURVATURE_ITERATIONS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = LocalSteps<Aid<T, DY>, T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = AidConfig::amigo_gd(s.real(&LOWER_STEP), s.count(&LOWER_STEPS), s.count(&ADJOINT_STEPS));
        Ok(LocalSteps::from_settings::<DX>(build_aid(c, start)?, s, &[&LOWER_STEP]))
    }
}

impl MethodSpec for AmigoCgMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "amigo-cg",
        family: Family::Aid,
        summary: "amortized implicit gradient with warm-started conjugate gradient on the adjoint",
        estimates: Estimates::Tracked,
        settings: &[LOWER_STEP, LOWER_STEPS, ADJOINT_STEPS, CURVATURE_ITERATIONS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = LocalSteps<Aid<T, DY>, T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = AidConfig::amigo_cg(s.real(&LOWER_STEP), s.count(&LOWER_STEPS), s.count(&ADJOINT_STEPS));
        Ok(LocalSteps::from_settings::<DX>(build_aid(c, start)?, s, &[&LOWER_STEP]))
    }
}
