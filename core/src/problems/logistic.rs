//! Binary logistic regression with a tuned L2 strength — the classic hyperparameter
//! problem, and the one the device firmware tunes.
//!
//! ```text
//! g(x, y) = (1/n) Σ_train ℓ(aᵢ·w + b, tᵢ) + ½ Σ_j e^{x_j} w_j²     (bias b not penalized)
//! f(x, y) = (1/m) Σ_val   ℓ(aᵢ·w + b, tᵢ)
//! ℓ(z, t) = ln(1 + e^z) − t z,   t ∈ {0, 1}
//! ```
//!
//! `y = [w, b]` has `DY = D + 1` entries; `x` is one log-strength (`DX = 1`) or one per
//! feature (`DX = D`). Both losses are means, so minibatch oracles are unbiased. The lower
//! Hessian `(1/n) Σ σ'(zᵢ) âᵢâᵢᵀ + diag(λ, 0)` is positive definite once the data has a
//! non-constant feature or both labels.

use crate::error::Error;
use crate::problem::{Batch, Problem};
use crate::problems::data::{Samples, affine as margin, affine_row_means, for_each_affine};
use crate::problems::penalty;
use crate::scalar::{Real, sigmoid, softplus};
use crate::smoothness::Smoothness;

/// Logistic regression with exp-parametrized L2 on the weights (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Logistic<'a, T, const D: usize, const DX: usize, const DY: usize> {
    /// Training samples: the lower level.
    pub train: Samples<'a, T, D>,
    /// Validation samples: the upper level.
    pub validation: Samples<'a, T, D>,
}

/// Mean logistic loss of `y` on `batch` of `data`; an empty batch is an error.
fn mean_loss<T: Real, const D: usize, const DY: usize>(
    data: &Samples<'_, T, D>,
    y: &[T; DY],
    batch: Batch,
) -> Result<T, Error> {
    let (rows, targets, inv) = data.nonempty(batch)?;
    let mut s = T::ZERO;
    for_each_affine(rows, targets, [y], |t, [z]| [softplus(z) - t * z], |_, [l]| s += l);
    Ok(s * inv)
}

/// `out ← ∇_y` of the mean loss on `batch`.
fn loss_grad<T: Real, const D: usize, const DY: usize>(
    data: &Samples<'_, T, D>,
    y: &[T; DY],
    batch: Batch,
    out: &mut [T; DY],
) -> Result<(), Error> {
    affine_row_means(data.nonempty(batch)?, [y], |t, [z]| [sigmoid(z) - t], [out]);
    Ok(())
}

impl<'a, T: Real, const D: usize, const DX: usize, const DY: usize> Logistic<'a, T, D, DX, DY> {
    /// The problem on `train` (lower level) and `validation` (upper level). Targets must be
    /// 0 or 1.
    pub fn new(train: Samples<'a, T, D>, validation: Samples<'a, T, D>) -> Result<Self, Error> {
        const {
            assert!(DY == D + 1, "y holds the D weights and the bias: DY = D + 1");
            penalty::check_sizes::<DX, DY>();
        }
        let binary = |s: &Samples<'a, T, D>| s.targets.iter().all(|&t| t == T::ZERO || t == T::ONE);
        if !binary(&train) || !binary(&validation) {
            return Err(Error::InvalidData {
                reason: "logistic targets must be 0 or 1",
            });
        }
        Ok(Logistic { train, validation })
    }

    /// The smoothness of `∇_y g` at `x`, for the whole training set and for its minibatches:
    /// `¼` of the Gram matrix's (the logistic curvature is at most `¼`) plus `max_j λ_j`.
    pub fn lower_smoothness(&self, x: &[T; DX]) -> Smoothness {
        let mut lam = T::ZERO;
        for j in 0..D {
            lam = lam.max(penalty::strength(x, j));
        }
        self.train.smoothness().scaled(0.25, lam.to_f64())
    }

    /// The Lipschitz constant of the full-batch `∇_y g` at `x` (a safe lower-level step is
    /// its inverse).
    pub fn lower_lipschitz(&self, x: &[T; DX]) -> T {
        T::from_f64(self.lower_smoothness(x).full)
    }

    /// Mean logistic loss of the model `y` on `data` (e.g. a test set).
    pub fn loss(data: &Samples<'_, T, D>, y: &[T; DY]) -> Result<T, Error> {
        mean_loss(data, y, Batch::Full)
    }

