//! Quasi-Newton inverse-Hessian approximations `H ≈ [∇²_yy g]⁻¹` built from secant pairs
//! (spec §2): dense inverse BFGS ([`DenseBfgs`]), dense inverse SR1 ([`DenseSr1`]), L-BFGS
//! with a ring of `M` pairs and the two-loop recursion ([`LBfgs`]), and the matrix-free
//! inverse SR1 recursion of `M` pairs ([`LSr1`]).
//!
//! One secant pair is `s = y⁺ − y`, `r = ∇_y g(y⁺) − ∇_y g(y)`; every accepted update
//! satisfies the secant equation `H⁺r = s`. All four share the trait [`InverseHessian`], so
//! a solver is generic over the variant and picks it by type. Everything is fixed-size and
//! allocation-free.
//!
//! Safeguards ([`Safeguards`], thresholds scaled by the machine epsilon of `T`), at least
//! those of SciPy's `HessianUpdateStrategy`:
//! - non-finite pairs and **tiny steps** `‖s‖ ≤ τ·(1 + ‖y⁺‖)` are dropped (spec §2.5: once
//!   the iterates converge, `r` is roundoff);
//! - BFGS: the **relative curvature test** `sᵀr > ε_c·‖s‖·‖r‖`, optionally after **Powell
//!   damping** (dense BFGS only);
//! - SR1: the **denominator rule** `|(s − Hr)ᵀr| > r_skip·‖r‖·‖s − Hr‖` (Nocedal–Wright 6.26);
//! - **initial scaling** `h0 = sᵀr / rᵀr` (Nocedal–Wright 7.20), or a fixed `h0`;
//! - a search direction `H·g` that is not a descent direction (or is longer than an optional
//!   cap) is **reset** to the scaled gradient `h0·g`.
//!
//! A skipped pair leaves `H` unchanged. Every acceptance, damping, skip (by reason) and reset
//! is counted in [`QnCounts`].

use crate::error::{Error, ensure};
use crate::linalg;
use crate::run::Diagnostics;
use crate::scalar::Real;

/// Why a secant pair was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum SkipReason {
    /// BFGS curvature test failed: `sᵀr ≤ ε_c·‖s‖·‖r‖` (after damping, if enabled).
    Curvature,
    /// SR1 denominator too small: `|(s − Hr)ᵀr| ≤ r_skip·‖r‖·‖s − Hr‖` (this includes a
    /// pair that `H` already satisfies, `s = Hr`).
    Denominator,
    /// `‖s‖ ≤ τ·(1 + ‖y⁺‖)`: the gradient difference would be roundoff.
    TinyStep,
    /// The pair, or the updated matrix, has a NaN or infinite entry.
    NonFinite,
    /// A matrix-free SR1 memory holds `M` pairs already.
    Full,
}

/// What [`InverseHessian::update`] did with a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum Outcome {
    /// The pair was used as given.
    Accepted,
    /// The pair was used after Powell damping of `s` (so `H⁺r` equals the damped step).
    Damped,
    /// The pair was dropped; `H` is unchanged.
    Skipped(SkipReason),
}

/// Counts of what a quasi-Newton memory did with its pairs and directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct QnCounts {
    /// Pairs used as given.
    pub accepted: u32,
    /// Pairs used after Powell damping.
    pub damped: u32,
    /// Pairs dropped by the BFGS curvature test.
    pub skipped_curvature: u32,
    /// Pairs dropped by the SR1 denominator rule.
    pub skipped_denominator: u32,
    /// Pairs dropped by the tiny-step floor.
    pub skipped_tiny_step: u32,
    /// Pairs dropped because they (or the update) were not finite.
    pub skipped_non_finite: u32,
    /// Pairs dropped because a matrix-free SR1 memory was full.
    pub skipped_full: u32,
    /// Directions replaced by `h0·g` (not a descent direction, non-finite, or too long).
    pub resets: u32,
}

impl QnCounts {
    /// Pairs dropped, all reasons together.
    pub fn skipped(&self) -> u32 {
        self.skipped_curvature
            .saturating_add(self.skipped_denominator)
            .saturating_add(self.skipped_tiny_step)
            .saturating_add(self.skipped_non_finite)
            .saturating_add(self.skipped_full)
    }

    /// Adds one outcome.
    pub fn record(&mut self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Accepted => &mut self.accepted,
            Outcome::Damped => &mut self.damped,
            Outcome::Skipped(SkipReason::Curvature) => &mut self.skipped_curvature,
            Outcome::Skipped(SkipReason::Denominator) => &mut self.skipped_denominator,
            Outcome::Skipped(SkipReason::TinyStep) => &mut self.skipped_tiny_step,
            Outcome::Skipped(SkipReason::NonFinite) => &mut self.skipped_non_finite,
            Outcome::Skipped(SkipReason::Full) => &mut self.skipped_full,
        };
        *c = c.saturating_add(1);
    }

    /// Field-wise sum (saturating), to total the counts of several memories.
    pub fn plus(&self, o: &QnCounts) -> QnCounts {
        QnCounts {
            accepted: self.accepted.saturating_add(o.accepted),
            damped: self.damped.saturating_add(o.damped),
            skipped_curvature: self.skipped_curvature.saturating_add(o.skipped_curvature),
            skipped_denominator: self.skipped_denominator.saturating_add(o.skipped_denominator),
            skipped_tiny_step: self.skipped_tiny_step.saturating_add(o.skipped_tiny_step),
            skipped_non_finite: self.skipped_non_finite.saturating_add(o.skipped_non_finite),
            skipped_full: self.skipped_full.saturating_add(o.skipped_full),
            resets: self.resets.saturating_add(o.resets),
        }
    }

    /// `base` with its pair and reset fields set from these counts (skips of all reasons
    /// together), for a solver's [`Diagnostics`].
    pub fn diagnostics(&self, base: Diagnostics) -> Diagnostics {
        Diagnostics {
            pairs_accepted: self.accepted,
            pairs_skipped: self.skipped(),
            pairs_damped: self.damped,
            resets: self.resets,
            ..base
        }
    }

    /// Field-wise difference `self − earlier` (saturating), the counts of one phase.
    pub fn since(&self, earlier: &QnCounts) -> QnCounts {
        QnCounts {
            accepted: self.accepted.saturating_sub(earlier.accepted),
            damped: self.damped.saturating_sub(earlier.damped),
            skipped_curvature: self.skipped_curvature.saturating_sub(earlier.skipped_curvature),
            skipped_denominator: self.skipped_denominator.saturating_sub(earlier.skipped_denominator),
            skipped_tiny_step: self.skipped_tiny_step.saturating_sub(earlier.skipped_tiny_step),
            skipped_non_finite: self.skipped_non_finite.saturating_sub(earlier.skipped_non_finite),
            skipped_full: self.skipped_full.saturating_sub(earlier.skipped_full),
            resets: self.resets.saturating_sub(earlier.resets),
        }
    }
}

