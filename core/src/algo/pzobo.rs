//! PZOBO and PZOBO-S — partial zeroth-order-like bilevel optimization (Sow, Ji, Liang;
//! NeurIPS 2022; spec §3.3). Only lower-level gradients and one upper gradient: the
//! Jacobian of the `N`-step lower solver is estimated by differences of whole lower paths
//! at randomly perturbed `x`. One outer iteration:
//!
//! ```text
//! y_0 ← y (warm start);  y_N ← N steps y ← y − α ∇_y g(x, y; ξ_t) from y_0
//! (a, b) ← (∇_x f, ∇_y f)(x, y_N; ζ);  h ← a
//! for j = 1 … Q:
//!     u_j ~ N(0, I)                               (drawn into one buffer, never stored)
//!     y_N^j ← the same N steps at x + μ u_j from the same y_0, on the same ξ_1 … ξ_N
//!     h ← h + (1/Q) ⟨(y_N^j − y_N)/μ, b⟩ u_j
//! y ← y_N
//! ```
//!
//! PZOBO runs on the full batch ([`FullBatch`]); PZOBO-S on minibatches. The perturbed and
//! unperturbed paths share their start point and their minibatches (the sampler's state is
//! copied before the first path and replayed for every path), otherwise `δ_j` would be
//! dominated by sampling noise divided by `μ`. Directions are Gaussian, or uniform on the
//! sphere of radius `√DX`; both have `E[u uᵀ] = I`, so the estimate is unbiased for the
//! path's Jacobian (unit-norm directions without the `√DX` would shrink the implicit part
//! by `1/DX`, spec §7.3). Extra memory: `y_0`, `y_N`, one perturbed path, `∇_y f`, one
//! direction and each path's first and next-to-last iterates: `8·DY + DX` floats.
//!
//! The paths also measure their own truncation. With `δ_t = (y_t^j − y_t)/μ`,
//! `δ_1 ≈ −α ∇²_xy g·u` and `δ_N − δ_{N−1} ≈ −α (I − α∇²_yy g)^{N−1} ∇²_xy g·u`, the
//! residual of the response system `∇²_yy g·δ = −∇²_xy g·u` at `δ_{N−1}` relative to its
//! right-hand side; the forward difference adds a relative bias of order `μ` (`x` in units
//! where the response bends on a unit scale, as for log-strengths). Their larger,
//! [`Solver::estimate_residual`], is what the driver's inner tracking tests: it deepens the
//! paths (`N` doubles) or shrinks the radius (`μ` halves), whichever dominates, until the
//! estimate is as accurate as the outer progress needs. This needs estimates without
//! direction noise, which only one hyperparameter gives (the sphere's directions are then
//! `±1`): with more, random directions leave a noise no residual shows, the paths stay as
//! configured and a run ends at the depth limit at best. Without tracking (`--tracking 0`)
//! `N`, `Q` and `μ` stay as configured: the published method.

use crate::algo::stochastic::stochastic_gradient_descent;
use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Checked, Problem};
use crate::rng::Rng128;
use crate::run::{Bias, Deepening, Diagnostics, Solver, deepen_count, ratio};
use crate::sample::{BatchSource, FullBatch};
use crate::scalar::Real;

/// The longest paths deepening makes ([`Solver::deepen_adjoint`]).
pub const MAX_LOWER_STEPS: u32 = 1 << 16;

/// The most directions [`Solver::reduce_noise`] draws per outer step.
pub const MAX_DIRECTIONS: u32 = 1 << 12;

/// The law of PZOBO's random directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum Directions {
    /// `u ~ N(0, I_DX)` (benchopt).
    Gaussian,
    /// Uniform on the sphere of radius `√DX` (the authors' unit-norm directions, rescaled
    /// so that `E[u uᵀ] = I`).
    Sphere,
}

