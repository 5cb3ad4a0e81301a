//! Multiclass data hyper-cleaning (spec §5.3): learn one weight per training sample so that
//! a softmax classifier trained on the weighted, partly mislabelled training set does well on
//! a clean validation set. Samples whose weight goes to zero are the ones judged corrupted.
//!
//! ```text
//! g(x, y) = (1/n) Σ_train σ(xᵢ)·CE(zᵢ, cᵢ) + (ρ/2)‖y‖²        zᵢ = Wᵀaᵢ + b (C logits)
//! f(x, y) = (1/m) Σ_val   CE(zᵢ, cᵢ)                          CE(z, c) = ln Σ_k e^{z_k} − z_c
//! ```
//!
//! `x ∈ R^N` holds one logit-weight per training sample (`DX = N`, the number of training
//! rows); `y ∈ R^{(D+1)·C}` holds the weights class by class, then the biases: class `c`'s
//! weights at `y[c·D .. c·D + D]`, its bias at `y[C·D + c]` (`DY = (D + 1)·C`). The fixed
//! L2 `ρ` ([`HyperCleaning::DEFAULT_L2`]) covers weights and biases: without it the lower
//! level is flat along a common shift of all logits, and a sample weight near zero removes
//! that sample's curvature.
//!
//! Labels are the targets of [`Samples`], class indices `0, 1, …, C − 1` stored as `T`
//! (exact in `f32` up to 2²⁴), so every problem reads the same data type.
//!
//! A minibatch [`Batch::Range`] of the training rows takes the mean over its rows and slices
//! `x` with them: `∇_x` oracles are zero outside the batch. The penalty enters every batch in
//! full.

use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::problems::data::{BatchRows, Samples};
use crate::scalar::{Real, sigmoid};
use crate::smoothness::Smoothness;

/// Softmax-regression data hyper-cleaning with `C` classes, `D` features and `N` training
/// samples (see the module docs).
///
/// ```
/// use bilevel::Batch;
/// use bilevel::problem::Problem;
/// use bilevel::problems::{HyperCleaning, Samples};
/// let (rows, labels) = ([[1.0], [2.0], [-1.0], [-2.0]], [0.0, 0.0, 1.0, 0.0]); // the last is mislabelled
/// let (val_rows, val_labels) = ([[1.5], [-1.5]], [0.0, 1.0]);
/// let train = Samples::new(&rows, &labels).unwrap();
/// let validation = Samples::new(&val_rows, &val_labels).unwrap();
/// // One feature, two classes, four training samples: x ∈ R⁴, y = [w₀, w₁, b₀, b₁].
/// let p: HyperCleaning<'_, f64, 1, 2, 4, 4> = HyperCleaning::new(train, validation).unwrap();
/// let mut g = [0.0; 4];
/// p.lower_grad(&[0.0; 4], &[0.0; 4], Batch::Full, &mut g).unwrap();
/// assert!(bilevel::linalg::all_finite(&g));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HyperCleaning<'a, T, const D: usize, const C: usize, const N: usize, const DY: usize> {
    /// Training samples with possibly corrupted labels: the lower level (exactly `N` rows).
    pub train: Samples<'a, T, D>,
    /// Clean validation samples: the upper level.
    pub validation: Samples<'a, T, D>,
    /// The lower level's L2 strength `ρ` on weights and biases.
    pub l2: T,
}

/// The class index of a label already checked by [`HyperCleaning::new`] (out-of-range values
/// clamp to the last class, which never happens for checked data).
#[inline]
fn class<T: Real, const C: usize>(label: T) -> usize {
    (label.to_f64() as usize).min(C - 1)
}

/// `true` when `label` is one of `0, 1, …, C − 1`.
fn is_class<T: Real, const C: usize>(label: T) -> bool {
    let v = label.to_f64();
    v >= 0.0 && v < C as f64 && v == (v as usize) as f64
}