/// The initial inverse-Hessian approximation `H0 = h0·I`.
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
pub enum Scaling<T> {
    /// `h0` fixed.
    Fixed(T),
    /// `h0 = sᵀr / rᵀr` from a pair with positive curvature (`initial` until then): for
    /// L-BFGS from the newest accepted pair at every update; for the dense matrices and
    /// the matrix-free SR1 recursion from the first pair, before it is applied (as SciPy's
    /// `init_scale = "auto"`; for SR1 that first pair then has a zero denominator and is
    /// skipped). A reset memory takes its scaling from its next pair again.
    Auto {
        /// `h0` before any pair.
        initial: T,
    },
}

/// The thresholds of a quasi-Newton memory. Defaults scale with the precision of `T`:
/// `√ε` is about `1.5e-8` in `f64` and `3.5e-4` in `f32`.
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
pub struct Safeguards<T> {
    /// `ε_c` of the BFGS curvature test `sᵀr > ε_c·‖s‖·‖r‖`. Default `√ε`.
    pub curvature: T,
    /// `r_skip` of the SR1 rule `|(s − Hr)ᵀr| > r_skip·‖r‖·‖s − Hr‖`. Default `√ε`.
    pub sr1_denominator: T,
    /// `τ` of the tiny-step floor `‖s‖ > τ·(1 + ‖y⁺‖)`. Default `5√ε` (`7e-8` in `f64`,
    /// `1.7e-3` in `f32`, spec §2.5).
    pub tiny_step: T,
    /// Powell damping of the dense inverse BFGS update: when `sᵀr < 0.2·rᵀHr`, use
    /// `ŝ = θs + (1 − θ)Hr` with `θ = 0.8·rᵀHr / (rᵀHr − sᵀr)` (the inverse-form twin of
    /// damping `r` with `Bs`), so `ŝᵀr = 0.2·rᵀHr > 0`. Ignored by the other variants.
    /// Default off.
    pub powell_damping: bool,
    /// Optional cap `c`: a direction with `‖H·g‖ > c·h0·‖g‖` is reset to `h0·g` (spec §2.5
    /// uses `c = 10` for SR1). Default `None`.
    pub direction_cap: Option<T>,
    /// `H0 = h0·I`. Default [`Scaling::Auto`] with `initial = 1`.
    pub scaling: Scaling<T>,
}

impl<T: Real> Default for Safeguards<T> {
    fn default() -> Self {
        let root_eps = T::EPSILON.sqrt();
        Safeguards {
            curvature: root_eps,
            sr1_denominator: root_eps,
            tiny_step: T::from_f64(5.0) * root_eps,
            powell_damping: false,
            direction_cap: None,
            scaling: Scaling::Auto { initial: T::ONE },
        }
    }
}

impl<T: Real> Safeguards<T> {
    /// Checks that every threshold is finite and non-negative and `h0 > 0`.
    pub fn validate(&self) -> Result<(), Error> {
        let nonneg = |v: T| v.is_finite() && v >= T::ZERO;
        ensure(nonneg(self.curvature), "qn curvature threshold", "finite and ≥ 0")?;
        ensure(nonneg(self.sr1_denominator), "qn SR1 threshold", "finite and ≥ 0")?;
        ensure(nonneg(self.tiny_step), "qn tiny-step floor", "finite and ≥ 0")?;
        if let Some(c) = self.direction_cap {
            ensure(c.is_finite() && c > T::ZERO, "qn direction cap", "finite and > 0")?;
        }
        let h0 = self.initial_h0();
        ensure(h0.is_finite() && h0 > T::ZERO, "qn initial h0", "finite and > 0")
    }

    /// `h0` before any pair.
    pub fn initial_h0(&self) -> T {
        match self.scaling {
            Scaling::Fixed(h) | Scaling::Auto { initial: h } => h,
        }
    }

    /// `sᵀr / rᵀr` when the scaling is automatic and the pair's curvature is positive.
    fn auto_h0<const N: usize>(&self, s: &[T; N], r: &[T; N]) -> Option<T> {
        if let Scaling::Fixed(_) = self.scaling {
            return None;
        }
        let sr = linalg::dot(s, r);
        let rr = linalg::dot(r, r);
        let h0 = sr / rr;
        (sr > T::ZERO && rr > T::ZERO && h0.is_finite() && h0 > T::ZERO).then_some(h0)
    }
}

/// Finite and at most `√MAX` in magnitude.
fn bounded<T: Real>(v: T) -> bool {
    v.is_finite() && v.abs() <= T::MAX.sqrt()
}

/// The BFGS curvature test `sᵀr > ε_c·‖s‖·‖r‖` (NaN-safe: false on NaN).
fn curvature_ok<T: Real, const N: usize>(s: &[T; N], r: &[T; N], sr: T, eps_c: T) -> bool {
    sr > eps_c * linalg::norm(s) * linalg::norm(r) && sr > T::ZERO
}

/// The SR1 correction `p = s − Hr` and `c = pᵀr`, or the skip reason (denominator rule).
fn sr1_correction<T: Real, const N: usize>(
    s: &[T; N],
    r: &[T; N],
    hr: &[T; N],
    r_skip: T,
) -> Result<([T; N], T), SkipReason> {
    let mut p = [T::ZERO; N];
    linalg::sub(s, hr, &mut p);
    let c = linalg::dot(&p, r);
    if !(c.abs() > r_skip * linalg::norm(r) * linalg::norm(&p)) {
        return Err(SkipReason::Denominator);
    }
    if !c.is_finite() || !linalg::all_finite(&p) {
        return Err(SkipReason::NonFinite);
    }
    Ok((p, c))
}

/// An approximation `H ≈ [∇²g]⁻¹` on `R^N` built from secant pairs.
///
/// Implementors supply the variant-specific parts ([`InverseHessian::apply`] and
/// [`InverseHessian::insert`]); the common safeguards, counting and the descent test are
/// provided ([`InverseHessian::update`], [`InverseHessian::direction`]).
pub trait InverseHessian<T: Real, const N: usize>: Clone {
    /// An empty memory (`H = h0·I`) with these safeguards.
    fn new(safeguards: Safeguards<T>) -> Self;

    /// The safeguards in use.
    fn safeguards(&self) -> &Safeguards<T>;

    /// `out ← H·d`.
    fn apply(&self, d: &[T; N], out: &mut [T; N]);

    /// Forgets every pair (`H = h0·I` with the initial `h0`); the counts are kept.
    fn clear(&mut self);

    /// Forgets every pair and starts from `H0 = h0·I` with this `h0` (e.g. the scaling
    /// learned by an earlier memory at the same point). SR1 keeps it until the next
    /// [`InverseHessian::clear`] (with automatic scaling its first pair would otherwise be
    /// spent on the scaling); dense BFGS rescales at its first pair and L-BFGS to its newest.
    /// A non-finite or non-positive `h0` is ignored (plain clear).
    fn restart(&mut self, h0: T);

