//! Linear models with a tuned L2 penalty: logistic regression and ridge regression (spec
//! L1/L2), over borrowed training and validation sets.
//!
//! ```text
//! y = (w, b) ∈ R^D × R,  z_i = wᵀa_i + b,  x = ln λ (DX = 1) or ln λ_j per feature (DX = D)
//! g(x, y) = mean_{train} ℓ(z_i, t_i) + ½ Σ_j e^{x_j} w_j²      (bias b not penalized)
//! f(x, y) = mean_{validation} ℓ(z_i, t_i)                     (∇_x f = 0)
//! ```
//!
//! The loss `ℓ` is [`LogisticLoss`] (`t ∈ {0, 1}`) or [`SquaredLoss`] (`t ∈ R`). Means (not
//! sums, unlike HOAG's L1) and a summed penalty, as in benchopt's ijcnn1 problem (spec §7.7).
//! The lower-level oracles average over the training rows of the batch, the upper-level ones
//! over the validation rows; the penalty is added whole, so the oracle of a minibatch is an
//! unbiased estimate of the full one.

use core::marker::PhantomData;

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::problems::data::Samples;
use crate::problems::penalty;
use crate::scalar::{Real, sigmoid, softplus};

/// A per-sample loss `ℓ(z, t)` of a linear model's output `z` against a target `t`, with
/// its first two derivatives in `z`.
pub trait Loss: Copy + core::fmt::Debug + Default {
    /// `ℓ(z, t)`.
    fn value<T: Real>(z: T, t: T) -> T;
    /// `∂ℓ/∂z`.
    fn slope<T: Real>(z: T, t: T) -> T;
    /// `∂²ℓ/∂z²` (non-negative: the losses are convex in `z`).
    fn curvature<T: Real>(z: T, t: T) -> T;
    /// Whether `t` is a valid target for this loss.
    fn valid_target<T: Real>(t: T) -> bool;
}

/// Binary logistic loss `ℓ(z, t) = ln(1 + e^z) − t z` for labels `t ∈ {0, 1}` (the same as
/// `ln(1 + e^{−s z})` with `s = 2t − 1 ∈ {−1, +1}`), computed with the stable softplus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogisticLoss;

impl Loss for LogisticLoss {
    #[inline]
    fn value<T: Real>(z: T, t: T) -> T {
        softplus(z) - t * z
    }
    #[inline]
    fn slope<T: Real>(z: T, t: T) -> T {
        sigmoid(z) - t
    }
    #[inline]
    fn curvature<T: Real>(z: T, _: T) -> T {
        let s = sigmoid(z);
        s * (T::ONE - s)
    }
    #[inline]
    fn valid_target<T: Real>(t: T) -> bool {
        t == T::ZERO || t == T::ONE
    }
}

/// Squared loss `ℓ(z, t) = ½ (z − t)²` (so `f` is half the mean squared error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SquaredLoss;

impl Loss for SquaredLoss {
    #[inline]
    fn value<T: Real>(z: T, t: T) -> T {
        let r = z - t;
        T::from_f64(0.5) * r * r
    }
    #[inline]
    fn slope<T: Real>(z: T, t: T) -> T {
        z - t
    }
    #[inline]
    fn curvature<T: Real>(_: T, _: T) -> T {
        T::ONE
    }
    #[inline]
    fn valid_target<T: Real>(t: T) -> bool {
        t.is_finite()
    }
}

/// A linear model `z = wᵀa + b` with loss `L` and a tuned exp-parametrized L2 penalty on
/// `w` (see the module docs). `D` features; `y = (w, b)` so `DY = D + 1`; `DX = 1` (one
/// strength) or `DX = D` (one per feature). Wrong sizes fail to compile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearModel<'a, T, L, const DX: usize, const D: usize, const DY: usize> {
    /// Training set: the lower level's loss.
    pub train: Samples<'a, T, D>,
    /// Validation set: the upper level's loss.
    pub validation: Samples<'a, T, D>,
    loss: PhantomData<L>,
}

/// Logistic regression with a tuned L2 penalty (spec L1 with means, L2): labels in `{0, 1}`.
///
/// ```
/// use bilevel::problem::{Batch, Problem};
/// use bilevel::problems::{Logistic, Samples};
/// let rows = [[1.0, 0.5], [-0.3, 2.0], [0.7, -1.2]];
/// let labels = [1.0, 0.0, 1.0];
/// let data = Samples::new(&rows, &labels).unwrap();
/// // One penalty strength (DX = 1), two features, y = (w₀, w₁, b).
/// let p = Logistic::<f64, 1, 2, 3>::new(data, data).unwrap();
/// let mut g = [0.0; 3];
/// p.lower_grad(&[0.0], &[0.0; 3], Batch::Full, &mut g).unwrap();
/// // At w = 0 every prediction is ½, so the bias gradient is ½ − mean label = −1/6.
/// assert!((g[2] + 1.0 / 6.0).abs() < 1e-15);
/// ```
pub type Logistic<'a, T, const DX: usize, const D: usize, const DY: usize> =
    LinearModel<'a, T, LogisticLoss, DX, D, DY>;

