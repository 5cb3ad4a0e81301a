//! SHINE — sharing the inverse estimate from the forward pass (Ramzi, Mannel, Bai, Starck,
//! Ciuciu, Moreau; ICLR 2022), spec §3.13.
//!
//! ```text
//! lower level:  L-BFGS on g(x_k, ·) from y_k (warm) until ‖∇_y g‖ ≤ ε_k·‖∇_y g(x_0, y_0)‖,
//!               ε_k = max(ε_0·decay^k, floor); the L-BFGS memory is warm-started too
//!   OPA:        every `every` steps, e = H·∇_y f(x_k, y) rescaled to ‖s_last‖, and the
//!               extra pair (e, ∇_y g(x_k, y + e) − ∇_y g(x_k, y)) enters the memory
//! adjoint:      u = H_L-BFGS·∇_y f(x_k, y)      (optionally refined by a few CG steps)
//! hypergradient: h = ∇_x f(x_k, y) − ∇²_xy g(x_k, y)·u
//! ```
//!
//! Differences from the reference code (spec §3.13 "pitfalls"): every pair, including the
//! OPA pair, goes through the curvature and tiny-step tests; `H0` is scaled
//! (`sᵀr/rᵀr`); the step rule is Armijo backtracking (or fixed) instead of a strong-Wolfe
//! search with `c2 = 9e-4`; the outer step is the shared [`crate::run::Outer`] instead of
//! HOAG's adaptive `L_x`. Carrying the memory across outer iterations (SHINE's
//! `warm_restart_lists`) is the default and can be switched off.
//!
//! The memory's inverse is only an approximation of `[∇²_yy g]⁻¹`, so plain SHINE stops at a
//! bias. Under the driver's inner tracking ([`crate::run::Driver::tracking`]) the residual of
//! `u` is measured and, while it is short, [`Solver::deepen_adjoint`] adds CG refinement steps
//! (SHINE-refine's remedy, grown only as far as the outer progress needs).

use crate::error::{Error, ensure};
use crate::inner::{self, StepRule};
use crate::linalg;
use crate::linsolve::{LowerHessian, SolveStatus, conjugate_gradient};
use crate::problem::{Batch, Checked, Problem, implicit_hypergradient};
use crate::qn::{InverseHessian, LBfgs, QnCounts, Safeguards};
use crate::run::{Adjoint, Bias, Deepening, Diagnostics, Solver, deepen_count};
use crate::scalar::Real;

/// Configuration of SHINE.
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
pub struct ShineConfig<T> {
    /// Step rule of the L-BFGS steps. Default Armijo backtracking ([`StepRule::armijo`]),
    /// which needs [`Problem::lower_value`].
    pub step: StepRule<T>,
    /// L-BFGS steps at most per outer iteration. Default 1000 (the authors' value).
    pub max_inner_steps: u32,
    /// `ε_0` of the relative lower tolerance. Default `1e-3`.
    pub tolerance: T,
    /// Per-iteration factor of the tolerance. Default 0.78 (the authors' "exponential"
    /// decrease).
    pub tolerance_decay: T,
    /// Smallest relative tolerance. Default `1e-12` in `f64` terms, raised to `10·ε` of `T`.
    pub tolerance_floor: T,
    /// OPA: insert an extra pair along `H·∇_y f` every this many L-BFGS steps. Default
    /// `None` (plain SHINE).
    pub opa_every: Option<u32>,
    /// Conjugate-gradient steps refining `u` (SHINE-refine; each costs a Hessian-vector
    /// product). Default 0.
    pub refine_steps: u32,
    /// Keep the L-BFGS pairs across outer iterations, as SHINE does. Default `true`.
    pub keep_memory: bool,
    /// Safeguards of the L-BFGS memory. Default [`Safeguards::default`].
    pub safeguards: Safeguards<T>,
}

impl<T: Real> Default for ShineConfig<T> {
    fn default() -> Self {
        ShineConfig {
            step: StepRule::armijo(),
            max_inner_steps: 1000,
            tolerance: T::from_f64(1e-3),
            tolerance_decay: T::from_f64(0.78),
            tolerance_floor: T::from_f64(1e-12).max(T::from_f64(10.0) * T::EPSILON),
            opa_every: None,
            refine_steps: 0,
            keep_memory: true,
            safeguards: Safeguards::default(),
        }
    }
}

impl<T: Real> ShineConfig<T> {
    /// Checks the step rule, tolerances and safeguards.
    pub fn validate(&self) -> Result<(), Error> {
        self.step.validate()?;
        let positive = |v: T| v.is_finite() && v > T::ZERO;
        ensure(positive(self.tolerance), "SHINE tolerance ε_0", "finite and > 0")?;
        ensure(
            positive(self.tolerance_decay) && self.tolerance_decay <= T::ONE,
            "SHINE tolerance decay",
            "in (0, 1]",
        )?;
        ensure(
            positive(self.tolerance_floor),
            "SHINE tolerance floor",
            "finite and > 0",
        )?;
        if let Some(m) = self.opa_every {
            ensure(m >= 1, "SHINE OPA period", "≥ 1")?;
        }
        self.safeguards.validate()
    }