    /// Pairs currently held (for the dense variants: pairs applied since the last clear).
    fn len(&self) -> usize;

    /// `true` when no pair is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current `h0` of `H0 = h0·I`.
    fn h0(&self) -> T;

    /// Cumulative counts since construction.
    fn counts(&self) -> QnCounts;

    /// Mutable access to the counts (for the provided methods).
    fn counts_mut(&mut self) -> &mut QnCounts;

    /// `true` when every stored number is finite and at most `√MAX` in magnitude, so that
    /// products with unit-scale vectors cannot overflow in one step.
    fn is_bounded(&self) -> bool;

    /// The variant's own update rule for a finite pair with a step above the floor: the
    /// curvature test (and damping) for BFGS, the denominator rule for SR1. Does not count;
    /// call [`InverseHessian::update`] instead.
    fn insert(&mut self, s: &[T; N], r: &[T; N]) -> Outcome;

    /// [`InverseHessian::insert`], undone (every stored number restored, skip reported as
    /// [`SkipReason::NonFinite`]) when the memory it leaves is not
    /// [`InverseHessian::is_bounded`]. Does not count. The provided version keeps a copy of
    /// the whole memory for the undo; a variant may test the memory it would leave before
    /// writing instead (L-BFGS does: no copy on the stack).
    fn insert_bounded(&mut self, s: &[T; N], r: &[T; N]) -> Outcome {
        let before = self.clone();
        let outcome = self.insert(s, r);
        if self.is_bounded() {
            outcome
        } else {
            *self = before;
            Outcome::Skipped(SkipReason::NonFinite)
        }
    }

    /// Offers the pair `(s, r)` taken at the new iterate `y⁺` with norm `y_norm`: drops
    /// non-finite pairs and steps `‖s‖ ≤ τ·(1 + y_norm)`, then applies the variant's rule.
    /// A skipped pair leaves `H` unchanged. The outcome is counted.
    fn update(&mut self, s: &[T; N], r: &[T; N], y_norm: T) -> Outcome {
        let outcome = if !linalg::all_finite(s) || !linalg::all_finite(r) || !y_norm.is_finite() {
            Outcome::Skipped(SkipReason::NonFinite)
        } else if !(linalg::norm(s) > self.safeguards().tiny_step * (T::ONE + y_norm.abs())) {
            Outcome::Skipped(SkipReason::TinyStep)
        } else {
            // A finite pair can still blow the update up (e.g. a huge `s` with a tiny
            // curvature that passes the relative tests): such an update is undone.
            // (Also a skipped pair may have rescaled `h0` first.)
            self.insert_bounded(s, r)
        };
        self.counts_mut().record(outcome);
        outcome
    }

    /// The quasi-Newton direction `out ← H·g` (the step is `−out`). When it is not a
    /// descent direction (`gᵀHg ≤ 0`), not finite, or longer than the optional cap, it is
    /// replaced by `h0·g` and the reset is counted; returns `true` then.
    fn direction(&mut self, g: &[T; N], out: &mut [T; N]) -> bool {
        let gn = linalg::norm(g);
        if !(gn > T::ZERO) {
            *out = [T::ZERO; N];
            return false;
        }
        self.apply(g, out);
        let h0 = self.h0();
        let slope = linalg::dot(out, g);
        let too_long = match self.safeguards().direction_cap {
            Some(cap) => !(linalg::norm(out) <= cap * h0 * gn),
            None => false,
        };
        if !(slope > T::ZERO) || !linalg::all_finite(out) || too_long {
            *out = *g;
            linalg::scale(h0, out);
            let c = self.counts_mut();
            c.resets = c.resets.saturating_add(1);
            return true;
        }
        false
    }
}

/// Dense inverse BFGS: `H⁺ = (I − ρsrᵀ)H(I − ρrsᵀ) + ρssᵀ`, `ρ = 1/sᵀr`. `N²` floats; each
/// update and product is `O(N²)`. Optional Powell damping ([`Safeguards::powell_damping`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct DenseBfgs<T, const N: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::matrix"))]
    h: [[T; N]; N],
    h0: T,
    scaled: bool,
    pairs: usize,
    safeguards: Safeguards<T>,
    counts: QnCounts,
}

impl<T: Real, const N: usize> DenseBfgs<T, N> {
    /// The matrix `H` (symmetric).
    pub fn matrix(&self) -> &[[T; N]; N] {
        &self.h
    }
}

impl<T: Real, const N: usize> InverseHessian<T, N> for DenseBfgs<T, N> {
    fn new(safeguards: Safeguards<T>) -> Self {
        let h0 = safeguards.initial_h0();
        DenseBfgs {
            h: linalg::scaled_identity(h0),
            h0,
            scaled: false,
            pairs: 0,
            safeguards,
            counts: QnCounts::default(),
        }
    }
    fn safeguards(&self) -> &Safeguards<T> {
        &self.safeguards
    }
    fn apply(&self, d: &[T; N], out: &mut [T; N]) {
        linalg::matvec(&self.h, d, out);
    }
    fn clear(&mut self) {
        self.h0 = self.safeguards.initial_h0();
        self.h = linalg::scaled_identity(self.h0);
        self.scaled = false;
        self.pairs = 0;
    }
    fn restart(&mut self, h0: T) {
        self.clear();
        if h0.is_finite() && h0 > T::ZERO {
            // The first direction uses `h0`; the first pair still rescales (Nocedal–Wright
            // (6.20)), so a scaling learned where the curvature was different does not stay.
            self.h0 = h0;
            self.h = linalg::scaled_identity(h0);
        }
    }
    fn len(&self) -> usize {
        self.pairs
    }
    fn h0(&self) -> T {
        self.h0
    }
    fn counts(&self) -> QnCounts {
        self.counts
    }
    fn counts_mut(&mut self) -> &mut QnCounts {
        &mut self.counts
    }
    fn is_bounded(&self) -> bool {
        bounded(self.h0) && self.h.iter().all(|row| row.iter().all(|&v| bounded(v)))
    }
    fn insert(&mut self, s: &[T; N], r: &[T; N]) -> Outcome {
        let (mut h, mut h0) = (self.h, self.h0);
        if !self.scaled
            && self.pairs == 0
            && let Some(a) = self.safeguards.auto_h0(s, r)
        {
            h0 = a;
            h = linalg::scaled_identity(a);
        }
        let mut hr = [T::ZERO; N];
        linalg::matvec(&h, r, &mut hr);
        let rhr = linalg::dot(r, &hr);
        let mut s = *s;
        let mut sr = linalg::dot(&s, r);
        let mut damped = false;
        let fifth = T::from_f64(0.2);
        if self.safeguards.powell_damping && sr < fifth * rhr && rhr > T::ZERO {
            let theta = T::from_f64(0.8) * rhr / (rhr - sr);
            for i in 0..N {
                s[i] = theta * s[i] + (T::ONE - theta) * hr[i];
            }
            sr = linalg::dot(&s, r);
            damped = true;
        }
        if !curvature_ok(&s, r, sr, self.safeguards.curvature) {
            return Outcome::Skipped(SkipReason::Curvature);
        }
        let rho = T::ONE / sr;
        let coef = rho * rho * rhr + rho;
        for i in 0..N {
            for j in 0..N {
                h[i][j] = h[i][j] - rho * (s[i] * hr[j] + hr[i] * s[j]) + coef * (s[i] * s[j]);
            }
        }
        if !h.iter().all(linalg::all_finite) {
            return Outcome::Skipped(SkipReason::NonFinite);
        }
        self.h = h;
        self.h0 = h0;
        self.scaled = true;
        self.pairs = self.pairs.saturating_add(1);
        if damped { Outcome::Damped } else { Outcome::Accepted }
    }
}

