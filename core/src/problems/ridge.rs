//! Ridge regression with a tuned L2 strength: the hyperparameter problem whose lower level
//! and hypergradient have closed forms, so solvers can be checked on real-looking data.
//!
//! ```text
//! g(x, y) = 1/(2n) Σ_train (âᵢ·y − tᵢ)² + ½ Σ_j e^{x_j} w_j²     (bias b not penalized)
//! f(x, y) = 1/(2m) Σ_val   (âᵢ·y − tᵢ)²
//! ```
//!
//! `y = [w, b]` has `DY = D + 1` entries and `âᵢ = [aᵢ, 1]`; `x` is one log-strength
//! (`DX = 1`) or one per feature (`DX = D`), as in [`crate::problems::penalty`]. Both
//! losses are means (halved), so minibatch oracles are means over their rows with the
//! penalty added in full. The lower Hessian `G + diag(λ, 0)`, `G = (1/n) Σ âᵢâᵢᵀ`, does
//! not depend on `y`; it is positive definite when the training features are not all
//! constant, which gives
//!
//! ```text
//! y*(x) = (G + diag(λ, 0))⁻¹ (1/n) Σ tᵢ âᵢ
//! ∇F(x) = −∇²_xy g·u = −λ ⊙ w* ⊙ u  (summed over j for scalar λ),  u = (G + diag(λ, 0))⁻¹ ∇_y f(y*)
//! ```

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::problems::data::{Samples, affine_gram, affine_row_means, for_each_affine};
use crate::problems::penalty;
use crate::scalar::Real;
use crate::smoothness::Smoothness;

/// Ridge regression with exp-parametrized L2 on the weights (see the module docs).
///
/// ```
/// use bilevel::problems::{Ridge, Samples};
/// use bilevel::reference::{ReferenceConfig, reference_hypergradient};
/// let (rows, targets) = ([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]], [1.0, 2.0, 2.5, 0.0]);
/// let (val_rows, val_targets) = ([[0.5, 0.5], [2.0, -1.0]], [1.5, 0.5]);
/// let train = Samples::new(&rows, &targets).unwrap();
/// let validation = Samples::new(&val_rows, &val_targets).unwrap();
/// // Two features, one ln λ, y = [w₀, w₁, b].
/// let p: Ridge<'_, f64, 2, 1, 3> = Ridge::new(train, validation).unwrap();
/// let exact = p.hypergradient(&[0.0]).unwrap();
/// let r = reference_hypergradient(&p, &[0.0], &[0.0; 3], &ReferenceConfig::default()).unwrap();
/// assert!((r.hypergradient[0] - exact[0]).abs() < 1e-9);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ridge<'a, T, const D: usize, const DX: usize, const DY: usize> {
    /// Training samples: the lower level.
    pub train: Samples<'a, T, D>,
    /// Validation samples: the upper level.
    pub validation: Samples<'a, T, D>,
}

/// Half the mean squared residual of `y` on `batch` of `data`; an empty batch is an error.
pub(super) fn half_mse<T: Real, const D: usize, const DY: usize>(
    data: &Samples<'_, T, D>,
    y: &[T; DY],
    batch: Batch,
) -> Result<T, Error> {
    let (rows, targets, inv) = data.nonempty(batch)?;
    let mut s = T::ZERO;
    let residual = |t, [z]: [T; 1]| [z - t];
    for_each_affine(rows, targets, [y], residual, |_, [r]| s += r * r);
    Ok(T::from_f64(0.5) * s * inv)
}

/// `out ← (1/|B|) Σ_B (âᵢ·v − s·tᵢ) âᵢ` over `batch` of `data`: the loss gradient at `v`
/// (`with_targets`, s = 1) or the loss Hessian times `v` (s = 0).
pub(super) fn least_squares<T: Real, const D: usize, const DY: usize>(
    data: &Samples<'_, T, D>,
    v: &[T; DY],
    with_targets: bool,
    batch: Batch,
    out: &mut [T; DY],
) -> Result<(), Error> {
    let residual = |t, [z]: [T; 1]| [if with_targets { z - t } else { z }];
    affine_row_means(data.nonempty(batch)?, [v], residual, [out]);
    Ok(())
}

