//! `exp` and `ln(1 + x)` for `f32` and `f64` without branches or calls, returning exactly
//! the bits of `libm` (FreeBSD msun's `e_exp.c`, `s_log1p.c` and their `f32` versions).
//!
//! The solvers' hot loops evaluate one exponential per data row (a sigmoid). `libm`'s
//! functions are out-of-line calls with special-case branches, which keep a loop of them
//! scalar. Here the same reduction and the same polynomials run on every input and the
//! special cases are selected at the end, so the functions inline and a loop of them
//! vectorizes (four `f32` lanes on SSE2: a loop of `exp` 2.6× faster; at two `f64` lanes
//! there is no gain, and [`crate::scalar`] keeps `libm` for `f64`). Only IEEE basic
//! operations are used (no fused multiply-add), in msun's order: the results are `libm`'s
//! bit for bit (NaN payloads aside) on every target, which the tests check on all `f32`
//! inputs and on a dense sample of `f64` ones.

use crate::scalar::Real;

/// An IEEE binary floating-point type with msun's constants for `exp` and `log1p`.
///
/// Both algorithms test the "key": the high 32 bits of the representation (all of an
/// `f32`'s). Sealed: implemented for `f32` and `f64` only.
pub trait Ieee: Real + private::Sealed {
    /// Mantissa bits in the key.
    const KEY_MANTISSA: u32;
    /// The exponent bias.
    const BIAS: i32;
    /// From this `|x|` on, `exp` reduces by multiples of ln 2 (msun: key above ½ ln 2's).
    const EXP_REDUCE_AT: Self;
    /// Below this `|x|`, `exp(x)` is `1 + x` (msun: key at most 2⁻²⁸'s, 2⁻¹⁴'s in `f32`).
    const EXP_TINY_BELOW: Self;
    /// 1.5·2^(mantissa bits): adding and subtracting it rounds to an integer, and adding
    /// it leaves that integer in the low bits of the representation.
    const ROUNDER: Self;
    /// Is `exp(x)` beyond the largest finite value?
    fn exp_overflows(x: Self) -> bool;
    /// Is `exp(x)` below half the smallest subnormal?
    fn exp_underflows(x: Self) -> bool;
    /// The high part of ln 2 for `exp`'s reduction (`k·LN2_HI` is exact).
    const LN2_HI: Self;
    /// The rest of ln 2.
    const LN2_LO: Self;
    /// 1/ln 2.
    const INV_LN2: Self;
    /// `r − r²·P(r²)` of msun's rational approximation of `exp` on |r| ≤ ½ ln 2.
    fn exp_c(r: Self) -> Self;
    /// The high part of ln 2 for `log1p`.
    const LOG_LN2_HI: Self;
    /// The rest of ln 2 for `log1p`.
    const LOG_LN2_LO: Self;
    /// Keys of `log1p`: `1 + x < √2` below this (positive `x`), …
    const LOG_SMALL: u32;
    /// … no reduction at or below this key (negative `x` down to `√2/2 − 1`), …
    const LOG_NEG_NO_REDUCE: u32;
    /// … `log1p(x) = x` below this key shifted left by one (|x| tiny), …
    const LOG_TINY_SHIFTED: u32;
    /// … the key of −1 …
    const LOG_MINUS_ONE: u32;
    /// … and of +∞.
    const LOG_INF: u32;
    /// The key of √2/2: `1 + x` is reduced into [√2/2, √2).
    const LOG_SQRT_HALF: u32;
    /// From this exponent on, the correction term of `1 + x`'s rounding is negligible.
    const LOG_NO_CORRECTION: i32;
    /// `(t1, t2)` of msun's polynomial in `z = s²`, `w = z²`.
    fn log_poly(z: Self, w: Self) -> (Self, Self);