/// Dense inverse SR1: `H⁺ = H + ppᵀ/(pᵀr)`, `p = s − Hr`. Not positive definite in general
/// (directions are descent-checked by [`InverseHessian::direction`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct DenseSr1<T, const N: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::matrix"))]
    h: [[T; N]; N],
    h0: T,
    scaled: bool,
    pairs: usize,
    safeguards: Safeguards<T>,
    counts: QnCounts,
}

impl<T: Real, const N: usize> DenseSr1<T, N> {
    /// The matrix `H` (symmetric).
    pub fn matrix(&self) -> &[[T; N]; N] {
        &self.h
    }
}

impl<T: Real, const N: usize> InverseHessian<T, N> for DenseSr1<T, N> {
    fn new(safeguards: Safeguards<T>) -> Self {
        let h0 = safeguards.initial_h0();
        DenseSr1 {
            h: linalg::scaled_identity(h0),
            h0,
            scaled: false,
            pairs: 0,
            safeguards,
            counts: QnCounts::default(),
        }
    }
    fn safeguards(&self) -> &Safeguards<T> {
        &self.safeguards
    }
    fn apply(&self, d: &[T; N], out: &mut [T; N]) {
        linalg::matvec(&self.h, d, out);
    }
    fn clear(&mut self) {
        self.h0 = self.safeguards.initial_h0();
        self.h = linalg::scaled_identity(self.h0);
        self.scaled = false;
        self.pairs = 0;
    }
    fn restart(&mut self, h0: T) {
        self.clear();
        if h0.is_finite() && h0 > T::ZERO {
            self.h0 = h0;
            self.h = linalg::scaled_identity(h0);
            self.scaled = true;
        }
    }
    fn len(&self) -> usize {
        self.pairs
    }
    fn h0(&self) -> T {
        self.h0
    }
    fn counts(&self) -> QnCounts {
        self.counts
    }
    fn counts_mut(&mut self) -> &mut QnCounts {
        &mut self.counts
    }
    fn is_bounded(&self) -> bool {
        bounded(self.h0) && self.h.iter().all(|row| row.iter().all(|&v| bounded(v)))
    }
    fn insert(&mut self, s: &[T; N], r: &[T; N]) -> Outcome {
        if !self.scaled
            && self.pairs == 0
            && let Some(a) = self.safeguards.auto_h0(s, r)
        {
            self.h0 = a;
            self.h = linalg::scaled_identity(a);
            self.scaled = true;
        }
        let mut hr = [T::ZERO; N];
        linalg::matvec(&self.h, r, &mut hr);
        let (p, c) = match sr1_correction(s, r, &hr, self.safeguards.sr1_denominator) {
            Ok(pc) => pc,
            Err(reason) => return Outcome::Skipped(reason),
        };
        let mut h = self.h;
        for i in 0..N {
            for j in 0..N {
                h[i][j] += p[i] * p[j] / c;
            }
        }
        if !h.iter().all(linalg::all_finite) {
            return Outcome::Skipped(SkipReason::NonFinite);
        }
        self.h = h;
        self.pairs = self.pairs.saturating_add(1);
        Outcome::Accepted
    }
}

/// L-BFGS: the newest `M` pairs in a ring, `H·d` by the two-loop recursion (spec §2.2).
/// Memory `2·M·N + M` floats; a product costs about `4·M·N` multiply-adds. With automatic
/// scaling `h0 = sᵀr/rᵀr` of the newest pair. With `M ≥` the number of pairs it equals
/// [`DenseBfgs`] started from the same `h0`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct LBfgs<T, const N: usize, const M: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::matrix"))]
    s: [[T; N]; M],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::matrix"))]
    r: [[T; N]; M],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    rho: [T; M],
    /// Slot of the next pair.
    head: usize,
    len: usize,
    h0: T,
    safeguards: Safeguards<T>,
    counts: QnCounts,
}

impl<T: Real, const N: usize, const M: usize> LBfgs<T, N, M> {
    /// Ring slot of the `i`-th newest pair (`i = 0` newest), `i < len`.
    fn slot(&self, i: usize) -> usize {
        if M == 0 {
            return 0;
        }
        (self.head + M - 1 - i) % M
    }

    /// Appends a pair without any test (the OPA pair of SHINE is pushed through
    /// [`InverseHessian::update`] instead; this is the ring write shared by both).
    fn push(&mut self, s: &[T; N], r: &[T; N], sr: T) {
        if M == 0 {
            return;
        }
        let k = self.head % M;
        self.s[k] = *s;
        self.r[k] = *r;
        self.rho[k] = T::ONE / sr;
        self.head = (k + 1) % M;
        self.len = (self.len + 1).min(M);
    }
}

