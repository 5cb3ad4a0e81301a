//! How smooth the lower level is, which sets every default gradient step (`c/L`).
//!
//! A single bound is not enough: full-batch methods step at `1/L` of the whole sum, while
//! a method that samples minibatches of `b` rows needs the *expected smoothness* of its
//! batches, which lies between the whole sum's `L` and the worst single row's. For the
//! built-in problems the whole sum's `L` is the top eigenvalue of the data's Gram matrix
//! (found by power iteration, [`gram_smoothness`]); the worst row's is its largest squared
//! norm. On standardized data the two differ by one to two orders of magnitude, and a step
//! from the row bound is that much slower.

use crate::scalar::Real;

/// Smoothness constants of a lower level `g = (1/n) Σ gᵢ` over `n` rows.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Smoothness {
    /// `L` of the whole sum's gradient.
    pub full: f64,
    /// The largest `L` of a single row's gradient.
    pub row: f64,
    /// Number of rows `n`.
    pub rows: usize,
}

impl Smoothness {
    /// One constant for every batch (a problem that knows only its `L`).
    pub const fn uniform(lipschitz: f64) -> Self {
        Smoothness {
            full: lipschitz,
            row: lipschitz,
            rows: 1,
        }
    }

    /// The expected smoothness of minibatches of `batch` rows drawn without replacement:
    /// `n(b−1)/(b(n−1))·L + (n−b)/(b(n−1))·L_row` (Gower et al., *SGD: general analysis and
    /// improved rates*, ICML 2019, Prop. 3.8). It is `L` for the whole data set and
    /// `L_row` for single rows.
    pub fn at_batch(&self, batch: usize) -> f64 {
        let n = self.rows;
        if batch >= n || n <= 1 {
            return self.full;
        }
        let (n, b) = (n as f64, batch.max(1) as f64);
        let d = b * (n - 1.0);
        (n * (b - 1.0) / d) * self.full + ((n - b) / d) * self.row
    }

    /// `c·L + shift` for every constant: a loss whose curvature is at most `c` times the
    /// Gram matrix's, plus a ridge of strength `shift`.
    pub fn scaled(self, c: f64, shift: f64) -> Self {
        Smoothness {
            full: c * self.full + shift,
            row: c * self.row + shift,
            rows: self.rows,
        }
    }
}

impl From<f64> for Smoothness {
    fn from(lipschitz: f64) -> Self {
        Smoothness::uniform(lipschitz)
    }
}

/// Power iterations of [`gram_smoothness`]: the estimate's weight on eigenvalues below half
/// the largest falls as `4^-k`, so the step `1/L` it gives stays below `2/L_true` (stable)
/// from any start with a component along the top eigenvector.
const POWER_ITERATIONS: usize = 64;

/// [`Smoothness`] of `(1/n) Σ φ(âᵢ·y)` with `φ'' ≤ 1` over `rows`, `âᵢ = (aᵢ, 1)` (the bias
/// last): the top eigenvalue of `ÂᵀÂ/n` by power iteration from a fixed start (the same
/// bits on every target), and the largest `‖âᵢ‖²`. Zero rows for no rows.
pub fn gram_smoothness<T: Real, const D: usize>(rows: &[[T; D]]) -> Smoothness {
    let n = rows.len();
    let mut row = T::ZERO;
    for r in rows {
        row = row.max(T::ONE + crate::linalg::dot(r, r));
    }
    if n == 0 {
        return Smoothness {
            full: 0.0,
            row: 0.0,
            rows: 0,
        };
    }
    let inv = T::ONE / T::from_f64(n as f64);
    // v = (weights, bias); a start with alternating signs of decreasing size is far from
    // orthogonal to any one eigenvector of real data.
    let mut v = [T::ZERO; D];
    for (j, vj) in v.iter_mut().enumerate() {
        let s = T::ONE / T::from_f64((j + 2) as f64);
        *vj = if j % 2 == 0 { s } else { -s };
    }
    let mut vb = T::ONE;
    let mut top = T::ZERO;
    for _ in 0..POWER_ITERATIONS {
        let vv = crate::linalg::dot(&v, &v) + vb * vb;
        if vv <= T::ZERO || !vv.is_finite() {
            break;
        }
        // w = ÂᵀÂ v / n, one pass over the rows in order.
        let mut w = [T::ZERO; D];
        let mut wb = T::ZERO;
        for r in rows {
            let m = crate::linalg::dot(r, &v) + vb;
            crate::linalg::axpy(m, r, &mut w);
            wb += m;
        }
        crate::linalg::scale(inv, &mut w);
        wb *= inv;
        top = (crate::linalg::dot(&v, &w) + vb * wb) / vv;
        let norm = (crate::linalg::dot(&w, &w) + wb * wb).sqrt();
        if norm <= T::ZERO || !norm.is_finite() {
            break;
        }
        let s = T::ONE / norm;
        crate::linalg::scale(s, &mut w);
        v = w;
        vb = wb * s;
    }
    Smoothness {
        full: top.to_f64().min(row.to_f64()),
        row: row.to_f64(),
        rows: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_smoothness_runs_from_the_row_bound_to_the_whole_sum() {
        let s = Smoothness {
            full: 3.0,
            row: 100.0,
            rows: 341,
        };
        assert_eq!(s.at_batch(1), 100.0);
        assert_eq!(s.at_batch(341), 3.0);
        assert_eq!(s.at_batch(1000), 3.0);
        let l32 = s.at_batch(32);
        assert!(l32 > 3.0 && l32 < 100.0 && s.at_batch(64) < l32, "{l32}");
        assert_eq!(Smoothness::uniform(7.0).at_batch(5), 7.0);
    }

    #[test]
    fn the_gram_bound_is_the_top_eigenvalue_of_the_rows_with_their_bias() {
        // Rows (1, 0), (−1, 0), (0, 2), (0, −2) with a bias: ÂᵀÂ/4 = diag(0.5, 2, 1).
        let rows = [[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]];
        let s = gram_smoothness(&rows);
        assert!((s.full - 2.0).abs() < 1e-12, "{}", s.full);
        assert_eq!(s.row, 5.0);
        assert_eq!(s.rows, 4);
        // Identical rows: rank one, top eigenvalue ‖â‖².
        let same = [[3.0f32, 4.0]; 5];
        let s = gram_smoothness(&same);
        assert!((s.full - 26.0).abs() < 1e-4, "{}", s.full);
        assert_eq!(gram_smoothness::<f64, 2>(&[]).full, 0.0);
    }
}
