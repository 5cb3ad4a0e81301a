//! F2SA — fully first-order stochastic approximation (Kwon, Kwon, Wright, Nowak; ICML 2023;
//! spec §3.12). No Hessian-vector or cross products: the penalty reformulation
//! `L_λ(x, y, z) = f(x, y) + λ (g(x, y) − g(x, z))` with `z ≈ y*(x)`, `y ≈ argmin f + λg`
//! and `λ → ∞`. One outer iteration `k`:
//!
//! ```text
//! repeat T:                                             (fresh batches every step)
//!     z ← z − γ_k ∇_y g(x, z; φ)
//!     y ← y − α_k (∇_y f(x, y; ζ) + λ_k ∇_y g(x, y; φ'))    α_k = c_k / (L_f + λ_k L_g)
//! h = ∇_x f(x, y; ζ') + λ_k (∇_x g(x, y; φ'') − ∇_x g(x, z; φ''))
//! λ_{k+1} = min(λ_k + δ_k, λ_max)
//! ```
//!
//! The `y` step is the inverse of the smoothness `L_f + λ L_g` of `f + λ g` (times a
//! schedule), so it shrinks like `1/λ` as the penalty grows: the coupling spec §7.9 asks
//! for. The two `∇_x g` of `h` share one batch, so their difference carries no sampling
//! noise of its own when `y ≈ z`.
//!
//! For finite `λ` the estimate is biased by `O(1/λ)`. Each call measures that bias with
//! first-order calls only, so that the driver can double `λ` until it is below its
//! tolerance ([`Solver::deepen_adjoint`]) instead of following a fixed schedule. With
//! `u = λ(z − y)` (the adjoint the penalty builds: `y − z ≈ −[∇²_yy g]⁻¹∇_y f / λ`) and
//! `m = (y + z)/2`, all on the last batches:
//!
//! - the adjoint's residual `‖∇²_yy g·u − ∇_y f(z)‖ / ‖∇_y f(z)‖`, with the Hessian-vector
//!   product from gradient differences along `u` at steps `1/λ` and `1/(2λ)`, combined so
//!   that the third derivative's term cancels:
//!   `∇²_yy g·u ≈ λ(3∇_y g(z) − 4∇_y g(m) + ∇_y g(y))`;
//! - the rest of the bias, in the `x` gradients: `2‖h − h_m‖` over the largest `‖h‖` so
//!   far (the driver's tolerance is relative to the first estimate), where `h_m` is the
//!   estimate from `m` at penalty `2λ` (`h = h* + b/λ + O(1/λ²)` and `h_m = h* + b/(2λ) + …`
//!   along the terms in `x`);
//! - how far `y` and `z` are from their targets, relative to `‖y − z‖`:
//!   `‖∇_y f(y) + λ∇_y g(y)‖ / ‖∇_y f(y)‖` and `λ‖∇_y g(z)‖ / ‖∇_y f(y)‖`. While these
//!   dominate, repeating the call helps and doubling `λ` does not.

use crate::algo::stochastic::{grow_both, stochastic_gradient_descent};
use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Batch, Checked, Problem};
use crate::run::{Bias, Deepening, Diagnostics, Solver, ratio};
use crate::sample::{BatchSource, Minibatches};
use crate::scalar::Real;
use crate::schedule::Schedule;

/// Configuration of F2SA.
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
pub struct F2saConfig<T> {
    /// Step `γ_k` of `z` on `g` (`≤ 1/L_g`).
    pub lower_step: Schedule<T>,
    /// `c_k` of the `y` step `α_k = c_k / (L_f + λ_k L_g)` (`c_k ≤ 1` is safe).
    pub penalty_step: Schedule<T>,
    /// `L_f`: Lipschitz constant of `∇_y f`.
    pub upper_smoothness: T,
    /// `L_g`: Lipschitz constant of `∇_y g`.
    pub lower_smoothness: T,
    /// Inner steps `T` on `y` and `z` per outer iteration (≥ 1).
    pub inner_steps: u32,
    /// Initial penalty `λ_0 > 0`.
    pub penalty: T,
    /// Penalty increments `δ_k` (`None`: `λ` stays at `λ_0`).
    pub penalty_growth: Option<Schedule<T>>,
    /// Upper bound `λ_max ≥ λ_0` of the penalty.
    pub max_penalty: T,
}