impl<T: Real, const N: usize, const M: usize> InverseHessian<T, N> for LBfgs<T, N, M> {
    fn new(safeguards: Safeguards<T>) -> Self {
        LBfgs {
            s: [[T::ZERO; N]; M],
            r: [[T::ZERO; N]; M],
            rho: [T::ZERO; M],
            head: 0,
            len: 0,
            h0: safeguards.initial_h0(),
            safeguards,
            counts: QnCounts::default(),
        }
    }
    fn safeguards(&self) -> &Safeguards<T> {
        &self.safeguards
    }
    fn apply(&self, d: &[T; N], out: &mut [T; N]) {
        // The recursion runs in `out` (no working copy of `d` on the stack).
        *out = *d;
        let q = out;
        let mut a = [T::ZERO; M];
        // `len ≤ M` always; the `min` lets the compiler see it (no bounds check on `a`).
        let len = self.len.min(M);
        for i in 0..len {
            let k = self.slot(i);
            a[i] = self.rho[k] * linalg::dot(&self.s[k], q);
            linalg::axpy(-a[i], &self.r[k], q);
        }
        linalg::scale(self.h0, q);
        for i in (0..len).rev() {
            let k = self.slot(i);
            let b = self.rho[k] * linalg::dot(&self.r[k], q);
            linalg::axpy(a[i] - b, &self.s[k], q);
        }
    }
    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.h0 = self.safeguards.initial_h0();
    }
    fn restart(&mut self, h0: T) {
        self.clear();
        if h0.is_finite() && h0 > T::ZERO {
            self.h0 = h0;
        }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn h0(&self) -> T {
        self.h0
    }
    fn counts(&self) -> QnCounts {
        self.counts
    }
    fn counts_mut(&mut self) -> &mut QnCounts {
        &mut self.counts
    }
    /// Also bounds each pair's rank-one scale `ρ‖s‖²` and `ρ‖r‖²` (what the two-loop
    /// recursion multiplies by).
    fn is_bounded(&self) -> bool {
        let all = |v: &[T]| v.iter().all(|&x| bounded(x));
        let pairs = self.s.iter().zip(&self.r).zip(&self.rho).take(self.len.min(M));
        bounded(self.h0)
            && all(&self.rho)
            && self.s.iter().all(|v| all(v))
            && self.r.iter().all(|v| all(v))
            && pairs
                .into_iter()
                .all(|((s, r), &rho)| bounded(rho * linalg::dot(s, s)) && bounded(rho * linalg::dot(r, r)))
    }
    fn insert(&mut self, s: &[T; N], r: &[T; N]) -> Outcome {
        match self.admit(s, r) {
            Ok((sr, h0)) => {
                self.h0 = h0;
                self.push(s, r, sr);
                Outcome::Accepted
            }
            Err(reason) => Outcome::Skipped(reason),
        }
    }
    /// Tests the memory the pair would leave (the same test as [`InverseHessian::is_bounded`]
    /// after [`InverseHessian::insert`]) before writing anything, so nothing needs undoing.
    fn insert_bounded(&mut self, s: &[T; N], r: &[T; N]) -> Outcome {
        let (sr, h0) = match self.admit(s, r) {
            Ok(v) => v,
            // As the provided version: a skip that leaves an unbounded memory (only a
            // memory that was unbounded before) is reported as non-finite.
            Err(reason) if self.is_bounded() => return Outcome::Skipped(reason),
            Err(_) => return Outcome::Skipped(SkipReason::NonFinite),
        };
        if !self.bounded_with(s, r, T::ONE / sr, h0) {
            return Outcome::Skipped(SkipReason::NonFinite);
        }
        self.h0 = h0;
        self.push(s, r, sr);
        Outcome::Accepted
    }
}

impl<T: Real, const N: usize, const M: usize> LBfgs<T, N, M> {
    /// The tests [`InverseHessian::insert`] applies before writing: the curvature test and
    /// a finite `1/sᵀr`. Returns `sᵀr` and the `h0` after the pair.
    fn admit(&self, s: &[T; N], r: &[T; N]) -> Result<(T, T), SkipReason> {
        if M == 0 {
            return Err(SkipReason::Full);
        }
        let sr = linalg::dot(s, r);
        if !curvature_ok(s, r, sr, self.safeguards.curvature) {
            return Err(SkipReason::Curvature);
        }
        if !(T::ONE / sr).is_finite() {
            return Err(SkipReason::NonFinite);
        }
        Ok((sr, self.safeguards.auto_h0(s, r).unwrap_or(self.h0)))
    }

    /// [`InverseHessian::is_bounded`] of the memory after pushing `(s, r)` with `rho` and
    /// `h0`, computed without building it: the pair replaces slot `head mod M`, and the held
    /// pairs become slots `0..min(len + 1, M)`.
    fn bounded_with(&self, s: &[T; N], r: &[T; N], rho: T, h0: T) -> bool {
        if M == 0 {
            return bounded(h0);
        }
        let all = |v: &[T]| v.iter().all(|&x| bounded(x));
        let pair =
            |s: &[T; N], r: &[T; N], rho: T| bounded(rho * linalg::dot(s, s)) && bounded(rho * linalg::dot(r, r));
        let k = self.head % M;
        let len = (self.len + 1).min(M);
        let new = bounded(rho) && all(s) && all(r) && (k >= len || pair(s, r, rho));
        let kept = self
            .s
            .iter()
            .zip(&self.r)
            .zip(&self.rho)
            .enumerate()
            .filter(|&(j, _)| j != k)
            .all(|(j, ((sj, rj), &rhoj))| bounded(rhoj) && all(sj) && all(rj) && (j >= len || pair(sj, rj, rhoj)));
        bounded(h0) && new && kept
    }
}

/// Matrix-free inverse SR1 of at most `M` pairs (spec §2.3, qNBO's Algorithm 5):
/// `H·d = h0·d + Σ_i p_i (p_iᵀd)/c_i` with `p_i = s_i − H_i r_i`, `c_i = p_iᵀr_i`. Memory
/// `M·N + M` floats. When full, further pairs are skipped ([`SkipReason::Full`]) until
/// [`InverseHessian::clear`]. With `N` independent pairs of a quadratic it recovers `A⁻¹`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct LSr1<T, const N: usize, const M: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::matrix"))]
    p: [[T; N]; M],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    c: [T; M],
    len: usize,
    h0: T,
    scaled: bool,
    safeguards: Safeguards<T>,
    counts: QnCounts,
}

impl<T: Real, const N: usize, const M: usize> InverseHessian<T, N> for LSr1<T, N, M> {
    fn new(safeguards: Safeguards<T>) -> Self {
        LSr1 {
            p: [[T::ZERO; N]; M],
            c: [T::ZERO; M],
            len: 0,
            h0: safeguards.initial_h0(),
            scaled: false,
            safeguards,
            counts: QnCounts::default(),
        }
    }
    fn safeguards(&self) -> &Safeguards<T> {
        &self.safeguards
    }
    fn apply(&self, d: &[T; N], out: &mut [T; N]) {
        let mut z = *d;
        linalg::scale(self.h0, &mut z);
        for (p, &c) in self.p.iter().zip(&self.c).take(self.len) {
            let w = linalg::dot(p, d) / c;
            linalg::axpy(w, p, &mut z);
        }
        *out = z;
    }
    fn clear(&mut self) {
        self.len = 0;
        self.h0 = self.safeguards.initial_h0();
        self.scaled = false;
    }
    fn restart(&mut self, h0: T) {
        self.clear();
        if h0.is_finite() && h0 > T::ZERO {
            self.h0 = h0;
            self.scaled = true;
        }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn h0(&self) -> T {
        self.h0
    }
    fn counts(&self) -> QnCounts {
        self.counts
    }
    fn counts_mut(&mut self) -> &mut QnCounts {
        &mut self.counts
    }
    /// Also bounds each correction's scale `‖p‖²/|c|` (the entries of `p pᵀ/c`).
    fn is_bounded(&self) -> bool {
        let all = |v: &[T]| v.iter().all(|&x| bounded(x));
        bounded(self.h0)
            && all(&self.c)
            && self.p.iter().all(|v| all(v))
            && self
                .p
                .iter()
                .zip(&self.c)
                .take(self.len.min(M))
                .all(|(p, &c)| bounded(linalg::dot(p, p) / c))
    }
    fn insert(&mut self, s: &[T; N], r: &[T; N]) -> Outcome {
        if self.len >= M {
            return Outcome::Skipped(SkipReason::Full);
        }
        if !self.scaled
            && self.len == 0
            && let Some(a) = self.safeguards.auto_h0(s, r)
        {
            self.h0 = a;
            self.scaled = true;
        }
        let mut hr = [T::ZERO; N];
        self.apply(r, &mut hr);
        let (p, c) = match sr1_correction(s, r, &hr, self.safeguards.sr1_denominator) {
            Ok(pc) => pc,
            Err(reason) => return Outcome::Skipped(reason),
        };
        let (Some(p_slot), Some(c_slot)) = (self.p.get_mut(self.len), self.c.get_mut(self.len)) else {
            return Outcome::Skipped(SkipReason::Full);
        };
        *p_slot = p;
        *c_slot = c;
        self.len += 1;
        Outcome::Accepted
    }
}

#[cfg(test)]
mod tests {

