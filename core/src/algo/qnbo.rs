//! qNBO — quasi-Newton meets bilevel optimization (Fang, Liu, Yao, Yu, Zhang; ICLR 2025),
//! spec §3.1. No Hessian-vector products: the inverse-Hessian action comes only from
//! secant pairs of lower-level gradients.
//!
//! ```text
//! Subroutine A at x_k:  y ← y_k;  P gradient steps y ← y − β∇_y g;  then T quasi-Newton
//!                       steps y ← y − γ·H_t∇_y g, pairs rebuilt from scratch at x_k
//! adjoint:              d = ∇_y f(x_k, y_{k+1});  u ≈ [∇²_yy g]⁻¹d from
//!                       - ReuseA: A's pairs, u = H_A·d;
//!                       - SubroutineB: Q_k more lower-level quasi-Newton steps from y_{k+1}
//!                         with a fresh memory (B's iterates are discarded), u from B's
//!                         pairs (from A's pairs when B accepted none, spec §2.5);
//!                       - AdjointSteps (default): Q_k quasi-Newton steps on the adjoint
//!                         system at y_{k+1}, from u = H_A·d, each pair a difference of
//!                         lower gradients along B's own direction
//! hypergradient:        h = ∇_x f(x_k, y_{k+1}) − ∇²_xy g(x_k, y_{k+1})·u
//! ```
//!
//! The recursion `C` is the type parameter `H` ([`InverseHessian`]): [`QnboBfgs`] (dense
//! inverse BFGS, equal to the paper's full-memory two-loop recursion), [`QnboLbfgs`]
//! (ring of `M` pairs), [`QnboSr1`] (matrix-free inverse SR1 of `M` pairs, the paper's
//! Algorithm 5).
//!
//! **Unpublished details** (spec §3.1 "confirmed vs. reconstructed") are configuration:
//! `P`, `β`, `T`, `γ`, the adjoint source (A-reuse or one of two Subroutines B), B's step
//! `γ_B`, its schedule `Q_k` (`min(k + 1, cap)` or constant), `H0` (fixed or `sᵀr/rᵀr`)
//! and the safeguards. The paper's B takes `(x, y, H0, d, Q)` and exists to avoid a wrong
//! inverse along the hypergradient direction `d`; how it does so is not published. Lower
//! steps from a converged `y` yield no usable pair, so the default B spends its `Q_k`
//! gradient pairs on the adjoint system itself, along directions built from `d`.
//! Fixed: B starts at `y_{k+1}` with an empty memory and does not move `y_{k+1}`. The
//! only state besides `y_k` and `k` is the scaling `h0` (spec §3.1 "optional state"),
//! see [`QnboConfig::carry_scaling`].

use crate::error::{Error, ensure};
use crate::inner::{self, StepRule};
use crate::linalg;
use crate::linsolve::{self, GradientDifferenceHessian};
use crate::problem::{Batch, Checked, Problem, implicit_hypergradient};
use crate::qn::{DenseBfgs, InverseHessian, LBfgs, LSr1, QnCounts, Safeguards};
use crate::run::{Diagnostics, Solver};
use crate::scalar::Real;

/// The number `Q_k` of Subroutine B's quasi-Newton steps at outer iteration `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum ExtraSteps {
    /// `Q_k = Q` at every iteration.
    Constant(u32),
    /// `Q_k = min(k + 1, cap)`: the theory's `k + 1`, capped so the cost stays bounded.
    Growing {
        /// The cap (≥ 1).
        cap: u32,
    },
}

impl ExtraSteps {
    /// `Q_k`.
    pub fn at(&self, k: u32) -> u32 {
        match *self {
            ExtraSteps::Constant(q) => q,
            ExtraSteps::Growing { cap } => k.saturating_add(1).min(cap),
        }
    }
}

