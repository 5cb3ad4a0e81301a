//! ITD — iterative differentiation through `D` lower-level gradient steps (spec §3.6):
//! the exact gradient of the unrolled objective `x ↦ f(x, y_D(x))`, where
//! `y_{t+1} = y_t − α ∇_y g(x, y_t)` and `y_0` (the warm start) is treated as a constant.
//!
//! Computed without autodiff, from Hessian-vector and cross products only:
//! - [`ItdReverse`] (reverse mode): store `y_0 … y_{D−1}`, then
//!   `p ← ∇_y f(x, y_D)`, `h ← ∇_x f(x, y_D)` and for `t = D−1 … 0`:
//!   `h ← h − α ∇²_xy g(x, y_t)·p`, `p ← p − α ∇²_yy g(x, y_t)·p`.
//!   Memory: `S` stored iterates (`S·DY` floats); deeper than `S`, segments of the
//!   trajectory are recomputed from checkpoints.
//! - [`ItdForward`] (forward mode): carry `Z_t = ∂y_t/∂x ∈ R^{DY×DX}`,
//!   `Z_{t+1} = Z_t − α(H_t Z_t + J_t)` with `J_t = ∂(∇_y g)/∂x`, and
//!   `h = ∇_x f + Z_Dᵀ ∇_y f`. Memory `DY·DX` floats, no trajectory; suits a tiny `DX`.
//!   The problem's cross oracle gives `J_tᵀ v`, so the rows of `J_t` cost `DY` cross
//!   products per step.
//!
//! ITD is biased for finite `D`: from `y_0 = y*` it equals AID with the Neumann series of
//! `D − 1` terms at `η = α`.

use crate::error::{Error, ensure};
use crate::inner;
use crate::linalg;
use crate::linsolve::LowerHessian;
use crate::problem::{Batch, Checked, Problem};
use crate::run::{Adjoint, Bias, Deepening, Diagnostics, Solver, deepen_count};
use crate::scalar::Real;

/// Configuration of ITD (both modes).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct ItdConfig<T> {
    /// Lower-level gradient step `α` (`≤ 1/L`).
    pub lower_step: T,
    /// Unrolled steps `D` (≥ 1; in reverse mode at most [`depth_capacity`] of its stored
    /// iterates).
    pub lower_steps: u32,
}

impl<T: Real> Default for ItdConfig<T> {
    /// `α = 0.1`, `D = 10` (tune `α ≤ 1/L`).
    fn default() -> Self {
        ItdConfig {
            lower_step: T::from_f64(0.1),
            lower_steps: 10,
        }
    }
}

impl<T: Real> ItdConfig<T> {
    /// Halves the unrolled gradient step ([`Solver::shorten_steps`]).
    fn halve_steps(&mut self) -> bool {
        self.lower_step *= T::from_f64(0.5);
        true
    }

    /// Sets the unrolled gradient step ([`Solver::set_steps`]).
    fn set_steps(&mut self, step: T) -> bool {
        self.lower_step = step;
        true
    }

    /// Checks the step size and the step count.
    pub fn validate(&self) -> Result<(), Error> {
        ensure(
            self.lower_step.is_finite() && self.lower_step > T::ZERO,
            "lower step α",
            "finite and > 0",
        )?;
        ensure(self.lower_steps >= 1, "lower steps D", "≥ 1")
    }
}