/// Ridge regression with a tuned L2 penalty: real targets, `f` = half the validation mean
/// squared error. Has a closed-form lower solution and hypergradient
/// ([`LinearModel::lower_solution`], [`LinearModel::hypergradient`]).
pub type Ridge<'a, T, const DX: usize, const D: usize, const DY: usize> = LinearModel<'a, T, SquaredLoss, DX, D, DY>;

impl<'a, T: Real, L: Loss, const DX: usize, const D: usize, const DY: usize> LinearModel<'a, T, L, DX, D, DY> {
    const SIZES: () = {
        assert!(DY == D + 1, "y holds D weights and the bias: DY = D + 1");
        penalty::check_sizes::<DX, DY>();
    };

    /// The problem on `train` (lower level) and `validation` (upper level); fails with
    /// [`Error::InvalidData`] when a target is not valid for the loss (logistic labels must
    /// be exactly `0` or `1`).
    pub fn new(train: Samples<'a, T, D>, validation: Samples<'a, T, D>) -> Result<Self, Error> {
        let () = Self::SIZES;
        let valid = |s: &Samples<'a, T, D>| s.targets.iter().all(|&t| L::valid_target(t));
        if !valid(&train) || !valid(&validation) {
            return Err(Error::InvalidData {
                reason: "target not valid for the loss (logistic labels are 0 or 1)",
            });
        }
        Ok(LinearModel {
            train,
            validation,
            loss: PhantomData,
        })
    }

    /// `z = wᵀa + b`.
    #[inline]
    fn output(y: &[T; DY], a: &[T; D]) -> T {
        let mut z = T::ZERO;
        for j in 0..D {
            z += y[j] * a[j];
        }
        z + y[D]
    }

    /// `⟨(a, 1), v⟩`.
    #[inline]
    fn extended_dot(a: &[T; D], v: &[T; DY]) -> T {
        Self::output(v, a)
    }

    /// `out += s · (a, 1)`.
    #[inline]
    fn add_extended(s: T, a: &[T; D], out: &mut [T; DY]) {
        for j in 0..D {
            out[j] += s * a[j];
        }
        out[D] += s;
    }

    /// Mean loss over the rows of `batch` in `data`.
    fn mean_loss(data: &Samples<'a, T, D>, y: &[T; DY], batch: Batch) -> T {
        let (rows, targets, inv) = data.batch(batch);
        let mut s = T::ZERO;
        for (a, &t) in rows.iter().zip(targets) {
            s += L::value(Self::output(y, a), t);
        }
        s * inv
    }

    /// `out ← ∇_y` of the mean loss over the rows of `batch` in `data`.
    fn mean_loss_grad(data: &Samples<'a, T, D>, y: &[T; DY], batch: Batch, out: &mut [T; DY]) {
        let (rows, targets, inv) = data.batch(batch);
        *out = [T::ZERO; DY];
        for (a, &t) in rows.iter().zip(targets) {
            Self::add_extended(L::slope(Self::output(y, a), t), a, out);
        }
        linalg::scale(inv, out);
    }

    /// The lower-level Hessian `mean ℓ''(z_i)(a_i,1)(a_i,1)ᵀ + diag(λ, 0)` over the full
    /// training set, as a dense matrix.
    pub fn lower_hessian(&self, x: &[T; DX], y: &[T; DY]) -> [[T; DY]; DY] {
        let (rows, targets, inv) = self.train.batch(Batch::Full);
        let mut h = [[T::ZERO; DY]; DY];
        for (a, &t) in rows.iter().zip(targets) {
            let c = L::curvature(Self::output(y, a), t) * inv;
            for i in 0..DY {
                let ai = if i < D { a[i] } else { T::ONE };
                for j in 0..DY {
                    let aj = if j < D { a[j] } else { T::ONE };
                    h[i][j] += c * ai * aj;
                }
            }
        }
        for j in 0..D {
            h[j][j] += penalty::strength(x, j);
        }
        h
    }
}

impl<'a, T: Real, const DX: usize, const D: usize, const DY: usize> LinearModel<'a, T, SquaredLoss, DX, D, DY> {
    /// The exact lower solution `y*(x)` of ridge regression: solves
    /// `(mean (a_i,1)(a_i,1)ᵀ + diag(λ, 0)) y = mean t_i (a_i,1)` by Cholesky. Fails with
    /// [`Error::InvalidData`] when that matrix is singular (e.g. a constant feature column
    /// with a vanishing penalty).
    pub fn lower_solution(&self, x: &[T; DX]) -> Result<[T; DY], Error> {
        let h = self.lower_hessian(x, &[T::ZERO; DY]);
        // The gradient at y = 0 is −mean t_i (a_i,1): the right-hand side with a minus sign.
        let mut rhs = [T::ZERO; DY];
        Self::mean_loss_grad(&self.train, &[T::ZERO; DY], Batch::Full, &mut rhs);
        linalg::scale(-T::ONE, &mut rhs);
        Self::solve(&h, &mut rhs)?;
        Ok(rhs)
    }