/// Where qNBO's adjoint `u = H·∇_y f` takes its quasi-Newton matrix from.
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
pub enum AdjointSource<T> {
    /// Subroutine A's pairs (no extra gradient; a biased `u` when `T` is small).
    ReuseA,
    /// Subroutine B as extra lower-level steps: `Q_k` quasi-Newton steps on `g(x_k, ·)`
    /// from `y_{k+1}` with a fresh memory, `u` from B's pairs (spec §3.1's reconstruction).
    /// Once `y_{k+1}` has converged these steps fall under the tiny-step floor and `u`
    /// comes from A's pairs (spec §2.5).
    SubroutineB {
        /// B's step rule `γ_B`.
        step: StepRule<T>,
        /// `Q_k`.
        steps: ExtraSteps,
    },
    /// Subroutine B on the adjoint system: `Q_k` quasi-Newton steps on
    /// `½uᵀ∇²_yy g u − dᵀu` at `y_{k+1}` ([`linsolve::quasi_newton`]), started from A's
    /// estimate `H_A·d`, with a fresh memory. Each secant pair is a central difference of
    /// two lower gradients at `y_{k+1} ± εp` along B's own direction `p`, so the curvature
    /// is measured where the adjoint needs it, at the converged point, and no
    /// Hessian-vector product is called. On the quadratic BFGS terminates within `dy`
    /// steps; on other problems the pairs are accurate to about `ε^{2/3}`.
    AdjointSteps {
        /// `Q_k` (each costs two lower gradients; the warm start two more).
        steps: ExtraSteps,
        /// Stop once `‖d − ∇²_yy g·u‖ ≤ tolerance·‖d‖`.
        tolerance: T,
    },
}

/// Configuration of qNBO.
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
pub struct QnboConfig<T> {
    /// `β`, the step of the gradient warm-up (tune to `≤ 1/L`). Default 0.1.
    pub warmup_step: T,
    /// `P`, gradient warm-up steps. Default 2 (spec §8's reconstruction).
    pub warmup_steps: u32,
    /// `γ`, the rule of Subroutine A's quasi-Newton steps. Default `Fixed(1)` (the paper
    /// uses fixed steps; 1 is the natural quasi-Newton step).
    pub step: StepRule<T>,
    /// `T`, Subroutine A's quasi-Newton steps. Default 3.
    pub qn_steps: u32,
    /// The adjoint source. Default [`AdjointSource::AdjointSteps`] with
    /// `Q_k = min(k + 1, 32)` and tolerance `√ε`: B measures curvature along the directions
    /// the adjoint needs, so `u` is exact up to the lower solve's accuracy once
    /// `Q_k ≥ dy` (the lower-level continuation of spec §3.1 stays biased once `y` has
    /// converged).
    pub adjoint: AdjointSource<T>,
    /// The quasi-Newton loops stop when `‖∇_y g‖` is at most this (spec §2.5). Default 0:
    /// run the configured steps (the tiny-step floor drops roundoff pairs).
    pub lower_tolerance: T,
    /// Safeguards of both memories. Default [`Safeguards::default`] (`h0 = sᵀr/rᵀr`, no
    /// direction cap). For SR1 set `direction_cap: Some(10)` (spec §2.5's "safeguarded
    /// SR1"; on the quadratic it brings SR1 + B from 2.7e-2 to 1.5e-3 in ‖x − x*‖); for
    /// BFGS on an ill-conditioned lower level (e.g. an unpenalized bias) the cap replaces
    /// good directions and slows the lower solve.
    pub safeguards: Safeguards<T>,
    /// Start each memory from the `h0` learned before it instead of from scratch: A from
    /// the previous iteration's A, B from this iteration's A ([`InverseHessian::restart`]).
    /// Pairs are never carried. With automatic scaling this keeps SR1 from spending its
    /// first pair on the scaling (that pair's SR1 denominator is zero). Default `true`.
    pub carry_scaling: bool,
}

impl<T: Real> Default for QnboConfig<T> {
    fn default() -> Self {
        QnboConfig {
            warmup_step: T::from_f64(0.1),
            warmup_steps: 2,
            step: StepRule::Fixed(T::ONE),
            qn_steps: 3,
            adjoint: AdjointSource::AdjointSteps {
                steps: ExtraSteps::Growing { cap: 32 },
                tolerance: T::EPSILON.sqrt(),
            },
            lower_tolerance: T::ZERO,
            safeguards: Safeguards::default(),
            carry_scaling: true,
        }
    }
}