impl<T: Real> Default for F2saConfig<T> {
    /// benchopt's schedule shape (spec §3.12): `γ_k = 0.1/(k+1)^{4/7}`,
    /// `c_k = 1/(k+1)^{5/7}`, `λ_0 = 1`, `δ_k = 0.1/(k+1)^{1/7}`, `T = 10`, unbounded `λ`,
    /// `L_f = L_g = 1` (set them for the problem at hand).
    fn default() -> Self {
        F2saConfig {
            lower_step: Schedule::Decay {
                c: T::from_f64(0.1),
                exponent: T::from_f64(4.0 / 7.0),
            },
            penalty_step: Schedule::Decay {
                c: T::ONE,
                exponent: T::from_f64(5.0 / 7.0),
            },
            upper_smoothness: T::ONE,
            lower_smoothness: T::ONE,
            inner_steps: 10,
            penalty: T::ONE,
            penalty_growth: Some(Schedule::Decay {
                c: T::from_f64(0.1),
                exponent: T::from_f64(1.0 / 7.0),
            }),
            max_penalty: T::MAX,
        }
    }
}

impl<T: Real> F2saConfig<T> {
    /// Checks the schedules, constants and penalty range.
    pub fn validate(&self) -> Result<(), Error> {
        self.lower_step.validate("F2SA lower step γ")?;
        self.penalty_step.validate("F2SA penalty step c")?;
        if let Some(g) = &self.penalty_growth {
            g.validate("F2SA penalty growth δ")?;
        }
        let positive = |v: T| v.is_finite() && v > T::ZERO;
        ensure(
            self.upper_smoothness.is_finite() && self.upper_smoothness >= T::ZERO,
            "F2SA upper smoothness L_f",
            "finite and ≥ 0",
        )?;
        ensure(
            positive(self.lower_smoothness),
            "F2SA lower smoothness L_g",
            "finite and > 0",
        )?;
        ensure(self.inner_steps >= 1, "F2SA inner steps T", "≥ 1")?;
        ensure(positive(self.penalty), "F2SA penalty λ_0", "finite and > 0")?;
        ensure(self.max_penalty >= self.penalty, "F2SA maximum penalty", "≥ λ_0")
    }
}

/// F2SA (see the module docs) drawing batches from `S`.
///
/// Cost per outer iteration: `2T + 3` lower gradients, `T + 3` upper gradients, 3 `∇_x g`
/// (the measurement of the bias included); no second-order oracle. State: `y`, `z`, `λ`,
/// the last bias and lag and the largest estimate's norm (`2·DY + 4` floats) and two samplers.
/// [`Solver::lower`] is `z`, the estimate of `y*(x)`.
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
pub struct F2sa<T, const DY: usize, S = Minibatches> {
    /// The configuration.
    pub config: F2saConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    z: [T; DY],
    penalty: T,
    k: u32,
    lower_batches: S,
    upper_batches: S,
    /// The bias the last estimate's penalty left, relative (see the module docs).
    bias: T,
    /// How far the last estimate's `y` and `z` were from their targets, relative.
    lag: T,
    /// Whether the minibatches can no longer grow.
    full_batches: bool,
    /// Whether held calls at full batches stopped reducing the lag (the driver asked for less
    /// noise and there was none to remove) and it has not changed much since.
    settled: bool,
    /// The largest estimate's norm so far: the scale of the bias in `x`.
    largest: T,
}

impl<T: Real, const DY: usize, S: BatchSource + Clone> F2sa<T, DY, S> {
    /// Starts with `y = z = y0` and `λ = λ_0`.
    pub fn new(config: F2saConfig<T>, y0: [T; DY], lower: S, upper: S) -> Self {
        F2sa {
            penalty: config.penalty,
            config,
            y: y0,
            z: y0,
            k: 0,
            lower_batches: lower,
            upper_batches: upper,
            bias: T::MAX,
            lag: T::MAX,
            full_batches: false,
            settled: false,
            largest: T::ZERO,
        }
    }