    /// `|self|` (the sign bit cleared).
    fn magnitude(self) -> Self;
    /// `self` with the sign bit of `other`.
    fn with_sign_of(self, other: Self) -> Self;
    /// The key: the high 32 bits.
    fn key(self) -> u32;
    /// `self` with its key replaced (low bits kept).
    fn with_key(self, key: u32) -> Self;
    /// 2^k for an integer `k` (held as a float) within the normal exponents.
    fn pow2(k: Self) -> Self;
    /// `k` as a float (exact).
    fn from_i32(k: i32) -> Self;
    /// A quiet NaN.
    const NAN: Self;
    /// −∞.
    const NEG_INFINITY: Self;
    /// +∞.
    const INFINITY: Self;
}

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Ieee for f64 {
    const KEY_MANTISSA: u32 = 20;
    const BIAS: i32 = 0x3ff;
    const EXP_REDUCE_AT: Self = f64::from_bits(0x3fd6_2e43_0000_0000);
    const EXP_TINY_BELOW: Self = f64::from_bits(0x3e30_0001_0000_0000);
    const ROUNDER: Self = 6_755_399_441_055_744.0;
    #[inline(always)]
    fn exp_overflows(x: Self) -> bool {
        x > f64::from_bits(0x4086_2e42_fefa_39ef)
    }
    #[inline(always)]
    fn exp_underflows(x: Self) -> bool {
        x < f64::from_bits(0xc087_4910_d52d_3051)
    }
    const LN2_HI: Self = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: Self = f64::from_bits(0x3dea_39ef_3579_3c76);
    const INV_LN2: Self = f64::from_bits(0x3ff7_1547_652b_82fe);
    #[inline(always)]
    fn exp_c(r: Self) -> Self {
        const P1: f64 = f64::from_bits(0x3fc5_5555_5555_553e);
        const P2: f64 = f64::from_bits(0xbf66_c16c_16be_bd93);
        const P3: f64 = f64::from_bits(0x3f11_566a_af25_de2c);
        const P4: f64 = f64::from_bits(0xbebb_bd41_c5d2_6bf1);
        const P5: f64 = f64::from_bits(0x3e66_3769_72be_a4d0);
        let rr = r * r;
        r - rr * (P1 + rr * (P2 + rr * (P3 + rr * (P4 + rr * P5))))
    }
    const LOG_LN2_HI: Self = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LOG_LN2_LO: Self = f64::from_bits(0x3dea_39ef_3579_3c76);
    const LOG_SMALL: u32 = 0x3fda_827a;
    const LOG_NEG_NO_REDUCE: u32 = 0xbfd2_bec4;
    const LOG_TINY_SHIFTED: u32 = 0x3ca0_0000 << 1;
    const LOG_MINUS_ONE: u32 = 0xbff0_0000;
    const LOG_INF: u32 = 0x7ff0_0000;
    const LOG_SQRT_HALF: u32 = 0x3fe6_a09e;
    const LOG_NO_CORRECTION: i32 = 54;
    #[inline(always)]
    fn log_poly(z: Self, w: Self) -> (Self, Self) {
        const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
        const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
        const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
        const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
        const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
        const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
        const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
        (
            w * (LG2 + w * (LG4 + w * LG6)),
            z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))),
        )
    }
    #[inline(always)]
    fn magnitude(self) -> Self {
        f64::from_bits(self.to_bits() & !0x8000_0000_0000_0000)
    }
    #[inline(always)]
    fn with_sign_of(self, other: Self) -> Self {
        f64::from_bits((self.to_bits() & !0x8000_0000_0000_0000) | (other.to_bits() & 0x8000_0000_0000_0000))
    }
    #[inline(always)]
    fn key(self) -> u32 {
        (self.to_bits() >> 32) as u32
    }
    #[inline(always)]
    fn with_key(self, key: u32) -> Self {
        f64::from_bits((u64::from(key) << 32) | (self.to_bits() & 0xffff_ffff))
    }
    #[inline(always)]
    fn pow2(k: Self) -> Self {
        // The low 11 bits of the sum's representation are k + 1023: the exponent field.
        f64::from_bits((k + (Self::ROUNDER + 1023.0)).to_bits() << 52)
    }
    #[inline(always)]
    fn from_i32(k: i32) -> Self {
        f64::from(k)
    }
    const NAN: Self = f64::NAN;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const INFINITY: Self = f64::INFINITY;
}

