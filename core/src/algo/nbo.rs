//! NBO — Newton-based bilevel optimization (Dong, Yang, Yao, Zhang; ICML 2025), the
//! deterministic variants NBO-GD and NBO-CG (spec §3.2).
//!
//! At `(x_k, y_k)` the Newton step of the lower level and the adjoint share one Hessian
//! `H = ∇²_yy g(x_k, y_k)`. NBO solves both systems inexactly, in lockstep,
//!
//! ```text
//! H·[v, u] = [∇_y g(x_k, y_k), ∇_y f(x_k, y_k)]      v from 0, u warm-started from u_k
//! y_{k+1} = y_k − v,   u_{k+1} = u
//! D_x = ∇_x f(x_k, y_{k+1}) − ∇²_xy g(x_k, y_{k+1})·u_{k+1}      (Gauss–Seidel point)
//! ```
//!
//! NBO-GD runs `T + 1` gradient steps with step `β` on both quadratics (so `T = 0` is
//! SOBA's `(y, u)` update), NBO-CG runs `T` conjugate-gradient steps; each step is one
//! fused Hessian-vector call for both vectors. The right-hand sides are taken at the
//! *current* `y_k`, so a single step from a far-away `y` is not exact even on a quadratic:
//! NBO tracks `y` and `u` across outer iterations.
//!
//! [`newton_step`] is the building block (minibatches and the Hessian operator are
//! parameters, for the stochastic NSBO variants); [`Nbo`] is the deterministic solver.

use crate::error::{Error, ensure};
use crate::linalg;
use crate::linsolve::{LowerHessian, Solve, SolveStatus, SymmetricOperator, conjugate_gradient2, gradient_descent2};
use crate::problem::{Batch, Checked, Problem, implicit_hypergradient};
use crate::run::{Adjoint, Diagnostics, Solver};
use crate::scalar::Real;

/// How NBO solves the joint system `H·[v, u] = [∇_y g, ∇_y f]`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum NewtonSolver<T> {
    /// NBO-GD: `T + 1` gradient steps `w ← w − β(H w − b)` on both systems.
    /// Converges for `0 < β < 2/L`; `β ≤ 1/L` is the analysed range.
    GradientDescent {
        /// Step `β`.
        step: T,
    },
    /// NBO-CG: `T` conjugate-gradient steps on both systems (`T ≥ 1`).
    ConjugateGradient,
}

/// Configuration of NBO-GD / NBO-CG.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct NboConfig<T> {
    /// The inner solver of the joint system.
    pub solver: NewtonSolver<T>,
    /// `T`: NBO-GD takes `T + 1` steps, NBO-CG `T` steps. Default 1, the paper's headline.
    pub steps: u32,
    /// A system stops early when its residual is at most `tolerance·‖b‖`. Default `ε` of
    /// `T` (the steps run to the budget in practice; this only stops iterating on
    /// roundoff).
    pub tolerance: T,
}

impl<T: Real> Default for NboConfig<T> {
    /// NBO-GD with `T = 1` and `β = 0.1` (benchopt's default step; tune it to `≤ 1/L`).
    fn default() -> Self {
        NboConfig::gradient_descent(T::from_f64(0.1), 1)
    }
}

impl<T: Real> NboConfig<T> {
    /// Halves NBO-GD's `β` ([`Solver::shorten_steps`]); NBO-CG takes no step to halve.
    fn halve_steps(&mut self) -> bool {
        match &mut self.solver {
            NewtonSolver::GradientDescent { step } => {
                *step *= T::from_f64(0.5);
                true
            }
            NewtonSolver::ConjugateGradient => false,
        }
    }

    /// Sets NBO-GD's `β` ([`Solver::set_steps`]); NBO-CG takes no step.
    fn set_steps(&mut self, to: T) -> bool {
        match &mut self.solver {
            NewtonSolver::GradientDescent { step } => {
                *step = to;
                true
            }
            NewtonSolver::ConjugateGradient => false,
        }
    }

    /// NBO-GD: `steps + 1` gradient steps with step `beta`.
    pub fn gradient_descent(beta: T, steps: u32) -> Self {
        NboConfig {
            solver: NewtonSolver::GradientDescent { step: beta },
            steps,
            tolerance: T::EPSILON,
        }
    }

    /// NBO-CG: `steps` conjugate-gradient steps.
    pub fn conjugate_gradient(steps: u32) -> Self {
        NboConfig {
            solver: NewtonSolver::ConjugateGradient,
            steps,
            tolerance: T::EPSILON,
        }
    }

    /// Checks the step size, the step count and the tolerance.
    pub fn validate(&self) -> Result<(), Error> {
        match self.solver {
            NewtonSolver::GradientDescent { step } => {
                ensure(step.is_finite() && step > T::ZERO, "NBO step β", "finite and > 0")?;
                ensure(self.steps < u32::MAX, "NBO steps T", "< u32::MAX")?;
            }
            NewtonSolver::ConjugateGradient => ensure(self.steps >= 1, "NBO steps T", "≥ 1 for NBO-CG")?,
        }
        ensure(
            self.tolerance.is_finite() && self.tolerance >= T::ZERO,
            "NBO tolerance",
            "finite and ≥ 0",
        )
    }
}