    /// `ε_k = max(ε_0·decay^k, floor)`.
    pub fn tolerance_at(&self, k: u32) -> T {
        let k = T::from_f64(f64::from(k));
        (self.tolerance * self.tolerance_decay.powf(k)).max(self.tolerance_floor)
    }
}

/// What the last SHINE step did (beyond [`Diagnostics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct ShineStep {
    /// Pairs and resets of this step (OPA pairs included).
    pub counts: QnCounts,
    /// OPA pairs offered.
    pub opa_pairs: u32,
    /// The lower solve reached its tolerance.
    pub converged: bool,
}

/// SHINE with an L-BFGS memory of `M` pairs. State: `y` (warm start), the L-BFGS memory
/// (warm unless [`ShineConfig::keep_memory`] is off) and the outer counter.
///
/// Cost per outer iteration: one lower gradient at the start, one per L-BFGS step (plus
/// `g` values for Armijo), per OPA insertion one upper and one lower gradient, then one
/// upper gradient, one cross product, and `refine_steps` (+1) Hessian-vector products.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct Shine<T, const DY: usize, const M: usize> {
    /// The configuration.
    pub config: ShineConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
    k: u32,
    /// `‖∇_y g(x_0, y_0)‖` of the first call, the scale of every later tolerance (0 before).
    anchor: T,
    memory: LBfgs<T, DY, M>,
    last: ShineStep,
}

impl<T: Real, const DY: usize, const M: usize> Shine<T, DY, M> {
    /// Starts at lower iterate `y0` with an empty memory.
    pub fn new(config: ShineConfig<T>, y0: [T; DY]) -> Self {
        Shine {
            config,
            y: y0,
            u: [T::ZERO; DY],
            k: 0,
            anchor: T::ZERO,
            memory: LBfgs::new(config.safeguards),
            last: ShineStep::default(),
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

    /// The L-BFGS memory (its `H` gives `u`).
    pub fn memory(&self) -> &LBfgs<T, DY, M> {
        &self.memory
    }

    /// What the last step did.
    pub fn last_step(&self) -> &ShineStep {
        &self.last
    }
}

impl<T: Real, const DX: usize, const DY: usize, const M: usize> Solver<T, DX, DY> for Shine<T, DY, M> {
    /// One SHINE iteration. Diagnostics: `inner_steps` = L-BFGS steps, `linear_steps` =
    /// CG refinement steps, pair counts of this step, `solves_unconverged` = 1 when the
    /// lower solve or the refinement stopped on its budget.
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let cfg = self.config;
        cfg.validate()?;
        let oracles = Checked::new(problem, "SHINE");
        let mut memory = self.memory.clone();
        if !cfg.keep_memory {
            memory.clear();
        }
        let before = memory.counts();
        let mut y = self.y;
        let mut grad = [T::ZERO; DY];
        oracles.lower_grad(x, &y, Batch::Full, &mut grad)?;
        // The tolerance decreases from the first gradient norm of the run, as in HOAG: anchored
        // at every call instead, the warm-started solve would have to cut its gradient by ε_k
        // every time and the inner work would never fall.
        let anchor = if self.anchor > T::ZERO {
            self.anchor
        } else {
            linalg::norm(&grad)
        };
        let tol = cfg.tolerance_at(self.k) * anchor;
        let mut steps = 0u32;
        let mut opa_pairs = 0u32;
        let mut converged = linalg::norm(&grad) <= tol;
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        while steps < cfg.max_inner_steps && !converged {
            let chunk = match cfg.opa_every {
                Some(m) => m.min(cfg.max_inner_steps - steps),
                None => cfg.max_inner_steps - steps,
            };
            let r = inner::quasi_newton_in_place(
                oracles,
                x,
                &mut y,
                &mut grad,
                &mut memory,
                &cfg.step,
                chunk,
                tol,
                Batch::Full,
            )?;
            steps += r.steps;
            converged = r.converged;
            if converged || r.line_search_failed || r.steps == 0 || cfg.opa_every.is_none() {
                break;
            }
            // OPA: a secant pair along the direction the adjoint will need.
            oracles.upper_grad(x, &y, Batch::Full, &mut grad_x, &mut grad_y)?;
            let mut e = [T::ZERO; DY];
            memory.apply(&grad_y, &mut e);
            let en = linalg::norm(&e);
            if en > T::ZERO && r.last_step_norm > T::ZERO {
                linalg::scale(r.last_step_norm / en, &mut e);
                let mut y_e = y;
                linalg::axpy(T::ONE, &e, &mut y_e);
                let mut grad_e = [T::ZERO; DY];
                oracles.lower_grad(x, &y_e, Batch::Full, &mut grad_e)?;
                let mut r_e = [T::ZERO; DY];
                linalg::sub(&grad_e, &grad, &mut r_e);
                memory.update(&e, &r_e, linalg::norm(&y_e));
                opa_pairs += 1;
            }
        }
        oracles.upper_grad(x, &y, Batch::Full, &mut grad_x, &mut grad_y)?;
        let mut u = [T::ZERO; DY];
        memory.apply(&grad_y, &mut u);
        let mut refine_steps = 0;
        let mut refine_unconverged = false;
        if cfg.refine_steps > 0 {
            let hessian = LowerHessian {
                oracles,
                x,
                y: &y,
                batch: Batch::Full,
            };
            let s = conjugate_gradient(
                &hessian,
                &grad_y,
                &mut u,
                cfg.refine_steps,
                T::EPSILON * linalg::norm(&grad_y),
            )?;
            if s.status == SolveStatus::Breakdown || s.status == SolveStatus::Diverged {
                return Err(Error::Breakdown {
                    stage: "SHINE refinement CG (pᵀHp ≤ 0)",
                });
            }
            refine_steps = s.steps;
            refine_unconverged = s.status == SolveStatus::Budget;
        }
        linalg::ensure_finite(&u, "SHINE adjoint")?;
        implicit_hypergradient(&oracles, x, &y, &u, Batch::Full, &mut grad_x)?;
        let counts = memory.counts().since(&before);
        self.y = y;
        self.u = u;
        self.k = self.k.saturating_add(1);
        self.anchor = anchor;
        self.memory = memory;
        self.last = ShineStep {
            counts,
            opa_pairs,
            converged,
        };
        *h = grad_x;
        Ok(counts.diagnostics(Diagnostics {
            inner_steps: steps,
            linear_steps: refine_steps,
            solves_unconverged: u32::from(!converged || refine_unconverged),
            ..Diagnostics::default()
        }))
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The L-BFGS memory's approximation of the inverse Hessian (refined under tracking).
    fn bias(&self) -> Bias {
        Bias::Truncation
    }

    /// `u = H_L-BFGS·∇_y f` (refined): the memory's inverse is only an approximation, so
    /// the driver measures the residual.
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.u))
    }

    /// More CG refinement of `u` (SHINE-refine), twice as many steps plus one, up to
    /// [`MAX_REFINE_STEPS`]: the memory's inverse does not improve by repetition alone.
    fn deepen_adjoint(&mut self) -> Deepening {
        deepen_count(&mut self.config.refine_steps, MAX_REFINE_STEPS)
    }
}