impl Ieee for f32 {
    const KEY_MANTISSA: u32 = 23;
    const BIAS: i32 = 0x7f;
    const EXP_REDUCE_AT: Self = f32::from_bits(0x3eb1_7219);
    const EXP_TINY_BELOW: Self = f32::from_bits(0x3900_0001);
    const ROUNDER: Self = 12_582_912.0;
    #[inline(always)]
    fn exp_overflows(x: Self) -> bool {
        // msun: the key of x at or above 0x42b17218 (88.72284), positive.
        x >= f32::from_bits(0x42b1_7218)
    }
    #[inline(always)]
    fn exp_underflows(x: Self) -> bool {
        // msun: the key of |x| at or above 0x42cff1b5 (103.97208), negative.
        x <= -f32::from_bits(0x42cf_f1b5)
    }
    const LN2_HI: Self = f32::from_bits(0x3f31_7200);
    const LN2_LO: Self = f32::from_bits(0x35bf_be8e);
    const INV_LN2: Self = f32::from_bits(0x3fb8_aa3b);
    #[inline(always)]
    fn exp_c(r: Self) -> Self {
        const P1: f32 = f32::from_bits(0x3e2a_aa8f);
        const P2: f32 = f32::from_bits(0xbb35_5215);
        let rr = r * r;
        r - rr * (P1 + rr * P2)
    }
    const LOG_LN2_HI: Self = f32::from_bits(0x3f31_7180);
    const LOG_LN2_LO: Self = f32::from_bits(0x3717_f7d1);
    const LOG_SMALL: u32 = 0x3ed4_13d0;
    const LOG_NEG_NO_REDUCE: u32 = 0xbe95_f619;
    const LOG_TINY_SHIFTED: u32 = 0x3380_0000 << 1;
    const LOG_MINUS_ONE: u32 = 0xbf80_0000;
    const LOG_INF: u32 = 0x7f80_0000;
    const LOG_SQRT_HALF: u32 = 0x3f35_04f3;
    const LOG_NO_CORRECTION: i32 = 25;
    #[inline(always)]
    fn log_poly(z: Self, w: Self) -> (Self, Self) {
        const LG1: f32 = f32::from_bits(0x3f2a_aaaa);
        const LG2: f32 = f32::from_bits(0x3ecc_ce13);
        const LG3: f32 = f32::from_bits(0x3e91_e9ee);
        const LG4: f32 = f32::from_bits(0x3e78_9e26);
        (w * (LG2 + w * LG4), z * (LG1 + w * LG3))
    }
    #[inline(always)]
    fn magnitude(self) -> Self {
        f32::from_bits(self.to_bits() & !0x8000_0000)
    }
    #[inline(always)]
    fn with_sign_of(self, other: Self) -> Self {
        f32::from_bits((self.to_bits() & !0x8000_0000) | (other.to_bits() & 0x8000_0000))
    }
    #[inline(always)]
    fn key(self) -> u32 {
        self.to_bits()
    }
    #[inline(always)]
    fn with_key(self, key: u32) -> Self {
        f32::from_bits(key)
    }
    #[inline(always)]
    fn pow2(k: Self) -> Self {
        // The low 9 bits of the sum's representation are k + 127: the exponent field and
        // a zero sign.
        f32::from_bits((k + (Self::ROUNDER + 127.0)).to_bits() << 23)
    }
    #[inline(always)]
    fn from_i32(k: i32) -> Self {
        k as f32
    }
    const NAN: Self = f32::NAN;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const INFINITY: Self = f32::INFINITY;
}

