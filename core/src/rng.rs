//! Seeded, allocation-free random numbers: xoshiro128++ (through `rand_core`), exact
//! uniform floats and Gaussian draws. Same seed, same bits on every target.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro128PlusPlus;

use crate::scalar::Real;

/// The library's random number generator: xoshiro128++, 16 bytes of state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rng128(Xoshiro128PlusPlus);

/// Four `u32` state words, each a varint of at most 5 bytes.
#[cfg(feature = "serde")]
impl postcard::experimental::max_size::MaxSize for Rng128 {
    const POSTCARD_MAX_SIZE: usize = 4 * 5;
}

impl Rng128 {
    /// A generator seeded from a 64-bit seed (through SplitMix64, as `rand_core` does).
    pub fn new(seed: u64) -> Self {
        Rng128(Xoshiro128PlusPlus::seed_from_u64(seed))
    }

    /// The next 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// Uniform in `[0, 1)`: the top 24 bits times 2⁻²⁴, exact in `f32` and `f64`.
    #[inline]
    pub fn uniform<T: Real>(&mut self) -> T {
        T::from_f64((self.next_u32() >> 8) as f64 * (1.0 / 16_777_216.0))
    }

    /// Uniform integer in `0..n` (`0` when `n == 0`), by Lemire's multiply-shift (the tiny
    /// bias of skipping rejection is irrelevant at the sizes used here).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// Standard normal draw (Box–Muller on two exact uniforms, computed in `T`).
    pub fn gaussian<T: Real>(&mut self) -> T {
        // u1 in (0, 1]: avoids ln(0).
        let u1 = T::ONE - self.uniform::<T>();
        let u2: T = self.uniform();
        let two_pi = T::from_f64(core::f64::consts::TAU);
        let r = (T::from_f64(-2.0) * u1.ln()).sqrt();
        r * cos(two_pi * u2)
    }

    /// Fills `out` with standard normal draws.
    pub fn fill_gaussian<T: Real, const N: usize>(&mut self, out: &mut [T; N]) {
        for v in out.iter_mut() {
            *v = self.gaussian();
        }
    }
}

fn cos<T: Real>(t: T) -> T {
    // The only trigonometric call in the library; through libm in f64 for determinism.
    T::from_f64(libm::cos(t.to_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_differs() {
        let (mut a, mut b, mut c) = (Rng128::new(1), Rng128::new(1), Rng128::new(2));
        let va: [u32; 4] = core::array::from_fn(|_| a.next_u32());
        let vb: [u32; 4] = core::array::from_fn(|_| b.next_u32());
        let vc: [u32; 4] = core::array::from_fn(|_| c.next_u32());
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn gaussian_moments() {
        let mut r = Rng128::new(3);
        let n = 200_000;
        let (mut m, mut s) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let g: f64 = r.gaussian();
            m += g;
            s += g * g;
        }
        m /= n as f64;
        s = s / n as f64 - m * m;
        assert!(m.abs() < 0.01, "mean {m}");
        assert!((s - 1.0).abs() < 0.01, "var {s}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng128::new(9);
        for n in 1..50 {
            for _ in 0..50 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
    }
}
