//! The [`Real`] scalar trait: the arithmetic every solver needs, for `f32`, `f64` and the
//! dual numbers of [`crate::autodiff`].
//!
//! All transcendental functions go through `libm`, called by path, so that the host and a
//! Cortex-M produce the same bits. Never call inherent float math (`x.sqrt()`) in this crate.
//! On hosts, `f32` takes `exp` and `ln_1p` from [`crate::elementary`]: `libm`'s bits without
//! its branches, which the host vectorizes four lanes wide (a logistic loss 1.5× faster). A
//! Cortex-M keeps `libm`'s calls (inlined, the branch-free forms cost 1.5 KB of flash and
//! there is nothing to vectorize), and so does `f64` everywhere (two SSE2 lanes gain nothing
//! in the row loops). The bits are the same either way.

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real scalar: `f32`, `f64`, or a dual number over one of them.
///
/// Comparisons on dual numbers compare the real part, which is what branches in a loss
/// (e.g. a numerically stable softplus) need.
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialEq
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Machine epsilon of the underlying float type; thresholds are scaled by it so that
    /// the same code is safe in `f32` and `f64`.
    const EPSILON: Self;
    /// Largest finite value of the underlying float type.
    const MAX: Self;

    /// Converts from `f64` (rounding to the nearest representable value).
    fn from_f64(v: f64) -> Self;
    /// The real part as `f64`.
    fn to_f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Exponential.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// `ln(1 + self)`, accurate near zero.
    fn ln_1p(self) -> Self;
    /// `self` raised to a real power.
    fn powf(self, e: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `true` unless the value (any component, for dual numbers) is NaN or infinite.
    fn is_finite(self) -> bool;

    /// The larger of two values (by real part).
    #[inline]
    fn max(self, other: Self) -> Self {
        if other > self { other } else { self }
    }
    /// The smaller of two values (by real part).
    #[inline]
    fn min(self, other: Self) -> Self {
        if other < self { other } else { self }
    }
    /// Converts a small integer exactly.
    #[inline]
    fn from_u32(v: u32) -> Self {
        Self::from_f64(v as f64)
    }
}

/// `f32` `exp`: see the module docs for which form runs where.
#[inline]
fn exp_f32(x: f32) -> f32 {
    #[cfg(not(target_arch = "arm"))]
    let e = crate::elementary::exp(x);
    #[cfg(target_arch = "arm")]
    let e = libm::expf(x);
    e
}

/// `f32` `ln(1 + x)`: see the module docs for which form runs where.
#[inline]
fn ln_1p_f32(x: f32) -> f32 {
    #[cfg(not(target_arch = "arm"))]
    let l = crate::elementary::ln_1p(x);
    #[cfg(target_arch = "arm")]
    let l = libm::log1pf(x);
    l
}

macro_rules! impl_real {
    ($t:ty, $sqrt:path, $exp:path, $ln:path, $ln1p:path, $pow:path, $abs:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const EPSILON: Self = <$t>::EPSILON;
            const MAX: Self = <$t>::MAX;
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn sqrt(self) -> Self {
                $sqrt(self)
            }
            #[inline]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                $ln1p(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                $pow(self, e)
            }
            #[inline]
            fn abs(self) -> Self {
                $abs(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}

impl_real!(
    f32,
    libm::sqrtf,
    exp_f32,
    libm::logf,
    ln_1p_f32,
    libm::powf,
    libm::fabsf
);
impl_real!(
    f64,
    libm::sqrt,
    libm::exp,
    libm::log,
    libm::log1p,
    libm::pow,
    libm::fabs
);

/// `ln(1 + e^t)`, computed without overflow for large `|t|`: `max(t, 0) + ln(1 + e^{−|t|})`.
/// Both sides are evaluated and the sign only selects, so a loop over rows has no branch.
#[inline]
pub fn softplus<S: Real>(t: S) -> S {
    // Selected on the same test as the positive part, so that a dual number at t = 0 takes
    // the derivative of one side.
    let (positive_part, minus_abs) = if t > S::ZERO { (t, -t) } else { (S::ZERO, t) };
    positive_part + minus_abs.exp().ln_1p()
}

/// The logistic sigmoid `1 / (1 + e^{-t})`, computed without overflow: `e^{−|t|}` over
/// `1 + e^{−|t|}` for negative `t`, one over it otherwise (a select, not a branch).
#[inline]
pub fn sigmoid<S: Real>(t: S) -> S {
    let (minus_abs, positive) = if t >= S::ZERO { (-t, true) } else { (t, false) };
    let e = minus_abs.exp();
    let numerator = if positive { S::ONE } else { e };
    numerator / (S::ONE + e)
}

/// Fast approximate square root (micromath) for monitoring and display only: never for
/// curvature tests, line searches or anything compared between host and device.
#[cfg(feature = "micromath")]
#[inline]
pub fn approx_sqrt(x: f32) -> f32 {
    micromath::F32(x).sqrt().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "micromath")]
    #[test]
    fn the_display_square_root_is_close_to_the_exact_one() {
        let mut worst = 0.0f32;
        for i in 1..2000 {
            let x = 1e-6 * 1.02f32.powi(i);
            let (approx, exact) = (approx_sqrt(x), libm::sqrtf(x));
            // The halved-exponent bit trick: 1.5/√2 − 1 = 6.07 % at worst (micromath: "~5 %").
            assert!((approx - exact).abs() <= 0.0607 * exact, "{x}: {approx} vs {exact}");
            worst = worst.max((approx - exact).abs() / exact);
        }
        std::println!("micromath sqrt: worst relative error {worst:e} over 1e-6..1e11");
    }

    #[test]
    fn softplus_is_stable_and_accurate() {
        for &t in &[-800.0f64, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0] {
            let s = softplus(t);
            assert!(s.is_finite());
            if t.abs() < 50.0 {
                let direct = libm::log(1.0 + libm::exp(t));
                assert!((s - direct).abs() <= 1e-14 * (1.0 + direct.abs()), "t={t}");
            }
        }
        assert_eq!(softplus(800.0f64), 800.0);
        assert!(softplus(-800.0f64) >= 0.0);
    }

    #[test]
    fn sigmoid_matches_definition_and_saturates() {
        for &t in &[-5.0f64, -0.5, 0.0, 0.5, 5.0] {
            let direct = 1.0 / (1.0 + libm::exp(-t));
            assert!((sigmoid(t) - direct).abs() < 1e-15);
        }
        assert_eq!(sigmoid(-1000.0f32), 0.0);
        assert_eq!(sigmoid(1000.0f32), 1.0);
    }

    #[test]
    fn f32_math_is_libm() {
        assert_eq!(Real::sqrt(2.0f32).to_bits(), libm::sqrtf(2.0).to_bits());
        assert_eq!(Real::exp(0.3f32).to_bits(), libm::expf(0.3).to_bits());
    }
}