/// The minibatches of one NBO step. All [`Batch::Full`] for the deterministic method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NboBatches {
    /// `∇_y g(x_k, y_k)`, the Newton right-hand side.
    pub lower_grad: Batch,
    /// `∇_y f(x_k, y_k)`, the adjoint right-hand side.
    pub upper_grad_rhs: Batch,
    /// `∇_x f(x_k, y_{k+1})` in the hypergradient.
    pub upper_grad: Batch,
    /// `∇²_xy g(x_k, y_{k+1})·u_{k+1}` in the hypergradient.
    pub cross: Batch,
}

/// What one NBO step computed; nothing is committed by [`newton_step`] itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NewtonStep<T, const DX: usize, const DY: usize> {
    /// `y_{k+1} = y_k − v`.
    pub y: [T; DY],
    /// `u_{k+1}`.
    pub u: [T; DY],
    /// `D_x` at `(x_k, y_{k+1})` with `u_{k+1}`.
    pub hypergradient: [T; DX],
    /// How the Newton (`[0]`) and adjoint (`[1]`) solves ended.
    pub solves: [Solve<T>; 2],
}

/// One NBO step at `(x, y)` with warm adjoint `u`: the joint inexact solve on `hessian`
/// (which must be `∇²_yy g` at `(x, y)`), the Newton step, and the hypergradient at the new
/// lower iterate. A breakdown or divergence of either solve is an [`Error::Breakdown`].
#[allow(clippy::too_many_arguments)]
pub fn newton_step<P, O, T, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    hessian: &O,
    x: &[T; DX],
    y: &[T; DY],
    u: &[T; DY],
    config: &NboConfig<T>,
    batches: &NboBatches,
) -> Result<NewtonStep<T, DX, DY>, Error>
where
    P: Problem<T, DX, DY>,
    O: SymmetricOperator<T, DY> + ?Sized,
    T: Real,
{
    config.validate()?;
    let mut grad_lower = [T::ZERO; DY];
    oracles.lower_grad(x, y, batches.lower_grad, &mut grad_lower)?;
    let mut unused_x = [T::ZERO; DX];
    let mut grad_upper = [T::ZERO; DY];
    oracles.upper_grad(x, y, batches.upper_grad_rhs, &mut unused_x, &mut grad_upper)?;
    let tol = [
        config.tolerance * linalg::norm(&grad_lower),
        config.tolerance * linalg::norm(&grad_upper),
    ];
    let mut newton = [T::ZERO; DY];
    let mut adjoint = *u;
    let rhs = [&grad_lower, &grad_upper];
    let solves = match config.solver {
        NewtonSolver::GradientDescent { step } => {
            let st = gradient_descent2(
                hessian,
                rhs,
                [&mut newton, &mut adjoint],
                step,
                config.steps.saturating_add(1),
                tol,
            )?;
            if st.iter().any(|s| s.status == SolveStatus::Diverged) {
                return Err(Error::Breakdown {
                    stage: "NBO gradient descent diverged (step β above 2/L)",
                });
            }
            st
        }
        NewtonSolver::ConjugateGradient => {
            let st = conjugate_gradient2(hessian, rhs, [&mut newton, &mut adjoint], config.steps, tol)?;
            if st.iter().any(|s| s.status == SolveStatus::Breakdown) {
                return Err(Error::Breakdown {
                    stage: "NBO conjugate gradient (pᵀHp ≤ 0)",
                });
            }
            st
        }
    };
    let mut y_next = *y;
    for i in 0..DY {
        y_next[i] -= newton[i];
    }
    linalg::ensure_finite(&y_next, "NBO Newton step")?;
    let mut hypergradient = [T::ZERO; DX];
    let mut unused_y = [T::ZERO; DY];
    oracles.upper_grad(x, &y_next, batches.upper_grad, &mut hypergradient, &mut unused_y)?;
    implicit_hypergradient(&oracles, x, &y_next, &adjoint, batches.cross, &mut hypergradient)?;
    Ok(NewtonStep {
        y: y_next,
        u: adjoint,
        hypergradient,
        solves,
    })
}