impl<T: Real> QnboConfig<T> {
    /// Checks step sizes, counts and safeguards.
    pub fn validate(&self) -> Result<(), Error> {
        ensure(
            self.warmup_step.is_finite() && self.warmup_step > T::ZERO,
            "qNBO warm-up step β",
            "finite and > 0",
        )?;
        self.step.validate()?;
        let steps = match self.adjoint {
            AdjointSource::ReuseA => None,
            AdjointSource::SubroutineB { step, steps } => {
                step.validate()?;
                Some(steps)
            }
            AdjointSource::AdjointSteps { steps, tolerance } => {
                ensure(
                    tolerance.is_finite() && tolerance >= T::ZERO,
                    "qNBO adjoint tolerance",
                    "finite and ≥ 0",
                )?;
                Some(steps)
            }
        };
        if let Some(ExtraSteps::Growing { cap }) = steps {
            ensure(cap >= 1, "qNBO Q_k cap", "≥ 1")?;
        }
        ensure(
            self.lower_tolerance.is_finite() && self.lower_tolerance >= T::ZERO,
            "qNBO lower tolerance",
            "finite and ≥ 0",
        )?;
        self.safeguards.validate()
    }
}

/// What the last qNBO step did (beyond [`Diagnostics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct QnboStep {
    /// `Q_k` used (0 for A-reuse).
    pub extra_steps: u32,
    /// Pairs and resets of Subroutine A.
    pub counts_a: QnCounts,
    /// Pairs and resets of Subroutine B.
    pub counts_b: QnCounts,
    /// B accepted no pair and `u` came from A's pairs.
    pub fell_back_to_a: bool,
}

/// qNBO with the quasi-Newton memory `H` (chosen by type). State: the lower iterate `y_k`
/// (warm start) and the outer counter `k` (for `Q_k`); no pair survives an outer
/// iteration.
///
/// Cost per outer iteration: `P + T + 1` lower gradients in A, `Q_k` in B, one upper
/// gradient, one cross product; no Hessian-vector product.
///
/// ```
/// use bilevel::algo::qnbo::{QnboBfgs, QnboConfig};
/// use bilevel::problem::Counted;
/// use bilevel::problems::Quadratic;
/// use bilevel::run::{run, Budget, Outer};
/// let q = Quadratic::<f64, 2, 4>::random(5, 10.0, 0.5);
/// let p = Counted::new(q.clone());
/// let config = QnboConfig { warmup_step: 1.0 / q.lower_lipschitz(), ..QnboConfig::default() };
/// let mut solver = QnboBfgs::new(config, [0.0; 4]);
/// let mut x = [0.0; 2];
/// let alpha = 1.0 / q.hypergradient_lipschitz().unwrap();
/// run(&mut solver, &p, &mut x, &Outer::constant(alpha), Budget::iterations(300), 1e-10,
///     |_, _| core::ops::ControlFlow::Continue(())).unwrap();
/// // Once Q_k ≥ dy, B's quasi-Newton steps invert the lower Hessian along ∇_y f exactly.
/// let xs = q.solution().unwrap();
/// assert!(bilevel::linalg::dist(&x, &xs) < 1e-8 * bilevel::linalg::norm(&xs));
/// assert_eq!(p.counts().lower_hvp, 0);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(
        serialize = "T: serde::Serialize, H: serde::Serialize",
        deserialize = "T: Real + serde::Deserialize<'de>, H: serde::Deserialize<'de>"
    ))
)]
pub struct Qnbo<T, H, const DY: usize> {
    /// The configuration.
    pub config: QnboConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
    k: u32,
    memory_a: H,
    memory_b: H,
    last: QnboStep,
}