/// Configuration of PZOBO / PZOBO-S.
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
pub struct PzoboConfig<T> {
    /// Lower-level step `α` (`≤ 1/L`).
    pub lower_step: T,
    /// Lower-level steps `N` per path (≥ 1).
    pub lower_steps: u32,
    /// Number of random directions `Q` (≥ 1).
    pub directions: u32,
    /// Smoothing radius `μ > 0` (in `f32` keep `μ‖u‖ ≫ ε‖x‖`: `μ ≈ 1e-2`).
    pub radius: T,
    /// Law of the directions.
    pub law: Directions,
}

impl<T: Real> Default for PzoboConfig<T> {
    /// benchopt's defaults: `α = 0.1`, `N = 10`, `Q = 10`, `μ = 0.1`, Gaussian directions.
    fn default() -> Self {
        PzoboConfig {
            lower_step: T::from_f64(0.1),
            lower_steps: 10,
            directions: 10,
            radius: T::from_f64(0.1),
            law: Directions::Gaussian,
        }
    }
}

impl<T: Real> PzoboConfig<T> {
    /// Checks the steps, counts and radius.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = |v: T| v.is_finite() && v > T::ZERO;
        ensure(positive(self.lower_step), "PZOBO lower step α", "finite and > 0")?;
        ensure(self.lower_steps >= 1, "PZOBO lower steps N", "≥ 1")?;
        ensure(self.directions >= 1, "PZOBO directions Q", "≥ 1")?;
        ensure(positive(self.radius), "PZOBO radius μ", "finite and > 0")
    }
}

/// PZOBO (with `S = FullBatch`) and PZOBO-S (with a minibatch sampler); see the module
/// docs. State: `y`, the direction generator (16 bytes), two samplers and the last
/// estimate's residual.
///
/// Cost per outer iteration: `(Q + 1)·N` lower gradients and 1 upper gradient; no
/// second-order oracle.
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
pub struct Pzobo<T, const DY: usize, S = FullBatch> {
    /// The configuration.
    pub config: PzoboConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    directions: Rng128,
    lower_batches: S,
    upper_batches: S,
    /// The last estimate's paths' relative truncation (module docs).
    truncation: T,
}

impl<T: Real, const DY: usize, S: BatchSource + Clone> Pzobo<T, DY, S> {
    /// Starts at `y0`; directions from `seed`; batches from `lower` and `upper`.
    pub fn new(config: PzoboConfig<T>, y0: [T; DY], seed: u64, lower: S, upper: S) -> Self {
        Pzobo {
            config,
            y: y0,
            directions: Rng128::new(seed),
            lower_batches: lower,
            upper_batches: upper,
            truncation: T::MAX,
        }
    }

    fn direction<const DX: usize>(&self, rng: &mut Rng128, u: &mut [T; DX]) -> Result<(), Error> {
        rng.fill_gaussian(u);
        if self.config.law == Directions::Sphere {
            let n = linalg::norm(u);
            if !(n > T::ZERO) {
                return Err(Error::NonFinite {
                    oracle: None,
                    stage: "PZOBO direction (zero Gaussian draw)",
                });
            }
            linalg::scale(T::from_u32(DX as u32).sqrt() / n, u);
        }
        Ok(())
    }
}

