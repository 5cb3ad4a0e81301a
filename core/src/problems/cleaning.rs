//! Multiclass data hyper-cleaning (spec C1/C2): learn one weight per training sample so that
//! mislabelled samples stop pulling the classifier away from a clean validation set.
//!
//! ```text
//! y = softmax-regression weights, C blocks of D + 1:  y[c(D+1) .. c(D+1)+D] = w_c,  y[c(D+1)+D] = b_c
//! z_c(a) = w_cᵀa + b_c,   CE(z, k) = ln Σ_c e^{z_c} − z_k
//! g(x, y) = (1/n) Σ_i σ(x_i) CE(z(a_i), k_i) + (μ/2)‖y‖²     (x ∈ R^n: one weight per training sample)
//! f(x, y) = mean over validation of CE(z(a_i), k_i)           (∇_x f = 0)
//! ∇²_xy g·v = (1/n) σ'(x_i) ⟨∇_y CE_i, v⟩ for each sample i
//! ```
//!
//! Targets are class indices `0, 1, …, C − 1` stored as reals. The ridge `μ` (on weights
//! and biases) keeps the lower level strongly convex whatever the sample weights. A
//! minibatch averages over its training rows and touches only their entries of `x`; the
//! upper-level oracles average over the validation rows of the batch.

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::problems::data::Samples;
use crate::scalar::{Real, sigmoid};

/// Hyper-cleaning with `DX` training samples (one weight each), `D` features, `C` classes
/// and `DY = (D + 1)·C` softmax-regression parameters (wrong sizes fail to compile).
///
/// ```
/// use bilevel::problem::{Batch, Problem};
/// use bilevel::problems::{HyperCleaning, Samples};
/// let rows = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]];
/// let classes = [0.0, 1.0, 2.0];
/// let data = Samples::new(&rows, &classes).unwrap();
/// // 3 training samples, 2 features, 3 classes: y has (2 + 1)·3 = 9 entries.
/// let p = HyperCleaning::<f64, 3, 2, 3, 9>::new(data, data, 0.01).unwrap();
/// // At y = 0 every class has probability 1/3: f = ln 3.
/// let f = p.upper_value(&[0.0; 3], &[0.0; 9], Batch::Full).unwrap();
/// assert!((f - 3f64.ln()).abs() < 1e-15);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HyperCleaning<'a, T, const DX: usize, const D: usize, const C: usize, const DY: usize> {
    /// Training set (possibly with corrupted labels): the lower level.
    pub train: Samples<'a, T, D>,
    /// Clean validation set: the upper level.
    pub validation: Samples<'a, T, D>,
    /// Ridge strength `μ` on all of `y`.
    pub l2: T,
}

/// A default ridge strength `μ` for [`HyperCleaning::new`]: small enough not to dominate
/// the data term (benchopt's MNIST setting is `μ = 0.4`, stocBiO's `2e-3`), large enough to
/// keep the lower condition number moderate for standardized features.
pub const HYPER_CLEANING_DEFAULT_L2: f64 = 0.01;

/// Softmax probabilities of the logits `z` (in place) and the cross-entropy against
/// class `k`, computed with the maximum subtracted so nothing overflows.
fn softmax_ce<T: Real, const C: usize>(z: &mut [T; C], k: usize) -> T {
    let mut m = z[0];
    for &v in z.iter() {
        m = m.max(v);
    }
    let zk = z.get(k).copied().unwrap_or(m);
    let mut s = T::ZERO;
    for v in z.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in z.iter_mut() {
        *v /= s;
    }
    s.ln() - (zk - m)
}

/// The class index stored in a target (valid targets were checked at construction).
#[inline]
fn class_of<T: Real>(t: T) -> usize {
    t.to_f64() as usize
}

impl<'a, T: Real, const DX: usize, const D: usize, const C: usize, const DY: usize> HyperCleaning<'a, T, DX, D, C, DY> {
    const SIZES: () = {
        assert!(C >= 2, "at least two classes");
        assert!(
            DY == (D + 1) * C,
            "y holds C blocks of D weights and a bias: DY = (D + 1)·C"
        );
    };

    /// The problem with ridge strength `l2` (e.g. [`HYPER_CLEANING_DEFAULT_L2`]). Fails with
    /// [`Error::InvalidData`] when `train` does not have exactly `DX` rows or a target is not
    /// a class index in `0..C`, and with [`Error::InvalidConfig`] when `l2` is not positive.
    pub fn new(train: Samples<'a, T, D>, validation: Samples<'a, T, D>, l2: T) -> Result<Self, Error> {
        let () = Self::SIZES;
        if train.len() != DX {
            return Err(Error::InvalidData {
                reason: "hyper-cleaning needs exactly DX training samples (one weight each)",
            });
        }
        let valid = |t: T| t >= T::ZERO && t < T::from_u32(C as u32) && T::from_f64(class_of(t) as f64) == t;
        if !train.targets.iter().chain(validation.targets).all(|&t| valid(t)) {
            return Err(Error::InvalidData {
                reason: "hyper-cleaning targets are class indices 0..C",
            });
        }
        if !(l2 > T::ZERO) || !l2.is_finite() {
            return Err(Error::InvalidConfig {
                field: "l2",
                expected: "finite and > 0",
            });
        }
        Ok(HyperCleaning { train, validation, l2 })
    }