/// Deterministic NBO-GD / NBO-CG. State: the lower iterate `y_k` and the adjoint `u_k`,
/// both carried across outer iterations.
///
/// Cost per outer iteration: 1 `∇_y g`, 2 upper gradients (`∇_y f` at `y_k`, `∇_x f` at
/// `y_{k+1}`), one cross product, and one fused Hessian-vector call per inner step (NBO-GD:
/// `T + 1` steps, the first one a single product since `v` starts at 0; NBO-CG: `T` steps
/// plus one product for the warm adjoint's residual).
///
/// ```
/// use bilevel::algo::nbo::{Nbo, NboConfig};
/// use bilevel::problem::Counted;
/// use bilevel::problems::Quadratic;
/// use bilevel::run::{run, Budget, Outer};
/// let q = Quadratic::<f64, 2, 4>::random(5, 10.0, 0.5);
/// let p = Counted::new(q.clone());
/// let mut nbo = Nbo::new(NboConfig::conjugate_gradient(2), [0.0; 4]);
/// let mut x = [0.0; 2];
/// let alpha = 1.0 / q.hypergradient_lipschitz().unwrap();
/// run(&mut nbo, &p, &mut x, &Outer::constant(alpha), Budget::iterations(3000), 1e-12,
///     |_, _| core::ops::ControlFlow::Continue(())).unwrap();
/// let xs = q.solution().unwrap();
/// assert!(bilevel::linalg::dist(&x, &xs) < 1e-10);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(feature = "serde", serde(bound(deserialize = "T: Real + serde::Deserialize<'de>")))]
pub struct Nbo<T, const DY: usize> {
    /// The configuration.
    pub config: NboConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
}

impl<T: Real, const DY: usize> Nbo<T, DY> {
    /// Starts at lower iterate `y0` with adjoint `u = 0`.
    pub fn new(config: NboConfig<T>, y0: [T; DY]) -> Self {
        Nbo {
            config,
            y: y0,
            u: [T::ZERO; DY],
        }
    }

    /// Starts the adjoint at `u0` instead of 0.
    pub fn with_adjoint(mut self, u0: [T; DY]) -> Self {
        self.u = u0;
        self
    }

    /// The lower iterate `y` (as [`Solver::lower`], without naming `DX`).
    pub fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The adjoint `u_k ≈ [∇²_yy g]⁻¹ ∇_y f` carried to the next iteration.
    pub fn adjoint(&self) -> &[T; DY] {
        &self.u
    }
}

impl<T: Real, const DX: usize, const DY: usize> Solver<T, DX, DY> for Nbo<T, DY> {
    /// One NBO step (see [`newton_step`]). Diagnostics: `inner_steps` and `linear_steps`
    /// are the steps of the Newton and the adjoint solve; `solves_unconverged` counts those
    /// of the two that ended on their budget.
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let oracles = Checked::new(problem, "NBO");
        let hessian = LowerHessian {
            oracles,
            x,
            y: &self.y,
            batch: Batch::Full,
        };
        let step = newton_step(
            oracles,
            &hessian,
            x,
            &self.y,
            &self.u,
            &self.config,
            &NboBatches::default(),
        )?;
        self.y = step.y;
        self.u = step.u;
        *h = step.hypergradient;
        Ok(Diagnostics {
            inner_steps: step.solves[0].steps,
            linear_steps: step.solves[1].steps,
            solves_unconverged: step.solves.iter().filter(|s| s.status == SolveStatus::Budget).count() as u32,
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.u))
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }

    fn set_steps(&mut self, step: T) -> bool {
        self.config.set_steps(step)
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::curvature::LocalSteps;
use crate::registry::{
    CURVATURE_ITERATIONS, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start,
};

pub(crate) const STEPS: Setting = Setting::count("steps", "inner steps T per outer step", 0, u32::MAX, 1);
const CG_STEPS: Setting = Setting::count("steps", "conjugate-gradient steps per outer step", 1, u32::MAX, 5);

/// NBO with gradient descent.
pub struct NboGdMethod;
/// NBO with conjugate gradient.
pub struct NboCgMethod;

fn build_nbo<T: Real, const DY: usize>(c: NboConfig<T>, start: &Start<T, DY>) -> Result<Nbo<T, DY>, Error> {
    c.validate()?;
    Ok(Nbo::new(c, start.y0))
}

impl MethodSpec for NboGdMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "nbo-gd",
        family: Family::Nbo,
        summary: "inexact Newton step and adjoint by gradient descent on one shared Hessian",
        estimates: Estimates::Tracked,
        settings: &[LOWER_STEP, STEPS, CURVATURE_ITERATIONS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = LocalSteps<Nbo<T, DY>, T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let nbo = build_nbo(NboConfig::gradient_descent(s.real(&LOWER_STEP), s.count(&STEPS)), start)?;
        Ok(LocalSteps::from_settings::<DX>(nbo, s, &[&LOWER_STEP]))
    }
}

impl MethodSpec for NboCgMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "nbo-cg",
        family: Family::Nbo,
        summary: "inexact Newton step and adjoint by conjugate gradient on one shared Hessian: few outer steps",
        estimates: Estimates::Tracked,
        settings: &[CG_STEPS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Nbo<T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        build_nbo(NboConfig::conjugate_gradient(s.count(&CG_STEPS)), start)
    }
}