/// The `C` logits `Wᵀa + b` of `row` under `y` (or their directional derivative along `v`
/// when passed `v`: the map is linear).
#[inline]
fn logits<T: Real, const D: usize, const C: usize, const DY: usize>(row: &[T; D], y: &[T; DY]) -> [T; C] {
    let mut z = [T::ZERO; C];
    for (c, zc) in z.iter_mut().enumerate() {
        let mut s = y[C * D + c];
        for j in 0..D {
            s += row[j] * y[c * D + j];
        }
        *zc = s;
    }
    z
}

/// `out += coef ⊗ [a, 1]`: `coef_c·a` into class `c`'s weights and `coef_c` into its bias
/// (the transpose of [`logits`]).
#[inline]
fn add_outer<T: Real, const D: usize, const C: usize, const DY: usize>(coef: &[T; C], row: &[T; D], out: &mut [T; DY]) {
    for c in 0..C {
        for j in 0..D {
            out[c * D + j] += coef[c] * row[j];
        }
        out[C * D + c] += coef[c];
    }
}

/// Softmax probabilities of `z` and `ln Σ e^{z_k}`, shifted by the largest logit so nothing
/// overflows.
#[inline]
fn softmax<T: Real, const C: usize>(z: &[T; C]) -> ([T; C], T) {
    let mut m = z[0];
    for &v in z.iter() {
        m = m.max(v);
    }
    let mut p = [T::ZERO; C];
    let mut s = T::ZERO;
    for c in 0..C {
        p[c] = (z[c] - m).exp();
        s += p[c];
    }
    let inv = T::ONE / s;
    for pc in p.iter_mut() {
        *pc *= inv;
    }
    (p, m + s.ln())
}

/// `∇_z CE = p − e_c`.
#[inline]
fn ce_grad<T: Real, const C: usize>(p: &[T; C], label: usize) -> [T; C] {
    let mut g = *p;
    if let Some(gc) = g.get_mut(label) {
        *gc -= T::ONE;
    }
    g
}

/// `∇²_z CE·dz = p ⊙ dz − p (p·dz)`.
#[inline]
fn ce_hvp<T: Real, const C: usize>(p: &[T; C], dz: &[T; C]) -> [T; C] {
    let pd = linalg::dot(p, dz);
    let mut h = [T::ZERO; C];
    for c in 0..C {
        h[c] = p[c] * (dz[c] - pd);
    }
    h
}

/// Mean cross-entropy of `y` on `batch` of `data`.
fn mean_ce<T: Real, const D: usize, const C: usize, const DY: usize>(
    data: &Samples<'_, T, D>,
    y: &[T; DY],
    batch: Batch,
) -> Result<T, Error> {
    let (rows, labels, inv) = data.nonempty(batch)?;
    let mut s = T::ZERO;
    for (row, &label) in rows.iter().zip(labels) {
        let z = logits::<T, D, C, DY>(row, y);
        let (_, lse) = softmax(&z);
        s += lse - z[class::<T, C>(label)];
    }
    Ok(s * inv)
}

impl<'a, T: Real, const D: usize, const C: usize, const N: usize, const DY: usize> HyperCleaning<'a, T, D, C, N, DY> {
    /// The default L2 strength `ρ = 0.01` of the lower level (`(ρ/2)‖y‖²`, weights and
    /// biases): keeps the lower level strongly convex with condition number about
    /// `(¼·max‖âᵢ‖² + ρ)/ρ` whatever the sample weights, small enough next to the data term
    /// that the classifier still fits the data.
    pub const DEFAULT_L2: f64 = 0.01;

    /// The problem on `train` (exactly `N` rows, labels possibly corrupted) and `validation`
    /// (clean labels), with ρ = [`Self::DEFAULT_L2`]. Labels are class indices `0..C`
    /// stored as `T`; anything else is [`Error::InvalidData`]. Sizes are checked at compile
    /// time: `C ≥ 2`, `DY = (D + 1)·C`, `N ≥ 1`.
    pub fn new(train: Samples<'a, T, D>, validation: Samples<'a, T, D>) -> Result<Self, Error> {
        const {
            assert!(C >= 2, "at least two classes");
            assert!(
                DY == (D + 1) * C,
                "y holds D weights and one bias per class: DY = (D + 1)·C"
            );
            assert!(N >= 1, "one upper variable per training sample: DX = N ≥ 1");
        }
        if train.len() != N {
            return Err(Error::InvalidData {
                reason: "hyper-cleaning needs exactly N training rows (one weight each)",
            });
        }
        let labelled = |s: &Samples<'a, T, D>| s.targets.iter().all(|&t| is_class::<T, C>(t));
        if !labelled(&train) || !labelled(&validation) {
            return Err(Error::InvalidData {
                reason: "class labels must be integers in 0..C",
            });
        }
        Ok(HyperCleaning {
            train,
            validation,
            l2: T::from_f64(Self::DEFAULT_L2),
        })
    }