    /// L-BFGS tests the memory a pair would leave before writing it; the provided version
    /// inserts, tests and restores a copy. Both must agree on every outcome and every stored
    /// bit, through ring wrap-around, overflowing pairs and rescaled `h0`.
    #[test]
    fn lbfgs_bounded_insert_equals_insert_then_undo() {
        let pairs: [([f32; 3], [f32; 3]); 9] = [
            ([1.0, 0.5, -0.25], [2.0, 0.75, -0.5]),
            ([1e18, 0.0, 0.0], [1e-18, 0.0, 0.0]), // ρ‖s‖² = 1e36: unbounded
            ([0.1, -0.2, 0.3], [0.3, -0.1, 0.4]),
            ([1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]), // curvature
            ([3e9, 0.0, 1.0], [3e9, 0.0, 1.0]),    // ρ‖r‖² ≈ 1: bounded, s and r of size 3e9
            ([0.5, 0.5, 0.0], [0.5, 0.75, 0.25]),
            ([4e19, 0.0, 0.0], [4e19, 1.0, 0.0]), // entries beyond √MAX
            ([-0.3, 0.2, 0.1], [-0.5, 0.3, 0.2]),
            ([f32::MIN_POSITIVE, 0.0, 0.0], [1.0, 0.0, 0.0]),
        ];
        let mut fast = LBfgs::<f32, 3, 2>::new(Safeguards::default());
        let mut slow = fast.clone();
        let mut undone = 0;
        for (s, r) in &pairs {
            let a = fast.insert_bounded(s, r);
            let before = slow.clone();
            let mut b = slow.insert(s, r);
            if !slow.is_bounded() {
                slow = before;
                b = Outcome::Skipped(SkipReason::NonFinite);
                undone += 1;
            }
            assert_eq!(a, b, "{s:?} {r:?}");
            assert_eq!(fast, slow, "{s:?} {r:?}");
        }
        assert!(undone >= 2);
        assert!(fast.len() == 2);
    }

    /// Found by fuzzing: a huge step with a tiny curvature passes the relative SR1 test but
    /// overflows the update; it is skipped and `H` stays as it was.
    #[test]
    fn an_overflowing_update_is_undone() {
        let s = [
            -5.0497568334996444e-195,
            4.3753984988651486e+130,
            -1.3476555067362263e+28,
        ];
        let r = [1.31974045e-316, -5.049756828386972e-195, -5.049756833499752e-195];
        let mut h = DenseSr1::<f64, 3>::new(Safeguards::default());
        let before = h.clone();
        assert_eq!(h.update(&s, &r, 0.0), Outcome::Skipped(SkipReason::NonFinite));
        assert_eq!(h.matrix(), before.matrix());
        let mut out = [0.0; 3];
        h.apply(&[1.0, -0.5, 0.25], &mut out);
        assert!(linalg::all_finite(&out));
        let mut l = LSr1::<f64, 3, 4>::new(Safeguards::default());
        assert_eq!(l.update(&s, &r, 0.0), Outcome::Skipped(SkipReason::NonFinite));
        assert!(l.is_empty());
    }
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const N: usize = 5;

    fn fixed<T: Real>(h0: f64) -> Safeguards<T> {
        Safeguards {
            scaling: Scaling::Fixed(T::from_f64(h0)),
            ..Safeguards::default()
        }
    }

    /// A random symmetric positive definite matrix `A = GᵀG + I` (eigenvalues ≥ 1).
    fn spd(seed: &[f64]) -> [[f64; N]; N] {
        let mut a = linalg::scaled_identity::<f64, N>(1.0);
        for i in 0..N {
            for j in 0..N {
                for k in 0..N {
                    a[i][j] += seed[k * N + i] * seed[k * N + j];
                }
            }
        }
        a
    }

    fn vec_n(v: &[f64]) -> [f64; N] {
        let mut o = [0.0; N];
        o.copy_from_slice(&v[..N]);
        o
    }

    fn apply_all<H: InverseHessian<f64, N>>(h: &H) -> [[f64; N]; N] {
        let mut m = [[0.0; N]; N];
        for j in 0..N {
            let mut e = [0.0; N];
            e[j] = 1.0;
            let mut col = [0.0; N];
            h.apply(&e, &mut col);
            for i in 0..N {
                m[i][j] = col[i];
            }
        }
        m
    }

    fn secant_err<T: Real, H: InverseHessian<T, N>>(h: &H, s: &[T; N], r: &[T; N]) -> f64 {
        let mut hr = [T::ZERO; N];
        h.apply(r, &mut hr);
        linalg::dist(&hr, s).to_f64() / linalg::norm(s).to_f64()
    }

    /// Pairs `(s, A s)` of a quadratic with Hessian `A`.
    fn quad_pairs(a: &[[f64; N]; N], steps: &[f64], count: usize) -> Vec<([f64; N], [f64; N])> {
        (0..count)
            .map(|k| {
                let s = vec_n(&steps[k * N..]);
                let mut r = [0.0; N];
                linalg::matvec(a, &s, &mut r);
                (s, r)
            })
            .collect()
    }

    fn to_f32(v: &[f64; N]) -> [f32; N] {
        let mut o = [0.0f32; N];
        for i in 0..N {
            o[i] = v[i] as f32;
        }
        o
    }

    fn entries(n: usize) -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(-1.0f64..1.0, n)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn bfgs_secant_symmetry_and_positive_definite(g in entries(N * N), st in entries(4 * N)) {
            let a = spd(&g);
            let mut h = DenseBfgs::<f64, N>::new(Safeguards::default());
            for (s, r) in quad_pairs(&a, &st, 4) {
                let o = h.update(&s, &r, 0.0);
                if o == Outcome::Accepted {
                    prop_assert!(secant_err(&h, &s, &r) < 1e-8);
                }
            }
            let m = h.matrix();
            for i in 0..N {
                for j in 0..N {
                    prop_assert_eq!(m[i][j], m[j][i]);
                }
            }
            let mut l = *m;
            prop_assert!(linalg::cholesky(&mut l), "not positive definite");
        }

