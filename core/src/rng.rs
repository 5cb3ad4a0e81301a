//! Seeded, allocation-free random numbers: xoshiro128++ (through `rand_core`), exact
//! uniform floats and Gaussian draws. Same seed, same bits on every target.

use rand_core::{Infallible, Rng, SeedableRng, TryRng, utils};
use rand_xoshiro::SplitMix64;

use crate::scalar::Real;

/// The library's random number generator: xoshiro128++ with its 16 bytes of state held
/// here (so a checkpoint can store it), seeded through `rand_core`'s SplitMix64 exactly as
/// `rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64` does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct Rng128 {
    state: [u32; 4],
}

impl Rng128 {
    /// A generator seeded from a 64-bit seed (16 bytes of SplitMix64 output).
    pub fn new(seed: u64) -> Self {
        let mut bytes = [0u8; 16];
        SplitMix64::seed_from_u64(seed).fill_bytes(&mut bytes);
        let mut state = [0u32; 4];
        for (word, chunk) in state.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        if state == [0; 4] {
            // The all-zero state is a fixed point of xoshiro; any other state will do.
            state = [0x9E37_79B9, 0x7F4A_7C15, 0xF39C_C060, 0x5CED_C834];
        }
        Rng128 { state }
    }

    /// The next 32 random bits: one xoshiro128++ step.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(7).wrapping_add(s[0]);
        let t = s[1] << 9;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(11);
        result
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

/// The generator is a `rand_core` RNG, usable with the `rand` ecosystem.
impl TryRng for Rng128 {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(Rng128::next_u32(self))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        utils::next_u64_via_u32(self)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        utils::fill_bytes_via_next_word(dst, || self.try_next_u32())
    }
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
    fn the_stream_is_rand_xoshiro_s_xoshiro128plusplus() {
        let mut ours = Rng128::new(42);
        let mut theirs = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(42);
        for _ in 0..1000 {
            assert_eq!(ours.next_u32(), theirs.next_u32());
        }
        let mut bytes = [0u8; 7];
        ours.fill_bytes(&mut bytes);
        let mut want = [0u8; 7];
        theirs.fill_bytes(&mut want);
        assert_eq!(bytes, want);
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