/// Reverse-mode ITD with `S` stored iterates. Up to `D = S` they are the whole trajectory;
/// deeper, they hold the first iterate of each of `⌈D/k⌉` segments of `k` steps plus one
/// segment's `k − 1` later iterates, recomputed from its first during the reverse pass
/// (checkpointing: the same bits, `D − ⌈D/k⌉` more lower gradients), up to
/// [`depth_capacity`]`(S)` steps (1 056 for the registry's `S = 64`; beyond, [`Error::Capacity`]).
/// State: the lower iterate `y` (warm start, `y ← y_D`).
///
/// Cost per outer iteration: `D` lower gradients (plus the recomputed ones), `D` cross
/// products, `D − 1` Hessian-vector products (the product at `t = 0` would only feed
/// `∂/∂y_0`, which is not needed), 1 upper gradient.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct ItdReverse<T, const DY: usize, const S: usize> {
    /// The configuration.
    pub config: ItdConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    /// The adjoint the reverse pass applied: `u = α Σ_t p_t`, which the unrolled derivative
    /// `Σ_t α ∇²_xy g(y_t)·p_t` uses in place of `∇²_xy g·[∇²_yy g]⁻¹ ∇_y f`.
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    u: [T; DY],
    /// Scratch for the stored iterates `y_0 … y_{D−1}`; meaningless between calls, so not
    /// part of a checkpoint.
    #[cfg_attr(feature = "serde", serde(skip, default = "empty_trajectory"))]
    trajectory: [[T; DY]; S],
}

#[cfg(feature = "serde")]
fn empty_trajectory<T: Real, const DY: usize, const S: usize>() -> [[T; DY]; S] {
    [[T::ZERO; DY]; S]
}

/// A checkpoint holds the configuration and `y`, not the scratch trajectory.
#[cfg(feature = "serde")]
impl<T, const DY: usize, const S: usize> postcard::experimental::max_size::MaxSize for ItdReverse<T, DY, S>
where
    T: postcard::experimental::max_size::MaxSize,
{
    const POSTCARD_MAX_SIZE: usize = ItdConfig::<T>::POSTCARD_MAX_SIZE + 2 * DY * T::POSTCARD_MAX_SIZE;
}

/// Equal when configuration, lower iterate and adjoint are; the trajectory is scratch, not
/// state.
impl<T: Real, const DY: usize, const S: usize> PartialEq for ItdReverse<T, DY, S> {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.y == other.y && self.u == other.u
    }
}

/// The deepest unrolling [`ItdReverse`] computes with `s` stored iterates: `c` segments of
/// `k` steps with `c + k − 1 ≤ s`, at best `⌊(s+1)/2⌋·⌈(s+1)/2⌉`.
pub const fn depth_capacity(s: usize) -> usize {
    let k = s.div_ceil(2);
    k * (s + 1 - k)
}

/// The shortest segment that fits `steps` into `s` stored iterates, with its number of
/// segments: `⌈steps/k⌉` checkpoints and `k − 1` recomputed iterates, which recomputes the
/// fewest; `None` beyond [`depth_capacity`]. `k = 1` (no recomputation) while `steps ≤ s`.
fn segments(steps: usize, s: usize) -> Option<(usize, usize)> {
    (1..=steps.max(1))
        .filter_map(|k| Some((k, (steps + k - 1).checked_div(k)?)))
        .find(|&(k, count)| count + k - 1 <= s)
}

impl<T: Real, const DY: usize, const S: usize> ItdReverse<T, DY, S> {
    /// Starts at lower iterate `y0`.
    pub fn new(config: ItdConfig<T>, y0: [T; DY]) -> Self {
        ItdReverse {
            config,
            y: y0,
            u: [T::ZERO; DY],
            trajectory: [[T::ZERO; DY]; S],
        }
    }

    /// The lower iterate `y` (as [`Solver::lower`], without naming `DX`).
    pub fn lower(&self) -> &[T; DY] {
        &self.y
    }
}