    /// Whether the lag has settled below `16√ε` (2.4e-7 in `f64`): rounding (of `λ∇_y g(z)`,
    /// which grows with `λ`) is what is left of it, and more calls do not reduce it.
    fn rounded(&self) -> bool {
        self.settled && self.lag <= T::from_f64(16.0) * T::EPSILON.sqrt()
    }

    /// The current penalty `λ_k`.
    pub fn penalty(&self) -> T {
        self.penalty
    }

    /// `y`, the minimizer estimate of `f + λ g`.
    pub fn penalized(&self) -> &[T; DY] {
        &self.y
    }

    /// `g(x, y) − g(x, z)` on the full batch: how far the penalized iterate is from the
    /// lower-level optimum in value (≥ 0 up to the error of `z`; `O(1/λ²)` at convergence).
    /// A monitoring quantity from two [`Problem::lower_value`] calls.
    pub fn penalty_gap<P: Problem<T, DX, DY>, const DX: usize>(&self, problem: &P, x: &[T; DX]) -> Result<T, Error> {
        let oracles = Checked::new(problem, "F2SA gap");
        Ok(oracles.lower_value(x, &self.y, Batch::Full)? - oracles.lower_value(x, &self.z, Batch::Full)?)
    }
}

impl<T: Real, const DX: usize, const DY: usize, S: BatchSource + Clone> Solver<T, DX, DY> for F2sa<T, DY, S> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        let c = &self.config;
        c.validate()?;
        let oracles = Checked::new(problem, "F2SA");
        let (mut lower, mut upper) = (self.lower_batches.clone(), self.upper_batches.clone());
        let lambda = self.penalty;
        let gamma = c.lower_step.at(self.k);
        let alpha = c.penalty_step.at(self.k) / (c.upper_smoothness + lambda * c.lower_smoothness);
        let (mut y, mut z) = (self.y, self.z);
        let mut grad_x = [T::ZERO; DX];
        let mut grad_f = [T::ZERO; DY];
        let mut grad_g = [T::ZERO; DY];
        for _ in 0..c.inner_steps {
            stochastic_gradient_descent(oracles, x, &mut z, gamma, 1, &mut lower)?;
            oracles.upper_grad(x, &y, upper.next_batch()?, &mut grad_x, &mut grad_f)?;
            oracles.lower_grad(x, &y, lower.next_batch()?, &mut grad_g)?;
            for i in 0..DY {
                y[i] -= alpha * (grad_f[i] + lambda * grad_g[i]);
            }
        }
        linalg::ensure_finite(&y, "F2SA penalized step")?;
        let (upper_batch, shared) = (upper.next_batch()?, lower.next_batch()?);
        oracles.upper_grad(x, &y, upper_batch, &mut grad_x, &mut grad_f)?;
        let mut gx_y = [T::ZERO; DX];
        let mut gx_z = [T::ZERO; DX];
        oracles.lower_grad_x(x, &y, shared, &mut gx_y)?;
        oracles.lower_grad_x(x, &z, shared, &mut gx_z)?;
        let mut cross = gx_y;
        linalg::axpy(-T::ONE, &gx_z, &mut cross);
        linalg::scale(lambda, &mut cross);
        let mut h_new = grad_x;
        linalg::axpy(T::ONE, &cross, &mut h_new);
        linalg::ensure_finite(&h_new, "F2SA hypergradient")?;
        let largest = self.largest.max(linalg::norm(&h_new));
        let (bias, lag) = measure(
            oracles,
            x,
            &y,
            &z,
            lambda,
            (upper_batch, shared),
            (&grad_f, largest),
            (&gx_z, &h_new),
        )?;
        let growth = c.penalty_growth.map_or(T::ZERO, |g| g.at(self.k));
        self.penalty = (lambda + growth).min(c.max_penalty);
        self.y = y;
        self.z = z;
        self.k = self.k.saturating_add(1);
        self.lower_batches = lower;
        self.upper_batches = upper;
        if (lag - self.lag).abs() > T::from_f64(0.5) * self.lag {
            self.settled = false;
        }
        self.bias = bias;
        self.lag = lag;
        self.largest = largest;
        *h = h_new;
        Ok(Diagnostics {
            inner_steps: c.inner_steps,
            ..Diagnostics::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.z
    }

    /// The bias of the finite penalty and the lag of `y` and `z`, the larger (see the
    /// module docs); the bias alone once the lag is down to rounding.
    fn estimate_residual(&self) -> Option<T> {
        Some(if self.rounded() {
            self.bias
        } else {
            self.bias.max(self.lag)
        })
    }

    /// When the penalty's bias is what keeps the residual short: larger minibatches while
    /// they can grow (on a minibatch the bias measures its own sampling noise), then twice
    /// the penalty `λ`. While `y` and `z` lag, more calls at this `λ` (repeat). At capacity
    /// at `λ_max`, or when `y` and `z` would share more than half their digits (`y − z`
    /// halves with each doubling, and the rounding of `λ(∇g(y) − ∇g(z))` grows as it does).
    fn deepen_adjoint(&mut self) -> Deepening {
        if self.lag > self.bias * T::from_f64(0.5) && !self.rounded() {
            return Deepening::Repeat;
        }
        if !self.full_batches && Solver::<T, DX, DY>::reduce_noise(self) {
            return Deepening::Deeper;
        }
        let next = self.penalty * T::from_f64(2.0);
        // ‖y − z‖ / (‖z‖ + ‖y − z‖): how many digits y and z share.
        let apart = linalg::dist(&self.y, &self.z);
        let separation = ratio(apart, linalg::norm(&self.z) + apart);
        if next > self.config.max_penalty || separation * T::from_f64(0.5) < T::EPSILON.sqrt() {
            return Deepening::AtCapacity;
        }
        self.penalty = next;
        self.settled = false;
        Deepening::Deeper
    }

    /// Doubles both levels' minibatches; at full batches, notes that the lag has settled.
    fn reduce_noise(&mut self) -> bool {
        let grown = grow_both(&mut self.lower_batches, &mut self.upper_batches);
        self.full_batches = !grown;
        self.settled = !grown;
        grown
    }

    /// Halves the steps of `z` and `y`.
    fn shorten_steps(&mut self) -> bool {
        let half = T::from_f64(2.0);
        self.config.lower_step = self.config.lower_step.divided_by(half);
        self.config.penalty_step = self.config.penalty_step.divided_by(half);
        true
    }

    /// The finite penalty `λ_k`: removed as the driver deepens it.
    fn bias(&self) -> Bias {
        Bias::Truncation
    }
}