/// `steps ≥ 1` steps of the lower path from `y` (left at the path's end), returning the
/// iterates after the first step and before the last: their differences between perturbed
/// and unperturbed paths measure the truncation (module docs).
fn walk<P, S, T, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &mut [T; DY],
    alpha: T,
    steps: u32,
    batches: &mut S,
) -> Result<([T; DY], [T; DY]), Error>
where
    P: Problem<T, DX, DY>,
    S: BatchSource,
    T: Real,
{
    let start = *y;
    let mut first = start;
    stochastic_gradient_descent(oracles, x, &mut first, alpha, 1, batches)?;
    let mut before_last = start;
    let mut last = first;
    if steps >= 2 {
        before_last = first;
        stochastic_gradient_descent(oracles, x, &mut before_last, alpha, steps - 2, batches)?;
        last = before_last;
        stochastic_gradient_descent(oracles, x, &mut last, alpha, 1, batches)?;
    }
    *y = last;
    Ok((first, before_last))
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Solver<T, DX, DY> for Pzobo<T, DY, S> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let c = self.config;
        c.validate()?;
        let oracles = Checked::new(problem, "PZOBO");
        let start = self.y;
        // Every path replays the minibatches of the unperturbed one from this state.
        let batches_at_start = self.lower_batches.clone();
        let mut lower = batches_at_start.clone();
        let mut upper = self.upper_batches.clone();
        let mut y_n = start;
        let (first, before_last) = walk(oracles, x, &mut y_n, c.lower_step, c.lower_steps, &mut lower)?;
        let mut grad_x = [T::ZERO; DX];
        let mut grad_y = [T::ZERO; DY];
        oracles.upper_grad(x, &y_n, upper.next_batch()?, &mut grad_x, &mut grad_y)?;
        let mut rng = self.directions.clone();
        let weight = T::ONE / (c.radius * T::from_u32(c.directions));
        let mut u = [T::ZERO; DX];
        // The unperturbed path's last and first steps; the perturbed paths' differ from them
        // by their responses to the perturbation, whose squared norms add up (module docs).
        let (mut last_step, mut first_step) = ([T::ZERO; DY], [T::ZERO; DY]);
        linalg::sub(&y_n, &before_last, &mut last_step);
        linalg::sub(&first, &start, &mut first_step);
        let (mut last_steps, mut first_steps) = (T::ZERO, T::ZERO);
        let mut response = [T::ZERO; DY];
        for _ in 0..c.directions {
            self.direction(&mut rng, &mut u)?;
            let mut x_perturbed = *x;
            linalg::axpy(c.radius, &u, &mut x_perturbed);
            let mut y_j = start;
            let mut replay = batches_at_start.clone();
            let (first_j, before_last_j) = walk(
                oracles,
                &x_perturbed,
                &mut y_j,
                c.lower_step,
                c.lower_steps,
                &mut replay,
            )?;
            linalg::sub(&y_j, &before_last_j, &mut response);
            linalg::axpy(-T::ONE, &last_step, &mut response);
            last_steps += linalg::dot(&response, &response);
            linalg::sub(&first_j, &start, &mut response);
            linalg::axpy(-T::ONE, &first_step, &mut response);
            first_steps += linalg::dot(&response, &response);
            let mut delta = [T::ZERO; DY];
            linalg::sub(&y_j, &y_n, &mut delta);
            linalg::axpy(weight * linalg::dot(&delta, &grad_y), &u, &mut grad_x);
        }
        linalg::ensure_finite(&grad_x, "PZOBO hypergradient")?;
        let truncation = ratio(last_steps.sqrt(), first_steps.sqrt());
        self.y = y_n;
        self.directions = rng;
        self.lower_batches = lower;
        self.upper_batches = upper;
        self.truncation = truncation;
        *h = grad_x;
        Ok(Diagnostics {
            inner_steps: c.lower_steps.saturating_mul(c.directions.saturating_add(1)),
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }

    /// The unperturbed path alone: it is what a held step waits for.
    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        let c = self.config;
        c.validate()?;
        let mut lower = self.lower_batches.clone();
        let mut y = self.y;
        let oracles = Checked::new(problem, "PZOBO");
        stochastic_gradient_descent(oracles, x, &mut y, c.lower_step, c.lower_steps, &mut lower)?;
        self.y = y;
        self.lower_batches = lower;
        Ok(Diagnostics {
            inner_steps: c.lower_steps,
            ..Diagnostics::default()
        })
    }

    /// The larger of the last paths' truncation and the radius `μ` (module docs), on one
    /// hyperparameter; with more, the direction noise the residual would not show
    /// dominates.
    fn estimate_residual(&self) -> Option<T> {
        (DX == 1).then_some(self.truncation.max(self.config.radius))
    }

    /// Halves the radius when its bias dominates the residual (down to `√ε`, where rounding
    /// in the differences takes over), otherwise doubles the paths' length (up to
    /// [`MAX_LOWER_STEPS`]).
    fn deepen_adjoint(&mut self) -> Deepening {
        if DX != 1 {
            return Deepening::AtCapacity;
        }
        let radius = self.config.radius;
        if !(radius >= self.truncation) {
            return deepen_count(&mut self.config.lower_steps, MAX_LOWER_STEPS);
        }
        let half = radius * T::from_f64(0.5);
        if half >= T::EPSILON.sqrt() {
            self.config.radius = half;
            Deepening::Deeper
        } else {
            Deepening::AtCapacity
        }
    }

    /// Larger minibatches while they can grow, then twice the directions.
    fn reduce_noise(&mut self) -> bool {
        if crate::algo::stochastic::grow_both(&mut self.lower_batches, &mut self.upper_batches) {
            return true;
        }
        let q = self.config.directions;
        self.config.directions = q.saturating_mul(2).min(MAX_DIRECTIONS);
        self.config.directions > q
    }

    /// Halves the lower step.
    fn shorten_steps(&mut self) -> bool {
        self.config.lower_step *= T::from_f64(0.5);
        true
    }

    /// The paths' length `N` and radius `μ`, which tracking deepens and shrinks on one
    /// hyperparameter; with more, the directions' noise as well.
    fn bias(&self) -> Bias {
        if DX == 1 { Bias::Truncation } else { Bias::Fixed }
    }
}