impl<T: Real, const DX: usize, const DY: usize, const S: usize> Solver<T, DX, DY> for ItdReverse<T, DY, S> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        self.config.validate()?;
        let steps = self.config.lower_steps as usize;
        let alpha = self.config.lower_step;
        let capacity = Error::Capacity {
            what: "ITD trajectory (checkpointed)",
            capacity: depth_capacity(S),
        };
        let (segment, count) = segments(steps, S).ok_or(capacity)?;
        let (checkpoints, buffer) = self.trajectory.split_at_mut_checked(count).ok_or(capacity)?;
        let oracles = Checked::new(problem, "ITD reverse");
        // Forward: keep the first iterate of every segment.
        let mut y = self.y;
        let mut remaining = steps;
        for c in checkpoints.iter_mut() {
            *c = y;
            let len = segment.min(remaining);
            inner::gradient_descent(oracles, x, &mut y, alpha, len as u32, Batch::Full)?;
            remaining -= len;
        }
        let mut grad_x = [T::ZERO; DX];
        let mut p = [T::ZERO; DY];
        oracles.upper_grad(x, &y, Batch::Full, &mut grad_x, &mut p)?;
        let mut cross = [T::ZERO; DX];
        let mut hp = [T::ZERO; DY];
        let mut u = [T::ZERO; DY];
        // Reverse, one segment at a time from the last: its iterates after the first are
        // recomputed from its checkpoint (the same bits as in the forward pass).
        for (c, start) in checkpoints.iter().enumerate().rev() {
            let first = c * segment;
            let len = segment.min(steps - first);
            let mut z = *start;
            for stored in buffer.iter_mut().take(len - 1) {
                inner::gradient_descent(oracles, x, &mut z, alpha, 1, Batch::Full)?;
                *stored = z;
            }
            for i in (0..len).rev() {
                let y_t = match i.checked_sub(1) {
                    None => start,
                    Some(j) => buffer.get(j).unwrap_or(start),
                };
                oracles.lower_cross(x, y_t, &p, Batch::Full, &mut cross)?;
                linalg::axpy(-alpha, &cross, &mut grad_x);
                linalg::axpy(alpha, &p, &mut u);
                if first + i > 0 {
                    oracles.lower_hvp(x, y_t, &p, Batch::Full, &mut hp)?;
                    linalg::axpy(-alpha, &hp, &mut p);
                }
            }
        }
        linalg::ensure_finite(&grad_x, "ITD reverse pass")?;
        self.y = y;
        self.u = u;
        *h = grad_x;
        Ok(Diagnostics {
            inner_steps: self.config.lower_steps,
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The unrolled depth.
    fn bias(&self) -> Bias {
        Bias::Truncation
    }

    /// The `D` lower steps without the reverse pass (the next estimate makes it).
    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        self.config.validate()?;
        let ItdConfig {
            lower_step,
            lower_steps,
        } = self.config;
        let oracles = Checked::new(problem, "ITD reverse");
        inner::advance_by_gradient_steps(oracles, x, &mut self.y, lower_step, lower_steps)
    }

    /// `α Σ_t p_t`: its residual `‖∇²_yy g·u − ∇_y f‖ ≈ ‖(I − α∇²_yy g)^D ∇_y f‖` measures
    /// the truncation bias.
    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        Some(Adjoint::Solution(&self.u))
    }

    fn shorten_steps(&mut self) -> bool {
        self.config.halve_steps()
    }

    fn set_steps(&mut self, step: T) -> bool {
        self.config.set_steps(step)
    }

    /// A deeper unrolling, up to [`depth_capacity`]`(S)`.
    fn deepen_adjoint(&mut self) -> Deepening {
        deepen_count(
            &mut self.config.lower_steps,
            u32::try_from(depth_capacity(S)).unwrap_or(u32::MAX),
        )
    }
}

/// Forward-mode ITD: the same hypergradient as [`ItdReverse`] (up to roundoff) without a
/// trajectory. State: the lower iterate `y` (warm start).
///
/// Cost per outer iteration: `D` lower gradients, `(D − 1)·DX` Hessian-vector products
/// (in fused pairs), `D·DY` cross products (unit vectors), 1 upper gradient.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(feature = "serde", serde(bound(deserialize = "T: Real + serde::Deserialize<'de>")))]
pub struct ItdForward<T, const DY: usize> {
    /// The configuration.
    pub config: ItdConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
}

impl<T: Real, const DY: usize> ItdForward<T, DY> {
    /// Starts at lower iterate `y0`.
    pub fn new(config: ItdConfig<T>, y0: [T; DY]) -> Self {
        ItdForward { config, y: y0 }
    }

    /// The lower iterate `y` (as [`Solver::lower`], without naming `DX`).
    pub fn lower(&self) -> &[T; DY] {
        &self.y
    }
}

/// Column `j` of a `DY×DX` matrix.
fn column<T: Real, const DX: usize, const DY: usize>(m: &[[T; DX]; DY], j: usize) -> [T; DY] {
    let mut c = [T::ZERO; DY];
    for i in 0..DY {
        c[i] = m[i][j];
    }
    c
}