        #[test]
        fn bfgs_secant_in_f32(g in entries(N * N), st in entries(3 * N)) {
            let a = spd(&g);
            let mut h = DenseBfgs::<f32, N>::new(Safeguards::default());
            let mut hl = LBfgs::<f32, N, 3>::new(Safeguards::default());
            for (s, r) in quad_pairs(&a, &st, 3) {
                let (s, r) = (to_f32(&s), to_f32(&r));
                if h.update(&s, &r, 0.0) == Outcome::Accepted {
                    prop_assert!(secant_err(&h, &s, &r) < 2e-3);
                }
                if hl.update(&s, &r, 0.0) == Outcome::Accepted {
                    prop_assert!(secant_err(&hl, &s, &r) < 2e-3);
                }
            }
            let mut l = *h.matrix();
            let mut l64 = [[0.0f64; N]; N];
            for i in 0..N {
                for j in 0..N {
                    prop_assert_eq!(l[i][j], l[j][i]);
                    l64[i][j] = l[i][j] as f64;
                }
            }
            prop_assert!(linalg::cholesky(&mut l) || linalg::cholesky(&mut l64));
        }

        #[test]
        fn two_loop_equals_dense_bfgs(g in entries(N * N), st in entries(4 * N), d in entries(N)) {
            let a = spd(&g);
            let mut dense = DenseBfgs::<f64, N>::new(Safeguards::default());
            // Dense BFGS takes h0 from its first pair; L-BFGS rescales to the newest one,
            // so compare with the same fixed h0.
            let mut lb = LBfgs::<f64, N, 8>::new(fixed(0.7));
            let mut dense_fixed = DenseBfgs::<f64, N>::new(fixed(0.7));
            for (s, r) in quad_pairs(&a, &st, 4) {
                let o1 = dense_fixed.update(&s, &r, 0.0);
                let o2 = lb.update(&s, &r, 0.0);
                prop_assert_eq!(o1, o2);
                dense.update(&s, &r, 0.0);
            }
            let d = vec_n(&d);
            let (mut z1, mut z2) = ([0.0; N], [0.0; N]);
            dense_fixed.apply(&d, &mut z1);
            lb.apply(&d, &mut z2);
            prop_assert!(linalg::dist(&z1, &z2) <= 1e-10 * (1.0 + linalg::norm(&z1)));
        }

        #[test]
        fn sr1_secant_and_symmetry(g in entries(N * N), st in entries(3 * N)) {
            let a = spd(&g);
            let mut dense = DenseSr1::<f64, N>::new(fixed(0.5));
            let mut free = LSr1::<f64, N, 4>::new(fixed(0.5));
            for (s, r) in quad_pairs(&a, &st, 3) {
                let o = dense.update(&s, &r, 0.0);
                prop_assert_eq!(o, free.update(&s, &r, 0.0));
                if o == Outcome::Accepted {
                    prop_assert!(secant_err(&dense, &s, &r) < 1e-7);
                    prop_assert!(secant_err(&free, &s, &r) < 1e-7);
                }
            }
            let (md, mf) = (dense.matrix(), apply_all(&free));
            for i in 0..N {
                for j in 0..N {
                    prop_assert_eq!(md[i][j], md[j][i]);
                    prop_assert!((md[i][j] - mf[i][j]).abs() < 1e-8 * (1.0 + md[i][j].abs()));
                }
            }
        }

        #[test]
        fn sr1_recovers_inverse_from_n_pairs(g in entries(N * N), st in entries(N * N)) {
            let a = spd(&g);
            let steps = quad_pairs(&a, &st, N);
            // Only well-conditioned step sets: SR1 needs linearly independent steps.
            let mut sm = [[0.0; N]; N];
            for (k, (s, _)) in steps.iter().enumerate() {
                sm[k] = *s;
            }
            let mut gram = [[0.0; N]; N];
            for i in 0..N {
                for j in 0..N {
                    gram[i][j] = linalg::dot(&sm[i], &sm[j]);
                }
            }
            let mut l = gram;
            prop_assume!(linalg::cholesky(&mut l) && (0..N).all(|i| l[i][i] > 0.05));
            let mut free = LSr1::<f64, N, N>::new(fixed(1.0));
            let mut dense = DenseSr1::<f64, N>::new(fixed(1.0));
            for (s, r) in &steps {
                free.update(s, r, 0.0);
                dense.update(s, r, 0.0);
            }
            prop_assume!(free.len() == N);
            let hinv = apply_all(&free);
            let md = dense.matrix();
            let mut prod = [[0.0; N]; N];
            for i in 0..N {
                for j in 0..N {
                    for k in 0..N {
                        prod[i][j] += hinv[i][k] * a[k][j];
                    }
                    let id = if i == j { 1.0 } else { 0.0 };
                    prop_assert!((prod[i][j] - id).abs() < 1e-6, "{:?}", prod);
                    prop_assert!((md[i][j] - hinv[i][j]).abs() < 1e-6 * (1.0 + md[i][j].abs()));
                }
            }
        }

        #[test]
        fn sr1_secant_in_f32(g in entries(N * N), st in entries(2 * N)) {
            let a = spd(&g);
            let mut free = LSr1::<f32, N, 2>::new(fixed(0.5));
            for (s, r) in quad_pairs(&a, &st, 2) {
                let (s, r) = (to_f32(&s), to_f32(&r));
                if free.update(&s, &r, 0.0) == Outcome::Accepted {
                    prop_assert!(secant_err(&free, &s, &r) < 1e-2);
                }
            }
        }
    }

    fn snapshot<H: InverseHessian<f64, N>>(h: &H) -> [[f64; N]; N] {
        apply_all(h)
    }

    fn skip_leaves_h_unchanged<H: InverseHessian<f64, N>>(s: &[f64; N], r: &[f64; N], y: f64, reason: SkipReason) {
        let mut h = H::new(Safeguards::default());
        h.update(&[1.0, 0.0, 0.0, 0.0, 0.0], &[2.0, 0.1, 0.0, 0.0, 0.0], 0.0);
        let before = snapshot(&h);
        let counts = h.counts();
        assert_eq!(h.update(s, r, y), Outcome::Skipped(reason));
        assert_eq!(snapshot(&h), before);
        let mut expected = counts;
        expected.record(Outcome::Skipped(reason));
        assert_eq!(h.counts(), expected);
        assert_eq!(h.counts().skipped(), counts.skipped() + 1);
    }