    /// The same problem with L2 strength `l2` instead of the default;
    /// [`Error::InvalidConfig`] unless it is positive and finite.
    pub fn with_l2(self, l2: T) -> Result<Self, Error> {
        ensure(l2 > T::ZERO && l2.is_finite(), "l2", "positive and finite")?;
        Ok(HyperCleaning { l2, ..self })
    }

    /// The smoothness of `∇_y g` for any `x`, for the whole training set and for its
    /// minibatches: `½` of the Gram matrix's (the softmax Hessian is at most ½ in norm, the
    /// weights `σ(xᵢ)` at most 1) plus `ρ`.
    pub fn lower_smoothness(&self) -> Smoothness {
        self.train.smoothness().scaled(0.5, self.l2.to_f64())
    }

    /// The Lipschitz constant of the full-batch `∇_y g` for any `x` (a safe lower-level step
    /// is its inverse).
    pub fn lower_lipschitz(&self) -> T {
        T::from_f64(self.lower_smoothness().full)
    }

    /// Mean cross-entropy of the classifier `y` on `data` (e.g. a test set).
    pub fn loss(data: &Samples<'_, T, D>, y: &[T; DY]) -> Result<T, Error> {
        mean_ce::<T, D, C, DY>(data, y, Batch::Full)
    }

    /// The class the classifier `y` predicts for `row` (the first of equal largest logits).
    pub fn predict(row: &[T; D], y: &[T; DY]) -> usize {
        let z = logits::<T, D, C, DY>(row, y);
        let mut best = 0;
        for c in 1..C {
            if z[c] > z[best] {
                best = c;
            }
        }
        best
    }

    /// Fraction of `data` whose label the classifier `y` predicts.
    pub fn accuracy(data: &Samples<'_, T, D>, y: &[T; DY]) -> T {
        let mut right = 0u32;
        for (row, &label) in data.features.iter().zip(data.targets) {
            if is_class::<T, C>(label) && Self::predict(row, y) == class::<T, C>(label) {
                right += 1;
            }
        }
        T::from_u32(right) / T::from_f64(data.len().max(1) as f64)
    }

    /// The training rows of `batch`, their first index (for slicing `x`) and `1/len`.
    fn train_batch(&self, batch: Batch) -> Result<(usize, BatchRows<'a, T, D>), Error> {
        let rows = self.train.nonempty(batch)?;
        Ok((batch.range(self.train.len()).start, rows))
    }

    /// `(1/|B|) Σ_B σ(xᵢ)·∇²_y CEᵢ·v` for each of the `K` vectors `vs` over the training
    /// rows of `batch` (no penalty), in one pass.
    fn data_hvp<const K: usize>(
        &self,
        x: &[T; N],
        y: &[T; DY],
        vs: [&[T; DY]; K],
        batch: Batch,
    ) -> Result<[[T; DY]; K], Error> {
        let (start, (rows, _, inv)) = self.train_batch(batch)?;
        let mut outs = [[T::ZERO; DY]; K];
        for (row, &xi) in rows.iter().zip(x.iter().skip(start)) {
            let (p, _) = softmax(&logits::<T, D, C, DY>(row, y));
            let w = sigmoid(xi);
            for (v, out) in vs.iter().zip(outs.iter_mut()) {
                let mut h = ce_hvp(&p, &logits::<T, D, C, DY>(row, v));
                linalg::scale(w, &mut h);
                add_outer(&h, row, out);
            }
        }
        for out in outs.iter_mut() {
            linalg::scale(inv, out);
        }
        Ok(outs)
    }
}