/// `e^x`, bit for bit `libm::exp` / `libm::expf`.
///
/// Float operations, sign-bit operations and a few selects only: the integer `k` of the
/// reduction stays a float (rounded with [`Ieee::ROUNDER`]) and 2^k is built from its
/// representation, so that a loop of these vectorizes even on SSE2.
#[inline(always)]
pub fn exp<F: Ieee>(x: F) -> F {
    let ax = x.magnitude();
    let half = F::ONE / (F::ONE + F::ONE);
    // x = k ln 2 + r, |r| ≤ ½ ln 2. msun truncates x/ln 2 ± ½ (rounds half away from
    // zero), which is ±⌊|x|/ln 2 + ½⌋; it takes k = 0 below its threshold near ½ ln 2.
    let shifted = F::INV_LN2 * ax + half;
    let nearest = (shifted + F::ROUNDER) - F::ROUNDER;
    let floor = if nearest > shifted { nearest - F::ONE } else { nearest };
    let k = if ax >= F::EXP_REDUCE_AT { floor } else { F::ZERO }.with_sign_of(x);
    let hi = x - k * F::LN2_HI;
    let lo = k * F::LN2_LO;
    let r = hi - lo;
    let c = F::exp_c(r);
    let y = F::ONE + (r * c / ((F::ONE + F::ONE) - c) - lo + hi);
    // 2^k in two exact factors, so that a subnormal result rounds once, as msun's scalbn.
    let k1 = (k * half + F::ROUNDER) - F::ROUNDER;
    let scaled = y * F::pow2(k1) * F::pow2(k - k1);
    // Beyond the range k and 2^k are meaningless; the result is selected, not computed.
    if F::exp_overflows(x) {
        F::INFINITY
    } else if F::exp_underflows(x) {
        F::ZERO
    } else if ax < F::EXP_TINY_BELOW {
        F::ONE + x
    } else {
        scaled
    }
}