    /// The logits `z_c = w_cᵀa + b_c`.
    #[inline]
    fn logits(y: &[T; DY], a: &[T; D]) -> [T; C] {
        let mut z = [T::ZERO; C];
        for c in 0..C {
            z[c] = Self::block_dot(y, c, a);
        }
        z
    }

    /// `⟨(a, 1), v_c⟩` for block `c` of `v`.
    #[inline]
    fn block_dot(v: &[T; DY], c: usize, a: &[T; D]) -> T {
        let o = c * (D + 1);
        let mut s = T::ZERO;
        for j in 0..D {
            s += v[o + j] * a[j];
        }
        s + v[o + D]
    }

    /// Block `c` of `out` += `s·(a, 1)`.
    #[inline]
    fn add_block(out: &mut [T; DY], c: usize, s: T, a: &[T; D]) {
        let o = c * (D + 1);
        for j in 0..D {
            out[o + j] += s * a[j];
        }
        out[o + D] += s;
    }

    /// `out += s·∇_y CE` of one sample, given its softmax probabilities `p` and class `k`.
    #[inline]
    fn add_ce_grad(out: &mut [T; DY], s: T, p: &[T; C], k: usize, a: &[T; D]) {
        for c in 0..C {
            let r = if c == k { p[c] - T::ONE } else { p[c] };
            Self::add_block(out, c, s * r, a);
        }
    }

    /// `⟨∇_y CE, v⟩` of one sample.
    #[inline]
    fn ce_grad_dot(p: &[T; C], k: usize, a: &[T; D], v: &[T; DY]) -> T {
        let mut s = T::ZERO;
        for c in 0..C {
            let r = if c == k { p[c] - T::ONE } else { p[c] };
            s += r * Self::block_dot(v, c, a);
        }
        s
    }

    /// `out += s·∇²_yy CE·v` of one sample: block `c` gets `p_c (u_c − Σ_k p_k u_k)(a, 1)`
    /// with `u_c = ⟨(a, 1), v_c⟩`.
    #[inline]
    fn add_ce_hvp(out: &mut [T; DY], s: T, p: &[T; C], a: &[T; D], v: &[T; DY]) {
        let mut u = [T::ZERO; C];
        let mut mean = T::ZERO;
        for c in 0..C {
            u[c] = Self::block_dot(v, c, a);
            mean += p[c] * u[c];
        }
        for c in 0..C {
            Self::add_block(out, c, s * p[c] * (u[c] - mean), a);
        }
    }

    /// The training rows of `batch` with their first index, targets and `1/len`.
    #[inline]
    fn train_batch(&self, batch: Batch) -> (usize, &'a [[T; D]], &'a [T], T) {
        let start = batch.range(self.train.len()).start;
        let (rows, targets, inv) = self.train.batch(batch);
        (start, rows, targets, inv)
    }

    /// Sum over the training rows of `batch` of `each(i, σ(x_i), σ'(x_i), a_i, p_i, k_i, CE_i)`.
    #[inline]
    fn for_each_train(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        batch: Batch,
        mut each: impl FnMut(usize, T, T, &[T; D], &[T; C], usize, T),
    ) -> T {
        let (start, rows, targets, inv) = self.train_batch(batch);
        for (i, (a, &t)) in rows.iter().zip(targets).enumerate() {
            let idx = start + i;
            let xi = x.get(idx).copied().unwrap_or(T::ZERO);
            let w = sigmoid(xi);
            let k = class_of(t);
            let mut p = Self::logits(y, a);
            let ce = softmax_ce(&mut p, k);
            each(idx, w, w * (T::ONE - w), a, &p, k, ce);
        }
        inv
    }
}

