//! Borrowed data sets: rows of features and one target per row, owned by the caller (a
//! `static` table in flash on a device, a `Vec` on the host).

use crate::error::Error;
use crate::linalg;
use crate::problem::Batch;
use crate::scalar::Real;
use crate::smoothness::{Smoothness, gram_smoothness};

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

    /// The smoothness of a loss `(1/n) Σ φ(âᵢ·y)` with `φ'' ≤ 1` over these rows (a bias
    /// entry appended to each): [`gram_smoothness`].
    pub fn smoothness(&self) -> Smoothness {
        gram_smoothness(self.features)
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

/// The rows and targets of a batch, and `1/len`.
pub(crate) type BatchRows<'a, T, const D: usize> = (&'a [[T; D]], &'a [T], T);

impl<'a, T: Real, const D: usize> Samples<'a, T, D> {
    /// The rows of `batch`; an empty batch is an error (its mean is undefined).
    pub(crate) fn nonempty(&self, batch: Batch) -> Result<BatchRows<'a, T, D>, Error> {
        let (rows, targets, inv) = self.batch(batch);
        if rows.is_empty() {
            return Err(Error::InvalidData {
                reason: "empty minibatch",
            });
        }
        Ok((rows, targets, inv))
    }
}

/// `aᵢ·w + b` for an affine model `y = [w, b]` (`DY = D + 1`, bias last): the prediction
/// of the regression problems, and `âᵢ·v` with `âᵢ = [aᵢ, 1]` for any `v`.
#[inline]
pub(crate) fn affine<T: Real, const D: usize, const DY: usize>(row: &[T; D], y: &[T; DY]) -> T {
    let mut z = y[DY - 1];
    for j in 0..D {
        z += row[j] * y[j];
    }
    z
}

/// Rows whose margins are computed together by [`for_each_affine`].
const MARGIN_BLOCK: usize = 8;

/// For every row in order, `accumulate(row, weight(target, [âᵢ·v for v in vs]))`, in
/// blocks of [`MARGIN_BLOCK`] rows: first the block's margins, then its weights, then the
/// accumulation.
///
/// Each margin is a sum in a fixed order, a chain of dependent additions, and a weight is
/// typically an exponential of it; eight independent chains side by side let the processor
/// overlap them, where row by row it waits on each. Every sum keeps its order and the
/// accumulation its row order, so the results are the same bits as a row-by-row loop's.
#[inline]
pub(crate) fn for_each_affine<T: Real, const D: usize, const DY: usize, const K: usize, const M: usize>(
    rows: &[[T; D]],
    targets: &[T],
    vs: [&[T; DY]; K],
    weight: impl Fn(T, [T; K]) -> [T; M],
    mut accumulate: impl FnMut(&[T; D], [T; M]),
) {
    // Split off blocks with `split_at_checked`: `chunks` divides by its size at run time,
    // a panic path the C library's link check would find.
    let (mut rows, mut targets) = (rows, targets);
    loop {
        let n = rows.len().min(targets.len()).min(MARGIN_BLOCK);
        let (Some((block, rows_rest)), Some((block_targets, targets_rest))) =
            (rows.split_at_checked(n), targets.split_at_checked(n))
        else {
            break;
        };
        if n == 0 {
            break;
        }
        (rows, targets) = (rows_rest, targets_rest);
        let mut margins = [[T::ZERO; K]; MARGIN_BLOCK];
        for (m, row) in margins.iter_mut().zip(block) {
            for (mk, v) in m.iter_mut().zip(vs) {
                *mk = affine(row, v);
            }
        }
        let mut weights = [[T::ZERO; M]; MARGIN_BLOCK];
        for ((w, &t), &m) in weights.iter_mut().zip(block_targets).zip(&margins) {
            *w = weight(t, m);
        }
        for (row, &w) in block.iter().zip(&weights) {
            accumulate(row, w);
        }
    }
}

/// `outs[m] ← inv · Σᵢ wᵢ[m] âᵢ` with `wᵢ = weight(tᵢ, [âᵢ·v for v in vs])`: `M` weighted
/// means of the rows in one pass of [`for_each_affine`] (a gradient, Hessian-vector
/// products, or both), each accumulated in row order.
#[inline]
pub(crate) fn affine_row_means<T: Real, const D: usize, const DY: usize, const K: usize, const M: usize>(
    (rows, targets, inv): BatchRows<'_, T, D>,
    vs: [&[T; DY]; K],
    weight: impl Fn(T, [T; K]) -> [T; M],
    mut outs: [&mut [T; DY]; M],
) {
    for out in outs.iter_mut() {
        **out = [T::ZERO; DY];
    }
    for_each_affine(rows, targets, vs, weight, |row, w| {
        for (out, &wm) in outs.iter_mut().zip(&w) {
            add_affine_row(wm, row, out);
        }
    });
    for out in outs.iter_mut() {
        linalg::scale(inv, out);
    }
}

/// `out += c·âᵢ` with `âᵢ = [aᵢ, 1]`.
#[inline]
pub(crate) fn add_affine_row<T: Real, const D: usize, const DY: usize>(c: T, row: &[T; D], out: &mut [T; DY]) {
    for j in 0..D {
        out[j] += c * row[j];
    }
    out[DY - 1] += c;
}

/// `inv · Σ âᵢâᵢᵀ` over `rows` (`âᵢ = [aᵢ, 1]`, `DY = D + 1`), summed in row order: the
/// Hessian of a mean squared loss of an affine model.
pub(crate) fn affine_gram<T: Real, const D: usize, const DY: usize>(rows: &[[T; D]], inv: T) -> [[T; DY]; DY] {
    let mut h = [[T::ZERO; DY]; DY];
    for row in rows {
        for (r, h_row) in h.iter_mut().enumerate() {
            let ar = if r < D { row[r] } else { T::ONE };
            add_affine_row(ar, row, h_row);
        }
    }
    for h_row in h.iter_mut() {
        for v in h_row.iter_mut() {
            *v *= inv;
        }
    }
    h
}