/// The relative bias of the penalty and the lag of `y` and `z` behind their targets (see
/// the module docs), from first-order calls on the estimate's batches.
#[allow(clippy::too_many_arguments)]
fn measure<T: Real, P: Problem<T, DX, DY>, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &[T; DY],
    z: &[T; DY],
    lambda: T,
    (upper_batch, lower_batch): (Batch, Batch),
    (grad_f, largest): (&[T; DY], T),
    (gx_z, h): (&[T; DX], &[T; DX]),
) -> Result<(T, T), Error> {
    let two = T::from_f64(2.0);
    let mut m = *y;
    linalg::axpy(T::ONE, z, &mut m);
    linalg::scale(T::from_f64(0.5), &mut m);
    let (mut g_y, mut g_z, mut g_m) = ([T::ZERO; DY], [T::ZERO; DY], [T::ZERO; DY]);
    oracles.lower_grad(x, y, lower_batch, &mut g_y)?;
    oracles.lower_grad(x, z, lower_batch, &mut g_z)?;
    oracles.lower_grad(x, &m, lower_batch, &mut g_m)?;
    let (mut fx_z, mut f_z) = ([T::ZERO; DX], [T::ZERO; DY]);
    oracles.upper_grad(x, z, upper_batch, &mut fx_z, &mut f_z)?;
    // ∇²_yy g·u − ∇_y f(z), with ∇²_yy g·u ≈ λ(3∇_y g(z) − 4∇_y g(m) + ∇_y g(y)).
    let mut r = [T::ZERO; DY];
    for i in 0..DY {
        r[i] = lambda * (T::from_f64(3.0) * g_z[i] - T::from_f64(4.0) * g_m[i] + g_y[i]) - f_z[i];
    }
    let adjoint = ratio(linalg::norm(&r), linalg::norm(&f_z));
    // h_m: the estimate from m at penalty 2λ, in x.
    let (mut fx_m, mut f_m, mut gx_m) = ([T::ZERO; DX], [T::ZERO; DY], [T::ZERO; DX]);
    oracles.upper_grad(x, &m, upper_batch, &mut fx_m, &mut f_m)?;
    oracles.lower_grad_x(x, &m, lower_batch, &mut gx_m)?;
    let mut gap = *h;
    for j in 0..DX {
        gap[j] -= fx_m[j] + two * lambda * (gx_m[j] - gx_z[j]);
    }
    // Relative to the largest estimate (the driver's tolerance is relative to the first):
    // the terms of `h` cancel at the optimum, so `‖h‖` itself is no scale.
    let in_x = ratio(two * linalg::norm(&gap), largest);
    // y against ∇_y f + λ∇_y g = 0, z against ∇_y g = 0, both relative to λ‖∇_y g(y)‖ ≈ ‖∇_y f‖.
    let mut stationarity = *grad_f;
    linalg::axpy(lambda, &g_y, &mut stationarity);
    let scale = linalg::norm(grad_f);
    let lag = ratio(linalg::norm(&stationarity), scale).max(ratio(lambda * linalg::norm(&g_z), scale));
    let bias = adjoint.max(in_x);
    if bias.is_finite() && lag.is_finite() {
        Ok((bias, lag))
    } else {
        Err(Error::NonFinite {
            oracle: None,
            stage: "F2SA bias",
        })
    }
}