/// `ln(1 + x)`, bit for bit `libm::log1p` / `libm::log1pf`.
#[inline(always)]
pub fn ln_1p<F: Ieee>(x: F) -> F {
    let hx = x.key();
    let below_sqrt2 = hx < F::LOG_SMALL || hx >> 31 != 0;
    // 1 + x = 2^k·u, u ∈ [√2/2, √2), with c the rounding error of 1 + x relative to it.
    let one_plus = F::ONE + x;
    let hu = one_plus
        .key()
        .wrapping_add((F::BIAS as u32) << F::KEY_MANTISSA)
        .wrapping_sub(F::LOG_SQRT_HALF);
    let k_reduced = (hu >> F::KEY_MANTISSA) as i32 - F::BIAS;
    let rounding = if k_reduced >= 2 {
        F::ONE - (one_plus - x)
    } else {
        x - (one_plus - F::ONE)
    };
    let c_reduced = if k_reduced < F::LOG_NO_CORRECTION {
        rounding / one_plus
    } else {
        F::ZERO
    };
    let mantissa = (1u32 << F::KEY_MANTISSA) - 1;
    let f_reduced = one_plus.with_key((hu & mantissa).wrapping_add(F::LOG_SQRT_HALF)) - F::ONE;
    // Between √2/2 − 1 and √2 − 1 no reduction: f = x exactly.
    let (k, c, f) = if below_sqrt2 && hx <= F::LOG_NEG_NO_REDUCE {
        (0, F::ZERO, x)
    } else {
        (k_reduced, c_reduced, f_reduced)
    };
    let half = F::ONE / (F::ONE + F::ONE);
    let hfsq = half * f * f;
    let s = f / ((F::ONE + F::ONE) + f);
    let z = s * s;
    let w = z * z;
    let (t1, t2) = F::log_poly(z, w);
    let r = t2 + t1;
    let dk = F::from_i32(k);
    let result = s * (hfsq + r) + (dk * F::LOG_LN2_LO + c) - hfsq + f + dk * F::LOG_LN2_HI;
    if below_sqrt2 && hx >= F::LOG_MINUS_ONE {
        if x == -F::ONE { F::NEG_INFINITY } else { F::NAN }
    } else if (below_sqrt2 && hx << 1 < F::LOG_TINY_SHIFTED) || (!below_sqrt2 && hx >= F::LOG_INF) {
        // |x| below the precision of 1 + x; +∞ and NaN.
        x
    } else {
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 bit patterns of a stride through all of them, and ±2¹⁶ ulps around every
    /// threshold either function tests.
    fn f64_samples() -> impl Iterator<Item = f64> {
        let stride = (0..1u64 << 20).map(|i| f64::from_bits(i.wrapping_mul(0x0000_1000_0000_0fff)));
        let thresholds = [
            f64::EXP_REDUCE_AT,
            f64::EXP_TINY_BELOW,
            f64::from_bits(0x3ff0_a2b2_0000_0000),
            f64::from_bits(0x4086_2e42_fefa_39ef),
            f64::from_bits(0xc087_4910_d52d_3051),
            -708.396_418_532_264,
            0.5 * core::f64::consts::LN_2,
            f64::from_bits(0x3fda_827a_0000_0000),
            -f64::from_bits(0x3fd2_bec4_0000_0000),
            f64::from_bits(0x3ca0_0000_0000_0000),
            -1.0,
            1.0,
        ];
        let near = thresholds.into_iter().flat_map(|t| {
            [t, -t]
                .into_iter()
                .flat_map(|t| (-(1i64 << 16)..1 << 16).map(move |d| f64::from_bits(t.to_bits().wrapping_add_signed(d))))
        });
        stride.chain(near)
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn exp_is_libm_bit_for_bit_on_a_dense_f64_sample() {
        for x in f64_samples() {
            assert!(
                same(exp(x), libm::exp(x)),
                "exp({x:e}) = {:e}, libm {:e}",
                exp(x),
                libm::exp(x)
            );
        }
    }

    #[test]
    fn ln_1p_is_libm_bit_for_bit_on_a_dense_f64_sample() {
        for x in f64_samples() {
            assert!(
                same(ln_1p(x), libm::log1p(x)),
                "ln_1p({x:e}) = {:e}, libm {:e}",
                ln_1p(x),
                libm::log1p(x)
            );
        }
    }

    #[test]
    fn special_values_are_exact() {
        for (x, want) in [
            (0.0, 1.0),
            (-0.0, 1.0),
            (f64::INFINITY, f64::INFINITY),
            (f64::NEG_INFINITY, 0.0),
            (710.0, f64::INFINITY),
            (-746.0, 0.0),
            (f64::MAX, f64::INFINITY),
            (f64::MIN, 0.0),
        ] {
            assert_eq!(exp(x).to_bits(), f64::to_bits(want), "exp({x})");
        }
        assert!(exp(f64::NAN).is_nan() && exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(ln_1p(-1.0f64), f64::NEG_INFINITY);
        assert_eq!(ln_1p(-1.0f32), f32::NEG_INFINITY);
        assert!(ln_1p(-2.0f64).is_nan() && ln_1p(f64::NAN).is_nan() && ln_1p(f64::NEG_INFINITY).is_nan());
        assert_eq!(ln_1p(f64::INFINITY), f64::INFINITY);
        assert_eq!(ln_1p(0.0f64).to_bits(), 0.0f64.to_bits());
        assert_eq!(ln_1p(-0.0f64).to_bits(), (-0.0f64).to_bits());
        assert_eq!(ln_1p(f64::MIN_POSITIVE / 4.0), f64::MIN_POSITIVE / 4.0);
    }

    #[test]
    fn f32_is_libm_bit_for_bit_on_a_stride() {
        // Every 97th pattern here; tests/tests/elementary.rs checks all 2³² of them.
        for bits in (0..=u32::MAX).step_by(97) {
            let x = f32::from_bits(bits);
            let (e, l) = (exp(x), ln_1p(x));
            assert!(
                e.to_bits() == libm::expf(x).to_bits() || (e.is_nan() && x.is_nan()),
                "expf({x:e})"
            );
            let lm = libm::log1pf(x);
            assert!(
                l.to_bits() == lm.to_bits() || (l.is_nan() && lm.is_nan()),
                "log1pf({x:e})"
            );
        }
    }
}