    #[test]
    fn skips_leave_h_unchanged_and_are_counted() {
        let s = [0.0, 1.0, 0.5, 0.0, 0.0];
        let neg = [0.0, -1.0, 0.0, 0.0, 0.0];
        let orth = [0.0, 0.0, 0.0, 1.0, 0.0];
        // sᵀr ≤ 0 for BFGS; sᵀr = 0 relative to the norms.
        skip_leaves_h_unchanged::<DenseBfgs<f64, N>>(&s, &neg, 0.0, SkipReason::Curvature);
        skip_leaves_h_unchanged::<DenseBfgs<f64, N>>(&s, &orth, 0.0, SkipReason::Curvature);
        skip_leaves_h_unchanged::<LBfgs<f64, N, 3>>(&s, &neg, 0.0, SkipReason::Curvature);
        // Roundoff-sized step relative to ‖y‖ = 1e3.
        let tiny = [1e-12, 0.0, 0.0, 0.0, 0.0];
        let r = [2e-12, 0.0, 0.0, 0.0, 0.0];
        skip_leaves_h_unchanged::<DenseBfgs<f64, N>>(&tiny, &r, 1e3, SkipReason::TinyStep);
        skip_leaves_h_unchanged::<LBfgs<f64, N, 3>>(&tiny, &r, 1e3, SkipReason::TinyStep);
        skip_leaves_h_unchanged::<DenseSr1<f64, N>>(&tiny, &r, 1e3, SkipReason::TinyStep);
        skip_leaves_h_unchanged::<LSr1<f64, N, 3>>(&tiny, &r, 1e3, SkipReason::TinyStep);
        // Non-finite pairs.
        let nan = [f64::NAN, 0.0, 0.0, 0.0, 0.0];
        skip_leaves_h_unchanged::<LSr1<f64, N, 3>>(&s, &nan, 0.0, SkipReason::NonFinite);
    }

    #[test]
    fn sr1_skips_a_near_zero_denominator() {
        for fixed_h0 in [true, false] {
            let sg = if fixed_h0 { fixed(1.0) } else { Safeguards::default() };
            let mut dense = DenseSr1::<f64, N>::new(sg);
            let mut free = LSr1::<f64, N, 3>::new(sg);
            // With H0 = I: p = s − r is orthogonal to r, so (s − Hr)ᵀr = 0.
            let r = [1.0, 0.0, 0.0, 0.0, 0.0];
            let s = [1.0, 1.0, 0.0, 0.0, 0.0];
            for h in [&mut dense as &mut dyn Probe, &mut free] {
                let before = h.snap();
                assert_eq!(h.up(&s, &r), Outcome::Skipped(SkipReason::Denominator));
                assert_eq!(h.snap(), before.map(|row| row.map(|v| v * h.h0_ratio())));
                assert_eq!(h.cnt().skipped_denominator, 1);
                assert_eq!(h.count_len(), 0);
            }
        }
    }

    /// Object-safe view for the SR1 denominator test.
    trait Probe {
        fn snap(&self) -> [[f64; N]; N];
        fn up(&mut self, s: &[f64; N], r: &[f64; N]) -> Outcome;
        fn cnt(&self) -> QnCounts;
        fn count_len(&self) -> usize;
        /// `h0` now over the initial `h0` (auto scaling may set `h0` from the first pair).
        fn h0_ratio(&self) -> f64;
    }
    impl<H: InverseHessian<f64, N>> Probe for H {
        fn snap(&self) -> [[f64; N]; N] {
            apply_all(self)
        }
        fn up(&mut self, s: &[f64; N], r: &[f64; N]) -> Outcome {
            self.update(s, r, 0.0)
        }
        fn cnt(&self) -> QnCounts {
            self.counts()
        }
        fn count_len(&self) -> usize {
            self.len()
        }
        fn h0_ratio(&self) -> f64 {
            self.h0() / self.safeguards().initial_h0()
        }
    }

    #[test]
    fn powell_damping_keeps_bfgs_positive_definite() {
        let sg = Safeguards::<f64> {
            powell_damping: true,
            ..Safeguards::default()
        };
        let mut h = DenseBfgs::<f64, N>::new(sg);
        let s = [1.0, 0.0, 0.0, 0.0, 0.0];
        let r = [-0.5, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(h.update(&s, &r, 0.0), Outcome::Damped);
        assert_eq!(h.counts().damped, 1);
        let mut l = *h.matrix();
        assert!(linalg::cholesky(&mut l));
        // Without damping the same pair is skipped.
        let mut plain = DenseBfgs::<f64, N>::new(Safeguards::default());
        assert_eq!(plain.update(&s, &r, 0.0), Outcome::Skipped(SkipReason::Curvature));
    }

    #[test]
    fn non_descent_direction_is_reset_and_counted() {
        let mut h = DenseSr1::<f64, 2>::new(fixed(1.0));
        // Pair of an indefinite "Hessian" diag(1, −1): SR1 becomes indefinite.
        assert_eq!(h.update(&[0.0, 1.0], &[0.0, -1.0], 0.0), Outcome::Accepted);
        let g = [0.0, 1.0];
        let mut d = [0.0; 2];
        assert!(h.direction(&g, &mut d));
        assert_eq!(d, [0.0, 1.0]);
        assert_eq!(h.counts().resets, 1);
        assert!(!h.direction(&[1.0, 0.0], &mut d));
        assert_eq!(h.counts().resets, 1);
    }

    #[test]
    fn lbfgs_ring_keeps_the_newest_pairs_and_auto_scales() {
        let a = [[2.0, 0.0], [0.0, 4.0]];
        let mut h = LBfgs::<f64, 2, 1>::new(Safeguards::default());
        for s in [[1.0, 0.0], [0.0, 1.0]] {
            let mut r = [0.0; 2];
            linalg::matvec(&a, &s, &mut r);
            assert_eq!(h.update(&s, &r, 0.0), Outcome::Accepted);
        }
        assert_eq!(h.len(), 1);
        assert_eq!(h.h0(), 0.25);
        let mut z = [0.0; 2];
        h.apply(&[0.0, 4.0], &mut z);
        assert!((z[1] - 1.0).abs() < 1e-15 && z[0].abs() < 1e-15);
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h.h0(), 1.0);
    }

    #[test]
    fn full_sr1_memory_skips() {
        let mut h = LSr1::<f64, 2, 1>::new(fixed(1.0));
        assert_eq!(h.update(&[1.0, 0.0], &[2.0, 0.0], 0.0), Outcome::Accepted);
        assert_eq!(
            h.update(&[0.0, 1.0], &[0.0, 3.0], 0.0),
            Outcome::Skipped(SkipReason::Full)
        );
        assert_eq!(h.counts().skipped_full, 1);
    }

    #[test]
    fn default_thresholds_scale_with_precision() {
        let d64 = Safeguards::<f64>::default();
        let d32 = Safeguards::<f32>::default();
        assert!(d64.curvature < 2e-8 && d64.tiny_step < 1e-7);
        assert!(d32.curvature > 1e-4 && d32.curvature < 1e-3 && d32.tiny_step > 1e-3);
        assert!(d64.validate().is_ok());
        let bad = Safeguards {
            scaling: Scaling::Fixed(0.0),
            ..d64
        };
        assert!(bad.validate().is_err());
    }
}