/// qNBO (BFGS): dense inverse BFGS, the full-memory two-loop recursion.
pub type QnboBfgs<T, const DY: usize> = Qnbo<T, DenseBfgs<T, DY>, DY>;
/// qNBO with L-BFGS: the two-loop recursion on the newest `M` pairs.
pub type QnboLbfgs<T, const DY: usize, const M: usize> = Qnbo<T, LBfgs<T, DY, M>, DY>;
/// qNBO (SR1): the matrix-free inverse SR1 recursion of at most `M` pairs per memory
/// (choose `M ≥ max(T, Q_k)`).
pub type QnboSr1<T, const DY: usize, const M: usize> = Qnbo<T, LSr1<T, DY, M>, DY>;

impl<T: Real, H: InverseHessian<T, DY>, const DY: usize> Qnbo<T, H, DY> {
    /// Starts at lower iterate `y0`, outer counter 0.
    pub fn new(config: QnboConfig<T>, y0: [T; DY]) -> Self {
        Qnbo {
            config,
            y: y0,
            u: [T::ZERO; DY],
            k: 0,
            memory_a: H::new(config.safeguards),
            memory_b: H::new(config.safeguards),
            last: QnboStep::default(),
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

    /// Outer iterations done (`k`).
    pub fn iteration(&self) -> u32 {
        self.k
    }

    /// What the last step did.
    pub fn last_step(&self) -> &QnboStep {
        &self.last
    }

    /// Subroutine A at `x` from `self.y`: `P` gradient warm-up steps, then `T` quasi-Newton
    /// steps on `mem_a` (restarted from A's last scaling when configured). Leaves the new `y`,
    /// its gradient and the memory in the arguments; returns the quasi-Newton steps taken and
    /// the memory's pair counts over the run.
    fn subroutine_a<P: Problem<T, DX, DY>, const DX: usize>(
        &self,
        oracles: Checked<'_, P>,
        x: &[T; DX],
        y: &mut [T; DY],
        grad: &mut [T; DY],
        mem_a: &mut H,
    ) -> Result<(u32, QnCounts), Error> {
        let cfg = &self.config;
        let before = mem_a.counts();
        if cfg.warmup_steps > 0 {
            inner::gradient_descent(oracles, x, y, cfg.warmup_step, cfg.warmup_steps, Batch::Full)?;
        }
        oracles.lower_grad(x, y, Batch::Full, grad)?;
        if cfg.carry_scaling && self.k > 0 {
            mem_a.restart(self.memory_a.h0());
        } else {
            mem_a.clear();
        }
        let run = inner::quasi_newton_in_place(
            oracles,
            x,
            y,
            grad,
            mem_a,
            &cfg.step,
            cfg.qn_steps,
            cfg.lower_tolerance,
            Batch::Full,
        )?;
        Ok((run.steps, mem_a.counts().since(&before)))
    }

    /// Empties B's memory, keeping the scaling A learned at this `x` when configured.
    fn start_b(&self, mem_b: &mut H, mem_a: &H) {
        if self.config.carry_scaling && !(self.k == 0 && mem_a.is_empty()) {
            mem_b.restart(mem_a.h0());
        } else {
            mem_b.clear();
        }
    }
}

impl<T: Real, H: InverseHessian<T, DY>, const DX: usize, const DY: usize> Solver<T, DX, DY> for Qnbo<T, H, DY> {
    /// One qNBO iteration. Diagnostics: `inner_steps` = `P` + A's quasi-Newton steps,
    /// `linear_steps` = B's steps; pair and reset counts of A and B together.
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let cfg = self.config;
        cfg.validate()?;
        let oracles = Checked::new(problem, "qNBO");
        let (mut y, mut grad, mut mem_a) = (self.y, [T::ZERO; DY], self.memory_a.clone());
        let (steps_a, counts_a) = self.subroutine_a(oracles, x, &mut y, &mut grad, &mut mem_a)?;
        // The adjoint u = H·∇_y f at y_{k+1}.
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        oracles.upper_grad(x, &y, Batch::Full, &mut grad_x, &mut grad_y)?;
        let mut mem_b = self.memory_b.clone();
        let mut u = [T::ZERO; DY];
        let mut step = QnboStep {
            counts_a,
            ..QnboStep::default()
        };
        let mut linear_steps = 0;
        match cfg.adjoint {
            AdjointSource::ReuseA => mem_a.apply(&grad_y, &mut u),
            AdjointSource::SubroutineB { step: rule, steps } => {
                let q = steps.at(self.k);
                self.start_b(&mut mem_b, &mem_a);
                let before_b = mem_b.counts();
                let (mut y_b, mut grad_b) = (y, grad);
                let run_b = inner::quasi_newton_in_place(
                    oracles,
                    x,
                    &mut y_b,
                    &mut grad_b,
                    &mut mem_b,
                    &rule,
                    q,
                    cfg.lower_tolerance,
                    Batch::Full,
                )?;
                linear_steps = run_b.steps;
                step.extra_steps = q;
                step.counts_b = mem_b.counts().since(&before_b);
                if mem_b.is_empty() {
                    step.fell_back_to_a = true;
                    mem_a.apply(&grad_y, &mut u);
                } else {
                    mem_b.apply(&grad_y, &mut u);
                }
            }
            AdjointSource::AdjointSteps { steps, tolerance } => {
                let q = steps.at(self.k);
                self.start_b(&mut mem_b, &mem_a);
                let before_b = mem_b.counts();
                mem_a.apply(&grad_y, &mut u);
                let hessian = GradientDifferenceHessian {
                    oracles,
                    x,
                    y: &y,
                    batch: Batch::Full,
                };
                let tol = tolerance * linalg::norm(&grad_y);
                linear_steps = linsolve::quasi_newton_in_place(&hessian, &mut mem_b, &grad_y, &mut u, q, tol)?.steps;
                step.extra_steps = q;
                step.counts_b = mem_b.counts().since(&before_b);
            }
        }
        linalg::ensure_finite(&u, "qNBO adjoint")?;
        implicit_hypergradient(&oracles, x, &y, &u, Batch::Full, &mut grad_x)?;
        self.y = y;
        self.u = u;
        self.k = self.k.saturating_add(1);
        self.memory_a = mem_a;
        self.memory_b = mem_b;
        self.last = step;
        *h = grad_x;
        Ok(step.counts_a.plus(&step.counts_b).diagnostics(Diagnostics {
            inner_steps: cfg.warmup_steps.saturating_add(steps_a),
            linear_steps,
            ..Diagnostics::default()
        }))
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// Subroutine A only, continued: while the driver holds `x`, the adjoint (B's steps, most
    /// of an iteration's lower gradients) would be thrown away, and A's secant pairs from the
    /// last call are still pairs of this `g(x, ·)`, so `T` more quasi-Newton steps continue
    /// from A's memory, without the warm-up and the restart that a new `x` needs. `k` does not
    /// advance.
    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        let cfg = self.config;
        cfg.validate()?;
        let oracles = Checked::new(problem, "qNBO");
        let (mut y, mut grad, mut mem_a) = (self.y, [T::ZERO; DY], self.memory_a.clone());
        let before = mem_a.counts();
        oracles.lower_grad(x, &y, Batch::Full, &mut grad)?;
        let run = inner::quasi_newton_in_place(
            oracles,
            x,
            &mut y,
            &mut grad,
            &mut mem_a,
            &cfg.step,
            cfg.qn_steps,
            cfg.lower_tolerance,
            Batch::Full,
        )?;
        let counts_a = mem_a.counts().since(&before);
        self.y = y;
        self.memory_a = mem_a;
        Ok(counts_a.diagnostics(Diagnostics {
            inner_steps: run.steps,
            ..Diagnostics::default()
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::registry::{Estimates, Family, MethodInfo, MethodSpec, Setting, Settings, Start};

/// Secant pairs of the registry's qNBO-SR1 (`Q_k` reaches 32 adjoint steps; A adds its own).
pub const SR1_PAIRS: usize = 34;
/// Secant pairs of the registry's qNBO-L-BFGS.
pub const LBFGS_PAIRS: usize = 8;

const WARMUP_STEP: Setting = Setting::lower_step("warmup_step", "step β of the gradient warm-up");
const WARMUP_STEPS: Setting = Setting::count("warmup_steps", "gradient warm-up steps P", 0, u32::MAX, 2);
const QN_STEPS: Setting = Setting::count("qn_steps", "Subroutine A's quasi-Newton steps T", 0, u32::MAX, 3);
const ADJOINT_STEPS_CAP: Setting = Setting::count(
    "adjoint_steps_cap",
    "cap of Subroutine B's steps Q_k = min(k + 1, cap)",
    1,
    u32::MAX,
    32,
);
const SETTINGS: &[Setting] = &[WARMUP_STEP, WARMUP_STEPS, QN_STEPS, ADJOINT_STEPS_CAP];

fn config<T: Real>(s: &Settings) -> Result<QnboConfig<T>, Error> {
    let mut c = QnboConfig {
        warmup_step: s.real(&WARMUP_STEP),
        warmup_steps: s.count(&WARMUP_STEPS),
        qn_steps: s.count(&QN_STEPS),
        ..QnboConfig::default()
    };
    let cap = s.count(&ADJOINT_STEPS_CAP);
    match &mut c.adjoint {
        AdjointSource::AdjointSteps { steps, .. } | AdjointSource::SubroutineB { steps, .. } => {
            *steps = ExtraSteps::Growing { cap }
        }
        AdjointSource::ReuseA => {}
    }
    c.validate()?;
    Ok(c)
}

/// qNBO with dense inverse BFGS.
pub struct QnboBfgsMethod;
/// qNBO with matrix-free inverse SR1 of [`SR1_PAIRS`] pairs.
pub struct QnboSr1Method;
/// qNBO with L-BFGS of [`LBFGS_PAIRS`] pairs.
pub struct QnboLbfgsMethod;

impl MethodSpec for QnboBfgsMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "qnbo-bfgs",
        family: Family::Qnbo,
        summary: "quasi-Newton lower level and adjoint, dense BFGS (dy² memory); no Hessian-vector product",
        estimates: Estimates::Converged,
        settings: SETTINGS,
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = QnboBfgs<T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        Ok(QnboBfgs::new(config(s)?, start.y0))
    }
}

impl MethodSpec for QnboSr1Method {
    const INFO: MethodInfo = MethodInfo {
        name: "qnbo-sr1",
        family: Family::Qnbo,
        summary: "qNBO with matrix-free inverse SR1 (indefinite curvature allowed)",
        estimates: Estimates::Converged,
        settings: SETTINGS,
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = QnboSr1<T, DY, SR1_PAIRS>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        Ok(QnboSr1::<T, DY, SR1_PAIRS>::new(config(s)?, start.y0))
    }
}

impl MethodSpec for QnboLbfgsMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "qnbo-lbfgs",
        family: Family::Qnbo,
        summary: "qNBO with L-BFGS (memory linear in dy): large lower levels",
        estimates: Estimates::Converged,
        settings: SETTINGS,
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = QnboLbfgs<T, DY, LBFGS_PAIRS>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        Ok(QnboLbfgs::<T, DY, LBFGS_PAIRS>::new(config(s)?, start.y0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_steps_schedule() {
        let g = ExtraSteps::Growing { cap: 3 };
        assert_eq!([0, 1, 2, 3, 10].map(|k| g.at(k)), [1, 2, 3, 3, 3]);
        assert_eq!(ExtraSteps::Constant(5).at(100), 5);
        assert_eq!(ExtraSteps::Growing { cap: u32::MAX }.at(u32::MAX), u32::MAX);
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(QnboConfig::<f32>::default().validate().is_ok());
        let bad = QnboConfig {
            warmup_step: 0.0f64,
            ..QnboConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(Error::InvalidConfig {
                field: "qNBO warm-up step β",
                expected: "finite and > 0"
            })
        );
        let bad = QnboConfig::<f64> {
            adjoint: AdjointSource::SubroutineB {
                step: StepRule::Fixed(1.0),
                steps: ExtraSteps::Growing { cap: 0 },
            },
            ..QnboConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