    /// The exact hypergradient `∇F(x) = −∇²_xy g·u` with `u = H⁻¹ ∇_y f(y*(x))`.
    pub fn hypergradient(&self, x: &[T; DX]) -> Result<[T; DX], Error> {
        let y = self.lower_solution(x)?;
        let h = self.lower_hessian(x, &y);
        let mut u = [T::ZERO; DY];
        Self::mean_loss_grad(&self.validation, &y, Batch::Full, &mut u);
        Self::solve(&h, &mut u)?;
        let mut out = [T::ZERO; DX];
        penalty::cross(x, &y, &u, &mut out);
        linalg::scale(-T::ONE, &mut out);
        Ok(out)
    }

    fn solve(h: &[[T; DY]; DY], rhs: &mut [T; DY]) -> Result<(), Error> {
        if linalg::spd_solve(h, rhs) {
            Ok(())
        } else {
            Err(Error::InvalidData {
                reason: "ridge Hessian is not positive definite",
            })
        }
    }
}

impl<'a, T: Real, L: Loss, const DX: usize, const D: usize, const DY: usize> Problem<T, DX, DY>
    for LinearModel<'a, T, L, DX, D, DY>
{
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        Self::mean_loss_grad(&self.train, y, batch, out);
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
        Self::mean_loss_grad(&self.validation, y, batch, gy);
        Ok(())
    }

    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let (rows, targets, inv) = self.train.batch(batch);
        *out = [T::ZERO; DY];
        for (a, &t) in rows.iter().zip(targets) {
            let c = L::curvature(Self::output(y, a), t);
            Self::add_extended(c * Self::extended_dot(a, v), a, out);
        }
        linalg::scale(inv, out);
        penalty::add_scaled(x, v, out);
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
        // One pass over the rows: each curvature is computed once for both products.
        let (rows, targets, inv) = self.train.batch(batch);
        *out1 = [T::ZERO; DY];
        *out2 = [T::ZERO; DY];
        for (a, &t) in rows.iter().zip(targets) {
            let c = L::curvature(Self::output(y, a), t);
            Self::add_extended(c * Self::extended_dot(a, v1), a, out1);
            Self::add_extended(c * Self::extended_dot(a, v2), a, out2);
        }
        linalg::scale(inv, out1);
        linalg::scale(inv, out2);
        penalty::add_scaled(x, v1, out1);
        penalty::add_scaled(x, v2, out2);
        Ok(())
    }

    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], _: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        penalty::cross(x, y, v, out);
        Ok(())
    }

    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], _: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        penalty::grad_x(x, y, out);
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        Ok(Self::mean_loss(&self.train, y, batch) + penalty::value(x, y))
    }

    fn upper_value(&self, _: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        Ok(Self::mean_loss(&self.validation, y, batch))
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
    fn logistic_loss_matches_signed_form_and_derivatives() {
        for &z in &[-40.0f64, -3.0, -0.2, 0.0, 0.7, 5.0, 40.0] {
            for &t in &[0.0f64, 1.0] {
                let s = 2.0 * t - 1.0;
                let signed = libm::log1p(libm::exp(-s * z));
                assert!((LogisticLoss::value(z, t) - signed).abs() < 1e-12 * (1.0 + signed));
                let h = 1e-6;
                let d = (LogisticLoss::value(z + h, t) - LogisticLoss::value(z - h, t)) / (2.0 * h);
                assert!((LogisticLoss::slope(z, t) - d).abs() < 1e-8);
                let c = (LogisticLoss::slope(z + h, t) - LogisticLoss::slope(z - h, t)) / (2.0 * h);
                assert!((LogisticLoss::curvature(z, t) - c).abs() < 1e-8);
            }
        }
    }

    #[test]
    fn rejects_labels_outside_zero_one() {
        let rows = [[1.0f64], [2.0]];
        let ok = [0.0, 1.0];
        let bad = [-1.0, 1.0];
        let a = Samples::new(&rows, &ok).unwrap();
        let b = Samples::new(&rows, &bad).unwrap();
        assert!(Logistic::<f64, 1, 1, 2>::new(a, a).is_ok());
        assert!(matches!(
            Logistic::<f64, 1, 1, 2>::new(a, b),
            Err(Error::InvalidData { .. })
        ));
        assert!(Ridge::<f64, 1, 1, 2>::new(a, b).is_ok());
    }

    #[test]
    fn ridge_solution_zeroes_the_gradient() {
        let rows = [[1.0f64, 0.0], [0.5, 2.0], [-1.0, 1.0], [0.3, -0.4]];
        let t = [1.0, -2.0, 0.5, 0.25];
        let s = Samples::new(&rows, &t).unwrap();
        let p = Ridge::<f64, 2, 2, 3>::new(s, s).unwrap();
        let x = [-0.5, 0.3];
        let y = p.lower_solution(&x).unwrap();
        let mut g = [0.0; 3];
        p.lower_grad(&x, &y, Batch::Full, &mut g).unwrap();
        assert!(linalg::norm(&g) < 1e-13, "{g:?}");
    }
}