/// The most CG refinement steps [`Solver::deepen_adjoint`] gives SHINE (CG stops earlier at its
/// tolerance; in exact arithmetic it needs at most `DY`).
pub const MAX_REFINE_STEPS: u32 = 1 << 12;

// ---------------------------------------------------------------------------------------
// Registry entry.

use crate::registry::{Estimates, Family, MethodInfo, MethodSpec, Setting, Settings, Start};

/// L-BFGS pairs of the registry's SHINE.
pub const SHINE_PAIRS: usize = 8;

const MAX_INNER_STEPS: Setting = Setting::count(
    "max_inner_steps",
    "L-BFGS steps at most per outer step",
    1,
    u32::MAX,
    1000,
);
const TOLERANCE: Setting = Setting::positive(
    "tolerance",
    "ε_0 of the relative lower tolerance",
    crate::registry::Initial::Value(1e-3),
);
const TOLERANCE_DECAY: Setting = Setting::fraction("tolerance_decay", "per-step factor of the tolerance", 0.78);

/// SHINE with [`SHINE_PAIRS`] pairs.
pub struct ShineMethod;

impl MethodSpec for ShineMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "shine",
        family: Family::Shine,
        summary: "L-BFGS lower solve to a decreasing tolerance; its memory gives the adjoint for free",
        estimates: Estimates::Converged,
        settings: &[MAX_INNER_STEPS, TOLERANCE, TOLERANCE_DECAY],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Shine<T, DY, SHINE_PAIRS>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = ShineConfig {
            max_inner_steps: s.count(&MAX_INNER_STEPS),
            tolerance: s.real(&TOLERANCE),
            tolerance_decay: s.real(&TOLERANCE_DECAY),
            ..ShineConfig::default()
        };
        c.validate()?;
        Ok(Shine::<T, DY, SHINE_PAIRS>::new(c, start.y0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_schedule_decays_to_its_floor() {
        let c = ShineConfig::<f64>::default();
        assert_eq!(c.tolerance_at(0), 1e-3);
        assert!((c.tolerance_at(2) - 1e-3 * 0.78 * 0.78).abs() < 1e-18);
        assert_eq!(c.tolerance_at(1000), 1e-12);
        assert!(ShineConfig::<f32>::default().tolerance_floor > 1e-6);
        let bad = ShineConfig {
            opa_every: Some(0),
            ..c
        };
        assert!(bad.validate().is_err());
    }
}