    /// Fraction of `data` whose label the model `y` predicts (`σ(z) ≥ ½` ⇔ label 1).
    pub fn accuracy(data: &Samples<'_, T, D>, y: &[T; DY]) -> T {
        let mut right = 0u32;
        for (row, &t) in data.features.iter().zip(data.targets) {
            let predicted = if margin(row, y) >= T::ZERO { T::ONE } else { T::ZERO };
            if predicted == t {
                right += 1;
            }
        }
        T::from_u32(right) / T::from_f64(data.len().max(1) as f64)
    }
}

impl<T: Real, const D: usize, const DX: usize, const DY: usize> Problem<T, DX, DY> for Logistic<'_, T, D, DX, DY> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        loss_grad(&self.train, y, batch, out)?;
        penalty::add_scaled(x, y, out);
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
        *gx = [T::ZERO; DX];
        loss_grad(&self.validation, y, batch, gy)
    }

    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let curvature_times_v = |_, [z, zv]: [T; 2]| {
            let p = sigmoid(z);
            [p * (T::ONE - p) * zv]
        };
        affine_row_means(self.train.nonempty(batch)?, [y, v], curvature_times_v, [&mut *out]);
        penalty::add_scaled(x, v, out);
        Ok(())
    }

    /// One pass over the batch: the margins and the sigmoid are shared.
    fn lower_grad_hvp(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v: &[T; DY],
        batch: Batch,
        grad: &mut [T; DY],
        hvp: &mut [T; DY],
    ) -> Result<(), Error> {
        let residual_and_curvature_times_v = |t, [z, zv]: [T; 2]| {
            let p = sigmoid(z);
            [p - t, p * (T::ONE - p) * zv]
        };
        let rows = self.train.nonempty(batch)?;
        affine_row_means(rows, [y, v], residual_and_curvature_times_v, [&mut *grad, &mut *hvp]);
        penalty::add_scaled(x, y, grad);
        penalty::add_scaled(x, v, hvp);
        Ok(())
    }

    /// One pass over the batch for both products: the curvature weights `σ'(zᵢ)` are shared.
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
        let curvature_times_v = |_, [z, z1, z2]: [T; 3]| {
            let p = sigmoid(z);
            let w = p * (T::ONE - p);
            [w * z1, w * z2]
        };
        let rows = self.train.nonempty(batch)?;
        affine_row_means(rows, [y, v1, v2], curvature_times_v, [&mut *out1, &mut *out2]);
        penalty::add_scaled(x, v1, out1);
        penalty::add_scaled(x, v2, out2);
        Ok(())
    }

    /// Only the penalty couples x and y; the data term has no cross derivative.
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], _: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        penalty::cross(x, y, v, out);
        Ok(())
    }

    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], _: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        penalty::grad_x(x, y, out);
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        Ok(mean_loss(&self.train, y, batch)? + penalty::value(x, y))
    }

    fn upper_value(&self, _: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        mean_loss(&self.validation, y, batch)
    }

    fn samples(&self) -> (usize, usize) {
        (self.train.len(), self.validation.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::linalg;
    use crate::problems::data::add_affine_row as add_row;

    const TRAIN: [[f64; 2]; 4] = [[1.0, 0.5], [-0.5, 1.0], [0.2, -1.0], [-1.0, -0.3]];
    const LABELS: [f64; 4] = [1.0, 0.0, 1.0, 0.0];

    fn problem() -> Logistic<'static, f64, 2, 1, 3> {
        let s = Samples::new(&TRAIN, &LABELS).unwrap();
        Logistic::new(s, s).unwrap()
    }

    #[test]
    fn values_by_hand() {
        // At y = 0 every loss is ln 2; the penalty is 0.
        let p = problem();
        let g = p.lower_value(&[0.0], &[0.0; 3], Batch::Full).unwrap();
        assert!((g - core::f64::consts::LN_2).abs() < 1e-15);
        // The gradient at y = 0 is mean (½ − t)·[a, 1].
        let mut gy = [0.0; 3];
        p.lower_grad(&[0.0], &[0.0; 3], Batch::Full, &mut gy).unwrap();
        let want0 = (-0.5 - 0.25 - 0.1 - 0.5) / 4.0; // (½ − t)·a₀ summed over the rows
        assert!((gy[0] - want0).abs() < 1e-15 && gy[2].abs() < 1e-15);
    }

    /// 37 rows of 3 features (four blocks of eight and a partial one), labels alternating.
    fn rows<T: Real>() -> ([[T; 3]; 37], [T; 37]) {
        let rows =
            core::array::from_fn(|i| core::array::from_fn(|j| T::from_f64(((i * 7 + j * 3) % 11) as f64 / 5.0 - 1.0)));
        (rows, core::array::from_fn(|i| T::from_f64((i % 2) as f64)))
    }

    /// The gradient row by row, each margin summed in feature order: what the blocked loops
    /// must reproduce bit for bit.
    fn gradient_row_by_row<T: Real>(rows: &[[T; 3]], targets: &[T], x: &[T; 3], y: &[T; 4]) -> [T; 4] {
        let mut out = [T::ZERO; 4];
        for (row, &t) in rows.iter().zip(targets) {
            let mut z = y[3];
            for j in 0..3 {
                z += row[j] * y[j];
            }
            add_row(sigmoid(z) - t, row, &mut out);
        }
        linalg::scale(T::ONE / T::from_f64(rows.len() as f64), &mut out);
        penalty::add_scaled(x, y, &mut out);
        out
    }

    fn fused_pass_is_the_single_oracles_bit_for_bit<T: Real>() {
        let (features, targets) = rows::<T>();
        let s = Samples::new(&features, &targets).unwrap();
        let p = crate::problem::Counted::new(Logistic::<T, 3, 3, 4>::new(s, s).unwrap());
        let x = [T::from_f64(-1.0), T::from_f64(0.5), T::from_f64(-3.0)];
        let y = [0.3, -0.2, 0.7, 0.1].map(T::from_f64);
        let v = [1.0, -2.0, 0.5, 3.0].map(T::from_f64);
        let bits = |a: [T; 4]| a.map(|e| e.to_f64().to_bits());
        for (batch, range) in [
            (Batch::Full, 0..37),
            (
                Batch::Range {
                    id: 1,
                    start: 5,
                    len: 19,
                },
                5..24,
            ),
            (
                Batch::Range {
                    id: 2,
                    start: 30,
                    len: 7,
                },
                30..37,
            ),
        ] {
            let (mut g, mut h, mut g1, mut h1, mut h2) =
                ([T::ZERO; 4], [T::ZERO; 4], [T::ZERO; 4], [T::ZERO; 4], [T::ZERO; 4]);
            p.lower_grad_hvp(&x, &y, &v, batch, &mut g, &mut h).unwrap();
            p.lower_grad(&x, &y, batch, &mut g1).unwrap();
            p.lower_hvp(&x, &y, &v, batch, &mut h1).unwrap();
            p.lower_hvp2(&x, &y, &v, &y, batch, &mut h2, &mut g1.clone()).unwrap();
            assert_eq!(bits(g), bits(g1), "gradient, {batch:?}");
            assert_eq!(bits(h), bits(h1), "Hessian-vector product, {batch:?}");
            assert_eq!(bits(h2), bits(h1), "first of two products, {batch:?}");
            let by_rows = gradient_row_by_row(&features[range.clone()], &targets[range], &x, &y);
            assert_eq!(bits(g), bits(by_rows), "blocks against rows, {batch:?}");
        }
        // One fused pass counts as one gradient and one product.
        let c = p.counts();
        assert_eq!((c.lower_grad, c.lower_hvp), (3 + 3, 3 + 3 + 6));
    }

    #[test]
    fn the_fused_pass_and_the_blocked_loops_give_the_row_by_row_bits() {
        fused_pass_is_the_single_oracles_bit_for_bit::<f64>();
        fused_pass_is_the_single_oracles_bit_for_bit::<f32>();
    }

    #[test]
    fn the_bias_is_not_penalized() {
        let p = problem();
        let (mut a, mut b) = ([0.0; 3], [0.0; 3]);
        let y = [0.3, -0.2, 0.7];
        p.lower_grad(&[0.0], &y, Batch::Full, &mut a).unwrap();
        p.lower_grad(&[5.0], &y, Batch::Full, &mut b).unwrap();
        assert_eq!(a[2], b[2]);
        assert!((b[0] - a[0] - (libm::exp(5.0) - 1.0) * 0.3).abs() < 1e-12);
    }

    #[test]
    fn labels_other_than_0_and_1_are_rejected() {
        let bad = [1.0, -1.0, 1.0, 0.0];
        let s = Samples::new(&TRAIN, &LABELS).unwrap();
        let b = Samples::new(&TRAIN, &bad).unwrap();
        assert_eq!(
            Logistic::<f64, 2, 1, 3>::new(s, b).unwrap_err(),
            Error::InvalidData {
                reason: "logistic targets must be 0 or 1"
            }
        );
    }

    #[test]
    fn empty_minibatches_are_errors() {
        let p = problem();
        let mut g = [0.0; 3];
        let e = p.lower_grad(
            &[0.0],
            &[0.0; 3],
            Batch::Range {
                id: 0,
                start: 4,
                len: 2,
            },
            &mut g,
        );
        assert_eq!(
            e,
            Err(Error::InvalidData {
                reason: "empty minibatch"
            })
        );
    }
}
