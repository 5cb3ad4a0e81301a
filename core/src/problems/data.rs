//! Borrowed data sets: rows of features and one target per row, owned by the caller (a
//! `static` table in flash on a device, a `Vec` on the host).

use crate::error::Error;
use crate::problem::Batch;
use crate::scalar::Real;

/// `n` samples with `D` features each and one target per sample (a real value for
/// regression, `0`/`1` for binary classification, a class index `0..C` for multiclass).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Samples<'a, T, const D: usize> {
    /// Feature rows.
    pub features: &'a [[T; D]],
    /// Targets, one per row.
    pub targets: &'a [T],
}

impl<'a, T: Real, const D: usize> Samples<'a, T, D> {
    /// Checks that there is at least one row, one target per row and only finite values.
    pub fn new(features: &'a [[T; D]], targets: &'a [T]) -> Result<Self, Error> {
        if features.is_empty() {
            return Err(Error::InvalidData { reason: "no samples" });
        }
        if features.len() != targets.len() {
            return Err(Error::InvalidData {
                reason: "number of targets differs from number of rows",
            });
        }
        if !features.iter().all(|r| r.iter().all(|v| v.is_finite())) || !targets.iter().all(|v| v.is_finite()) {
            return Err(Error::InvalidData {
                reason: "non-finite feature or target",
            });
        }
        Ok(Samples { features, targets })
    }

    /// Number of samples.
    #[inline]
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// `true` when there are no samples (never, for values built by [`Samples::new`]).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// The rows and targets of `batch`, and `1/len` for averaging (0 for an empty batch).
    #[inline]
    pub fn batch(&self, batch: Batch) -> (&'a [[T; D]], &'a [T], T) {
        let r = batch.range(self.features.len().min(self.targets.len()));
        let n = r.len();
        let f = self.features.get(r.clone()).unwrap_or(&[]);
        let t = self.targets.get(r).unwrap_or(&[]);
        let inv = if n == 0 {
            T::ZERO
        } else {
            T::ONE / T::from_f64(n as f64)
        };
        (f, t, inv)
    }
}