impl<T: Real, const D: usize, const C: usize, const N: usize, const DY: usize> Problem<T, N, DY>
    for HyperCleaning<'_, T, D, C, N, DY>
{
    fn lower_grad(&self, x: &[T; N], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let (start, (rows, labels, inv)) = self.train_batch(batch)?;
        *out = [T::ZERO; DY];
        for ((row, &label), &xi) in rows.iter().zip(labels).zip(x.iter().skip(start)) {
            let (p, _) = softmax(&logits::<T, D, C, DY>(row, y));
            let mut g = ce_grad(&p, class::<T, C>(label));
            linalg::scale(sigmoid(xi), &mut g);
            add_outer(&g, row, out);
        }
        linalg::scale(inv, out);
        linalg::axpy(self.l2, y, out);
        Ok(())
    }

    fn upper_grad(
        &self,
        _: &[T; N],
        y: &[T; DY],
        batch: Batch,
        gx: &mut [T; N],
        gy: &mut [T; DY],
    ) -> Result<(), Error> {
        let (rows, labels, inv) = self.validation.nonempty(batch)?;
        *gx = [T::ZERO; N];
        *gy = [T::ZERO; DY];
        for (row, &label) in rows.iter().zip(labels) {
            let (p, _) = softmax(&logits::<T, D, C, DY>(row, y));
            add_outer(&ce_grad(&p, class::<T, C>(label)), row, gy);
        }
        linalg::scale(inv, gy);
        Ok(())
    }

    fn lower_hvp(&self, x: &[T; N], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        [*out] = self.data_hvp(x, y, [v], batch)?;
        linalg::axpy(self.l2, v, out);
        Ok(())
    }

    /// One pass over the batch for both products: the softmax probabilities are shared.
    fn lower_hvp2(
        &self,
        x: &[T; N],
        y: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        batch: Batch,
        out1: &mut [T; DY],
        out2: &mut [T; DY],
    ) -> Result<(), Error> {
        [*out1, *out2] = self.data_hvp(x, y, [v1, v2], batch)?;
        linalg::axpy(self.l2, v1, out1);
        linalg::axpy(self.l2, v2, out2);
        Ok(())
    }

    /// `(1/|B|)·σ'(xᵢ)·⟨∇_y CEᵢ, v⟩` in entry `i` of the batch, zero elsewhere.
    fn lower_cross(&self, x: &[T; N], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; N]) -> Result<(), Error> {
        let (start, (rows, labels, inv)) = self.train_batch(batch)?;
        *out = [T::ZERO; N];
        for (k, (row, &label)) in rows.iter().zip(labels).enumerate() {
            let i = start + k;
            let (p, _) = softmax(&logits::<T, D, C, DY>(row, y));
            let g = ce_grad(&p, class::<T, C>(label));
            let dz = logits::<T, D, C, DY>(row, v);
            if let (Some(o), Some(&xi)) = (out.get_mut(i), x.get(i)) {
                let s = sigmoid(xi);
                *o = inv * s * (T::ONE - s) * linalg::dot(&g, &dz);
            }
        }
        Ok(())
    }

    /// `(1/|B|)·σ'(xᵢ)·CEᵢ` in entry `i` of the batch, zero elsewhere.
    fn lower_grad_x(&self, x: &[T; N], y: &[T; DY], batch: Batch, out: &mut [T; N]) -> Result<(), Error> {
        let (start, (rows, labels, inv)) = self.train_batch(batch)?;
        *out = [T::ZERO; N];
        for (k, (row, &label)) in rows.iter().zip(labels).enumerate() {
            let i = start + k;
            let z = logits::<T, D, C, DY>(row, y);
            let (_, lse) = softmax(&z);
            if let (Some(o), Some(&xi)) = (out.get_mut(i), x.get(i)) {
                let s = sigmoid(xi);
                *o = inv * s * (T::ONE - s) * (lse - z[class::<T, C>(label)]);
            }
        }
        Ok(())
    }

    fn lower_value(&self, x: &[T; N], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let (start, (rows, labels, inv)) = self.train_batch(batch)?;
        let mut s = T::ZERO;
        for ((row, &label), &xi) in rows.iter().zip(labels).zip(x.iter().skip(start)) {
            let z = logits::<T, D, C, DY>(row, y);
            let (_, lse) = softmax(&z);
            s += sigmoid(xi) * (lse - z[class::<T, C>(label)]);
        }
        Ok(s * inv + T::from_f64(0.5) * self.l2 * linalg::dot(y, y))
    }

    fn upper_value(&self, _: &[T; N], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        mean_ce::<T, D, C, DY>(&self.validation, y, batch)
    }

    fn samples(&self) -> (usize, usize) {
        (self.train.len(), self.validation.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROWS: [[f64; 2]; 4] = [[1.0, 0.5], [-0.5, 1.0], [0.2, -1.0], [-1.0, -0.3]];
    const LABELS: [f64; 4] = [0.0, 1.0, 2.0, 1.0];

    type P<'a> = HyperCleaning<'a, f64, 2, 3, 4, 9>;

    fn problem() -> P<'static> {
        let s = Samples::new(&ROWS, &LABELS).unwrap();
        P::new(s, s).unwrap()
    }

    #[test]
    fn the_first_rows_of_a_padded_set_are_the_unpadded_problem_oracle_by_oracle() {
        use crate::hook::{FirstRows, Hooked};
        // Three real rows; the padded set adds a fourth that must never count.
        let validation = Samples::new(&ROWS, &LABELS).unwrap();
        let real = Samples::new(&ROWS[..3], &LABELS[..3]).unwrap();
        let unpadded: HyperCleaning<'_, f64, 2, 3, 3, 9> = HyperCleaning::new(real, validation).unwrap();
        let rows = [ROWS[0], ROWS[1], ROWS[2], [9.0, -7.0]];
        let labels = [LABELS[0], LABELS[1], LABELS[2], 2.0];
        let train = Samples::new(&rows, &labels).unwrap();
        let padded = Hooked::wrap(
            HyperCleaning::<'_, f64, 2, 3, 4, 9>::new(train, validation).unwrap(),
            FirstRows { rows: 3 },
        );
        let (x3, x4) = ([0.3, -0.2, 0.5], [0.3, -0.2, 0.5, 4.0]);
        let y: [f64; 9] = core::array::from_fn(|i| 0.2 * i as f64 - 0.7);
        let v: [f64; 9] = core::array::from_fn(|i| 1.0 - 0.15 * i as f64);
        let b = Batch::Full;
        assert_eq!(padded.samples(), unpadded.samples());
        let (mut a, mut c) = ([0.0; 9], [0.0; 9]);
        padded.lower_grad(&x4, &y, b, &mut a).unwrap();
        unpadded.lower_grad(&x3, &y, b, &mut c).unwrap();
        assert_eq!(a, c, "lower_grad");
        padded.lower_hvp(&x4, &y, &v, b, &mut a).unwrap();
        unpadded.lower_hvp(&x3, &y, &v, b, &mut c).unwrap();
        assert_eq!(a, c, "lower_hvp");
        let (mut a2, mut c2) = ([0.0; 9], [0.0; 9]);
        padded.lower_hvp2(&x4, &y, &v, &y, b, &mut a, &mut a2).unwrap();
        unpadded.lower_hvp2(&x3, &y, &v, &y, b, &mut c, &mut c2).unwrap();
        assert_eq!((a, a2), (c, c2), "lower_hvp2");
        padded.lower_grad_hvp(&x4, &y, &v, b, &mut a, &mut a2).unwrap();
        unpadded.lower_grad_hvp(&x3, &y, &v, b, &mut c, &mut c2).unwrap();
        assert_eq!((a, a2), (c, c2), "lower_grad_hvp");
        let (mut g4, mut g3) = ([0.0; 4], [0.0; 3]);
        padded.lower_cross(&x4, &y, &v, b, &mut g4).unwrap();
        unpadded.lower_cross(&x3, &y, &v, b, &mut g3).unwrap();
        assert_eq!((&g4[..3], g4[3]), (&g3[..], 0.0), "lower_cross");
        assert_eq!(
            padded.lower_value(&x4, &y, b).unwrap(),
            unpadded.lower_value(&x3, &y, b).unwrap()
        );
        padded.upper_grad(&x4, &y, b, &mut g4, &mut a).unwrap();
        unpadded.upper_grad(&x3, &y, b, &mut g3, &mut c).unwrap();
        assert_eq!((&g4[..3], a), (&g3[..], c), "upper_grad");
        assert_eq!(
            padded.upper_value(&x4, &y, b).unwrap(),
            unpadded.upper_value(&x3, &y, b).unwrap()
        );
    }

    #[test]
    fn values_by_hand() {
        // At y = 0 every cross-entropy is ln 3; with x = 0 every weight is ½.
        let p = problem();
        let g = p.lower_value(&[0.0; 4], &[0.0; 9], Batch::Full).unwrap();
        assert!((g - 0.5 * libm::log(3.0)).abs() < 1e-15);
        let f = p.upper_value(&[0.0; 4], &[0.0; 9], Batch::Full).unwrap();
        assert!((f - libm::log(3.0)).abs() < 1e-15);
        // The bias gradient at y = 0 is mean ½(⅓ − [cᵢ = c]) per class: class 1 has two rows.
        let mut gy = [0.0; 9];
        p.lower_grad(&[0.0; 4], &[0.0; 9], Batch::Full, &mut gy).unwrap();
        assert!((gy[6] - 0.5 * (4.0 / 3.0 - 1.0) / 4.0).abs() < 1e-15);
        assert!((gy[7] - 0.5 * (4.0 / 3.0 - 2.0) / 4.0).abs() < 1e-15);
        // Class 0's first weight: ½·mean (⅓ − [cᵢ = 0])·aᵢ₀ = ½·(−⅔ − 1.3/3)/4 = −0.1375.
        let want = -0.1375;
        assert!((gy[0] - want).abs() < 1e-15, "{} vs {want}", gy[0]);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let p = problem();
        let y = [800.0, 0.0, -800.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let f = p.upper_value(&[0.0; 4], &y, Batch::Full).unwrap();
        // Only row 2 is misclassified: logits [160, −160, 0] against class 2, CE = 160.
        assert!((f - 40.0).abs() < 1e-12, "{f}");
        let mut g = [0.0; 9];
        p.lower_grad(&[0.0; 4], &y, Batch::Full, &mut g).unwrap();
        assert!(linalg::all_finite(&g));
    }

    #[test]
    fn the_cross_product_lives_on_the_batch() {
        let p = problem();
        let y = [0.3, -0.2, 0.1, 0.5, -0.4, 0.2, 0.0, 0.1, -0.1];
        let mut out = [1.0; 4];
        let b = Batch::Range {
            id: 0,
            start: 1,
            len: 2,
        };
        p.lower_cross(&[0.0; 4], &y, &y, b, &mut out).unwrap();
        assert!(out[0] == 0.0 && out[3] == 0.0 && out[1] != 0.0 && out[2] != 0.0);
    }

    #[test]
    fn bad_labels_sizes_and_strengths_are_rejected() {
        let s = Samples::new(&ROWS, &LABELS).unwrap();
        for bad in [[0.0, 3.0, 1.0, 1.0], [0.0, 1.5, 1.0, 1.0], [0.0, -1.0, 1.0, 1.0]] {
            let b = Samples::new(&ROWS, &bad).unwrap();
            assert_eq!(
                P::new(s, b).unwrap_err(),
                Error::InvalidData {
                    reason: "class labels must be integers in 0..C"
                }
            );
        }
        let three = Samples::new(&ROWS[..3], &LABELS[..3]).unwrap();
        assert!(matches!(P::new(three, s), Err(Error::InvalidData { .. })));
        assert!(matches!(
            problem().with_l2(0.0),
            Err(Error::InvalidConfig { field: "l2", .. })
        ));
        assert_eq!(problem().with_l2(0.5).unwrap().l2, 0.5);
    }
}