// ---------------------------------------------------------------------------------------
// Registry entries.

use crate::registry::{
    BATCH_SIZE, Estimates, Family, Initial, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start,
};

const LOWER_STEPS: Setting = Setting::count("lower_steps", "lower-level steps N per path", 1, u32::MAX, 10);
const DIRECTIONS: Setting = Setting::count("directions", "random directions Q per outer step", 1, u32::MAX, 10);
const RADIUS: Setting = Setting::positive("radius", "smoothing radius μ", Initial::Value(0.1));

/// PZOBO on full batches.
pub struct PzoboMethod;
/// PZOBO on minibatches.
pub struct PzoboSMethod;

fn config<T: Real>(s: &Settings) -> Result<PzoboConfig<T>, Error> {
    let c = PzoboConfig {
        lower_step: s.real(&LOWER_STEP),
        lower_steps: s.count(&LOWER_STEPS),
        directions: s.count(&DIRECTIONS),
        radius: s.real(&RADIUS),
        // The authors' unit-norm directions (rescaled): on one hyperparameter they are ±1,
        // so the estimate carries no noise from their lengths.
        law: Directions::Sphere,
    };
    c.validate()?;
    Ok(c)
}

impl MethodSpec for PzoboMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "pzobo",
        family: Family::Pzobo,
        summary: "Hessian-free: the response Jacobian from perturbed lower-level paths (first-order oracles only)",
        estimates: Estimates::GrowingBatch,
        settings: &[LOWER_STEP, LOWER_STEPS, DIRECTIONS, RADIUS],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Pzobo<T, DY, FullBatch>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        Ok(Pzobo::new(config(s)?, start.y0, start.seed, FullBatch, FullBatch))
    }
}

impl MethodSpec for PzoboSMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "pzobo-s",
        family: Family::Pzobo,
        summary: "PZOBO on minibatches",
        estimates: Estimates::Stochastic,
        settings: &[LOWER_STEP, LOWER_STEPS, DIRECTIONS, RADIUS, BATCH_SIZE],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = Pzobo<T, DY, crate::sample::Minibatches>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), None)?;
        Ok(Pzobo::new(config(s)?, start.y0, start.seed, lower, upper))
    }
}