impl<T: Real, const DX: usize, const DY: usize> Solver<T, DX, DY> for ItdForward<T, DY> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        self.config.validate()?;
        let alpha = self.config.lower_step;
        let oracles = Checked::new(problem, "ITD forward");
        let mut y = self.y;
        // z[i][j] = ∂y_i/∂x_j; zero at t = 0 (y_0 does not depend on x).
        let mut z = [[T::ZERO; DX]; DY];
        for t in 0..self.config.lower_steps {
            // dz = H_t Z_t + J_t, evaluated at y_t before the step.
            let mut dz = [[T::ZERO; DX]; DY];
            if t > 0 {
                let hessian = LowerHessian {
                    oracles,
                    x,
                    y: &y,
                    batch: Batch::Full,
                };
                let mut j = 0;
                while j < DX {
                    let (mut h1, mut h2) = ([T::ZERO; DY], [T::ZERO; DY]);
                    if j + 1 < DX {
                        hessian.apply2(&column(&z, j), &column(&z, j + 1), &mut h1, &mut h2)?;
                    } else {
                        hessian.apply(&column(&z, j), &mut h1)?;
                    }
                    for i in 0..DY {
                        dz[i][j] = h1[i];
                        if j + 1 < DX {
                            dz[i][j + 1] = h2[i];
                        }
                    }
                    j += 2;
                }
            }
            let mut unit = [T::ZERO; DY];
            let mut row = [T::ZERO; DX];
            for i in 0..DY {
                unit[i] = T::ONE;
                oracles.lower_cross(x, &y, &unit, Batch::Full, &mut row)?;
                unit[i] = T::ZERO;
                linalg::axpy(T::ONE, &row, &mut dz[i]);
            }
            for i in 0..DY {
                linalg::axpy(-alpha, &dz[i], &mut z[i]);
            }
            inner::gradient_descent(oracles, x, &mut y, alpha, 1, Batch::Full)?;
        }
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        oracles.upper_grad(x, &y, Batch::Full, &mut grad_x, &mut grad_y)?;
        for i in 0..DY {
            linalg::axpy(grad_y[i], &z[i], &mut grad_x);
        }
        linalg::ensure_finite(&grad_x, "ITD forward pass")?;
        self.y = y;
        *h = grad_x;
        Ok(Diagnostics {
            inner_steps: self.config.lower_steps,
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The unrolled depth, which forward mode does not deepen.
    fn bias(&self) -> Bias {
        Bias::Fixed
    }
}

// ---------------------------------------------------------------------------------------
// Registry entry.

use crate::curvature::LocalSteps;
use crate::registry::{
    CURVATURE_ITERATIONS, Estimates, Family, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start,
};

/// Stored iterates of the registry's ITD (its `lower_steps` at most [`depth_capacity`] of it).
pub const ITD_STEPS: usize = 64;

const LOWER_STEPS: Setting = Setting::count(
    "lower_steps",
    "unrolled lower-level steps (beyond the 64 stored iterates, checkpointed)",
    1,
    depth_capacity(ITD_STEPS) as u32,
    50,
);

/// ITD in reverse mode over [`ITD_STEPS`] stored iterates, its step from the local curvature.
pub struct ItdMethod;

impl MethodSpec for ItdMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "itd",
        family: Family::Itd,
        summary: "differentiates through the unrolled lower-level gradient steps (reverse mode)",
        estimates: Estimates::Truncated,
        settings: &[LOWER_STEP, LOWER_STEPS, CURVATURE_ITERATIONS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = LocalSteps<ItdReverse<T, DY, ITD_STEPS>, T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = ItdConfig {
            lower_step: s.real(&LOWER_STEP),
            lower_steps: s.count(&LOWER_STEPS),
        };
        c.validate()?;
        let itd = ItdReverse::<T, DY, ITD_STEPS>::new(c, start.y0);
        Ok(LocalSteps::from_settings::<DX>(itd, s, &[&LOWER_STEP]))
    }
}