impl<'a, T: Real, const D: usize, const DX: usize, const DY: usize> Ridge<'a, T, D, DX, DY> {
    /// The problem on `train` (lower level) and `validation` (upper level); targets are any
    /// real values. Sizes are checked at compile time: `DY = D + 1`, `DX = 1` or `D`.
    pub fn new(train: Samples<'a, T, D>, validation: Samples<'a, T, D>) -> Result<Self, Error> {
        const {
            assert!(DY == D + 1, "y holds the D weights and the bias: DY = D + 1");
            penalty::check_sizes::<DX, DY>();
        }
        Ok(Ridge { train, validation })
    }

    /// The smoothness of `∇_y g` at `x`, for the whole training set and for its minibatches:
    /// the Gram matrix's plus `max_j λ_j`.
    pub fn lower_smoothness(&self, x: &[T; DX]) -> Smoothness {
        let mut lam = T::ZERO;
        for j in 0..D {
            lam = lam.max(penalty::strength(x, j));
        }
        self.train.smoothness().scaled(1.0, lam.to_f64())
    }

    /// The Lipschitz constant of the full-batch `∇_y g` at `x` (a safe lower-level step is
    /// its inverse).
    pub fn lower_lipschitz(&self, x: &[T; DX]) -> T {
        T::from_f64(self.lower_smoothness(x).full)
    }

    /// Half the mean squared error of the model `y` on `data` (e.g. a test set).
    pub fn loss(data: &Samples<'_, T, D>, y: &[T; DY]) -> Result<T, Error> {
        half_mse(data, y, Batch::Full)
    }

    /// The lower Hessian `G + diag(λ, 0)` at `x`, summed in row order.
    pub fn lower_hessian(&self, x: &[T; DX]) -> [[T; DY]; DY] {
        let (rows, _, inv) = self.train.batch(Batch::Full);
        let mut h = affine_gram::<T, D, DY>(rows, inv);
        for (j, h_row) in h.iter_mut().enumerate().take(D) {
            h_row[j] += penalty::strength(x, j);
        }
        h
    }

    /// `rhs ← (G + diag(λ, 0))⁻¹ rhs`; [`Error::InvalidData`] when the Hessian is not
    /// positive definite (constant training features).
    fn solve_hessian(&self, x: &[T; DX], rhs: &mut [T; DY]) -> Result<(), Error> {
        if linalg::spd_solve(&self.lower_hessian(x), rhs) {
            Ok(())
        } else {
            Err(Error::InvalidData {
                reason: "ridge lower Hessian is not positive definite",
            })
        }
    }

    /// The exact lower solution `y*(x) = (G + diag(λ, 0))⁻¹ (1/n) Σ tᵢ âᵢ`.
    pub fn lower_solution(&self, x: &[T; DX]) -> Result<[T; DY], Error> {
        let mut y = [T::ZERO; DY];
        // −∇_y of the loss at y = 0 is (1/n) Σ tᵢ âᵢ.
        least_squares(&self.train, &[T::ZERO; DY], true, Batch::Full, &mut y)?;
        linalg::scale(-T::ONE, &mut y);
        self.solve_hessian(x, &mut y)?;
        Ok(y)
    }

    /// `F(x) = f(x, y*(x))`: the validation loss of the ridge solution.
    pub fn value(&self, x: &[T; DX]) -> Result<T, Error> {
        let y = self.lower_solution(x)?;
        half_mse(&self.validation, &y, Batch::Full)
    }

    /// The exact adjoint `u* = (G + diag(λ, 0))⁻¹ ∇_y f(x, y*(x))`.
    pub fn adjoint(&self, x: &[T; DX]) -> Result<[T; DY], Error> {
        let y = self.lower_solution(x)?;
        let mut u = [T::ZERO; DY];
        least_squares(&self.validation, &y, true, Batch::Full, &mut u)?;
        self.solve_hessian(x, &mut u)?;
        Ok(u)
    }

    /// The exact hypergradient `∇F(x) = −∇²_xy g(x, y*)·u*` (`f` does not depend on `x`).
    pub fn hypergradient(&self, x: &[T; DX]) -> Result<[T; DX], Error> {
        let y = self.lower_solution(x)?;
        let mut u = [T::ZERO; DY];
        least_squares(&self.validation, &y, true, Batch::Full, &mut u)?;
        self.solve_hessian(x, &mut u)?;
        let mut out = [T::ZERO; DX];
        penalty::cross(x, &y, &u, &mut out);
        linalg::scale(-T::ONE, &mut out);
        Ok(out)
    }
}