impl<'a, T: Real, const DX: usize, const D: usize, const C: usize, const DY: usize> Problem<T, DX, DY>
    for HyperCleaning<'a, T, DX, D, C, DY>
{
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let mut acc = [T::ZERO; DY];
        let inv = self.for_each_train(x, y, batch, |_, w, _, a, p, k, _| {
            Self::add_ce_grad(&mut acc, w, p, k, a)
        });
        linalg::scale(inv, &mut acc);
        linalg::axpy(self.l2, y, &mut acc);
        *out = acc;
        Ok(())
    }

    fn upper_grad(
        &self,
        _: &[T; DX],
        y: &[T; DY],
        batch: Batch,
        gx: &mut [T; DX],
        gy: &mut [T; DY],
    ) -> Result<(), Error> {
        let (rows, targets, inv) = self.validation.batch(batch);
        *gx = [T::ZERO; DX];
        *gy = [T::ZERO; DY];
        for (a, &t) in rows.iter().zip(targets) {
            let k = class_of(t);
            let mut p = Self::logits(y, a);
            softmax_ce(&mut p, k);
            Self::add_ce_grad(gy, T::ONE, &p, k, a);
        }
        linalg::scale(inv, gy);
        Ok(())
    }

    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let mut acc = [T::ZERO; DY];
        let inv = self.for_each_train(x, y, batch, |_, w, _, a, p, _, _| {
            Self::add_ce_hvp(&mut acc, w, p, a, v)
        });
        linalg::scale(inv, &mut acc);
        linalg::axpy(self.l2, v, &mut acc);
        *out = acc;
        Ok(())
    }

    fn lower_hvp2(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        batch: Batch,
        out1: &mut [T; DY],
        out2: &mut [T; DY],
    ) -> Result<(), Error> {
        // One pass: each sample's softmax is computed once for both products.
        let (mut acc1, mut acc2) = ([T::ZERO; DY], [T::ZERO; DY]);
        let inv = self.for_each_train(x, y, batch, |_, w, _, a, p, _, _| {
            Self::add_ce_hvp(&mut acc1, w, p, a, v1);
            Self::add_ce_hvp(&mut acc2, w, p, a, v2);
        });
        linalg::scale(inv, &mut acc1);
        linalg::scale(inv, &mut acc2);
        linalg::axpy(self.l2, v1, &mut acc1);
        linalg::axpy(self.l2, v2, &mut acc2);
        *out1 = acc1;
        *out2 = acc2;
        Ok(())
    }

    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let mut acc = [T::ZERO; DX];
        let inv = self.for_each_train(x, y, batch, |i, _, dw, a, p, k, _| {
            if let Some(o) = acc.get_mut(i) {
                *o = dw * Self::ce_grad_dot(p, k, a, v);
            }
        });
        linalg::scale(inv, &mut acc);
        *out = acc;
        Ok(())
    }

    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let mut acc = [T::ZERO; DX];
        let inv = self.for_each_train(x, y, batch, |i, _, dw, _, _, _, ce| {
            if let Some(o) = acc.get_mut(i) {
                *o = dw * ce;
            }
        });
        linalg::scale(inv, &mut acc);
        *out = acc;
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let mut s = T::ZERO;
        let inv = self.for_each_train(x, y, batch, |_, w, _, _, _, _, ce| s += w * ce);
        Ok(s * inv + T::from_f64(0.5) * self.l2 * linalg::dot(y, y))
    }

    fn upper_value(&self, _: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let (rows, targets, inv) = self.validation.batch(batch);
        let mut s = T::ZERO;
        for (a, &t) in rows.iter().zip(targets) {
            let mut p = Self::logits(y, a);
            s += softmax_ce(&mut p, class_of(t));
        }
        Ok(s * inv)
    }

    fn samples(&self) -> (usize, usize) {
        (self.train.len(), self.validation.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_normalized() {
        let mut z = [1000.0f64, 0.0, -1000.0];
        let ce = softmax_ce(&mut z, 1);
        assert!((ce - 1000.0).abs() < 1e-12, "{ce}");
        assert!((z[0] - 1.0).abs() < 1e-15 && z[2] == 0.0);
        let mut z = [0.3f64, -0.2, 0.9, 0.1];
        let e: [f64; 4] = core::array::from_fn(|c| libm::exp(z[c]));
        let ce = softmax_ce(&mut z, 2);
        let s: f64 = e.iter().sum();
        assert!((ce - (libm::log(s) - 0.9)).abs() < 1e-15);
        assert!((z.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn rejects_bad_targets_sizes_and_ridge() {
        let rows = [[1.0f64], [2.0]];
        let ok = [0.0, 2.0];
        let s = Samples::new(&rows, &ok).unwrap();
        assert!(HyperCleaning::<f64, 2, 1, 3, 6>::new(s, s, 0.1).is_ok());
        for bad in [[0.0, 3.0], [0.5, 1.0], [-1.0, 0.0]] {
            let b = Samples::new(&rows, &bad).unwrap();
            assert!(matches!(
                HyperCleaning::<f64, 2, 1, 3, 6>::new(s, b, 0.1),
                Err(Error::InvalidData { .. })
            ));
        }
        assert!(matches!(
            HyperCleaning::<f64, 3, 1, 3, 6>::new(s, s, 0.1),
            Err(Error::InvalidData { .. })
        ));
        assert!(matches!(
            HyperCleaning::<f64, 2, 1, 3, 6>::new(s, s, 0.0),
            Err(Error::InvalidConfig { field: "l2", .. })
        ));
    }
}