// ---------------------------------------------------------------------------------------
// Registry entry.

use crate::registry::{
    BATCH_SIZE, Estimates, Family, Initial, LOWER_STEP, MethodInfo, MethodSpec, Setting, Settings, Start,
};

const INNER_STEPS: Setting = Setting::count("inner_steps", "steps T on y and z per outer step", 1, u32::MAX, 10);
const PENALTY: Setting = Setting::positive("penalty", "initial penalty λ_0", Initial::Value(1.0));
const PENALTY_GROWTH: Setting = Setting::positive(
    "penalty_growth",
    "c of the penalty increments δ_k = c/(k+1)^(1/7)",
    Initial::Value(0.1),
);
const LOWER_SMOOTHNESS: Setting = Setting::positive(
    "lower_smoothness",
    "L_g, smoothness of ∇_y g",
    Initial::TimesLipschitz(1.0),
);
const UPPER_SMOOTHNESS: Setting = Setting::positive(
    "upper_smoothness",
    "L_f, smoothness of ∇_y f",
    Initial::TimesLipschitz(1.0),
);

/// F2SA.
pub struct F2saMethod;

impl MethodSpec for F2saMethod {
    const INFO: MethodInfo = MethodInfo {
        name: "f2sa",
        family: Family::F2sa,
        summary: "fully first order: a growing penalty λ(g − min g) replaces second derivatives",
        estimates: Estimates::GrowingBatch,
        settings: &[
            LOWER_STEP,
            INNER_STEPS,
            PENALTY,
            PENALTY_GROWTH,
            LOWER_SMOOTHNESS,
            UPPER_SMOOTHNESS,
            BATCH_SIZE,
        ],
    };
    type Solver<T: Real, const DX: usize, const DY: usize> = F2sa<T, DY, Minibatches>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        s: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        let c = F2saConfig {
            lower_step: Schedule::Constant(s.real(&LOWER_STEP)),
            penalty_step: Schedule::Constant(T::ONE),
            inner_steps: s.count(&INNER_STEPS),
            penalty: s.real(&PENALTY),
            penalty_growth: Some(Schedule::Decay {
                c: s.real(&PENALTY_GROWTH),
                exponent: T::from_f64(1.0 / 7.0),
            }),
            lower_smoothness: s.real(&LOWER_SMOOTHNESS),
            upper_smoothness: s.real(&UPPER_SMOOTHNESS),
            ..F2saConfig::default()
        };
        c.validate()?;
        let [lower, upper] = start.minibatches(s.count(&BATCH_SIZE), None)?;
        Ok(F2sa::new(c, start.y0, lower, upper))
    }
}