impl<T: Real, const D: usize, const DX: usize, const DY: usize> Problem<T, DX, DY> for Ridge<'_, T, D, DX, DY> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        least_squares(&self.train, y, true, batch, out)?;
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
        least_squares(&self.validation, y, true, batch, gy)
    }

    fn lower_hvp(&self, x: &[T; DX], _: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        least_squares(&self.train, v, false, batch, out)?;
        penalty::add_scaled(x, v, out);
        Ok(())
    }

    /// One pass over the batch for both products.
    fn lower_hvp2(
        &self,
        x: &[T; DX],
        _: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        batch: Batch,
        out1: &mut [T; DY],
        out2: &mut [T; DY],
    ) -> Result<(), Error> {
        let rows = self.train.nonempty(batch)?;
        affine_row_means(rows, [v1, v2], |_, m| m, [&mut *out1, &mut *out2]);
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
        Ok(half_mse(&self.train, y, batch)? + penalty::value(x, y))
    }

    fn upper_value(&self, _: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        half_mse(&self.validation, y, batch)
    }

    fn samples(&self) -> (usize, usize) {
        (self.train.len(), self.validation.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TRAIN: [[f64; 2]; 4] = [[1.0, 0.5], [-0.5, 1.0], [0.2, -1.0], [-1.0, -0.3]];
    const TARGETS: [f64; 4] = [1.0, -2.0, 0.5, 3.0];

    fn problem() -> Ridge<'static, f64, 2, 1, 3> {
        let s = Samples::new(&TRAIN, &TARGETS).unwrap();
        Ridge::new(s, s).unwrap()
    }

    #[test]
    fn values_by_hand() {
        // At y = 0 the loss is ½ mean t² = ½ (1 + 4 + 0.25 + 9)/4.
        let p = problem();
        let g = p.lower_value(&[0.0], &[0.0; 3], Batch::Full).unwrap();
        assert!((g - 0.5 * 14.25 / 4.0).abs() < 1e-15);
        // With y = [1, 0, 0] and λ = e: residuals aᵢ₀ − tᵢ, penalty ½ e.
        let g = p.lower_value(&[1.0], &[1.0, 0.0, 0.0], Batch::Full).unwrap();
        let want = 0.5 * (0.0f64 + 1.5 * 1.5 + 0.3 * 0.3 + 4.0 * 4.0) / 4.0 + 0.5 * libm::exp(1.0);
        assert!((g - want).abs() < 1e-14);
    }

    #[test]
    fn the_solution_zeroes_the_gradient_and_the_bias_is_not_penalized() {
        let p = problem();
        for x in [-3.0, 0.0, 4.0] {
            let y = p.lower_solution(&[x]).unwrap();
            let mut g = [0.0; 3];
            p.lower_grad(&[x], &y, Batch::Full, &mut g).unwrap();
            assert!(linalg::norm(&g) < 1e-13, "x = {x}: {g:?}");
        }
        // A huge penalty shrinks the weights to 0 and leaves the bias at the mean target.
        let y = p.lower_solution(&[30.0]).unwrap();
        assert!(y[0].abs() < 1e-10 && y[1].abs() < 1e-10);
        assert!((y[2] - 2.5 / 4.0).abs() < 1e-10);
    }

    #[test]
    fn hessian_matches_the_hvp() {
        let p = problem();
        let h = p.lower_hessian(&[0.7]);
        let v = [0.3, -1.0, 2.0];
        let (mut a, mut b) = ([0.0; 3], [0.0; 3]);
        linalg::matvec(&h, &v, &mut a);
        p.lower_hvp(&[0.7], &[0.0; 3], &v, Batch::Full, &mut b).unwrap();
        assert!(linalg::dist(&a, &b) < 1e-14);
    }

    #[test]
    fn constant_features_are_reported() {
        let rows = [[1.0, 2.0]; 3];
        let t = [0.0, 1.0, 2.0];
        let s = Samples::new(&rows, &t).unwrap();
        let p = Ridge::<f64, 2, 2, 3>::new(s, s).unwrap();
        // Every row is [1, 2]: any penalty keeps the Hessian definite, a vanishing one
        // (e^{−800} = 0) leaves the rank-one Gram matrix.
        assert!(p.lower_solution(&[0.0, 0.0]).is_ok());
        assert_eq!(
            p.lower_solution(&[-800.0, -800.0]).unwrap_err(),
            Error::InvalidData {
                reason: "ridge lower Hessian is not positive definite"
            }
        );
    }
}
