//! The oracle trait every solver consumes, and the adapters around it.
//!
//! A bilevel problem is `min_x F(x) = f(x, y*(x))` with `y*(x) = argmin_y g(x, y)`. Solvers
//! only ever see it through the oracles of [`Problem`]: gradients, Hessian-vector and cross
//! products of `g`, gradients of `f`, and optionally values. Every oracle takes a [`Batch`],
//! so deterministic and stochastic solvers run on the same problems, and writes into a
//! buffer owned by the caller.
//!
//! Adapters: [`FiniteDiff`] supplies second-order oracles from gradients; the wrappers that
//! only act around calls are hooks of [`crate::hook`]: [`Counted`] counts every call (the
//! x-axis of every comparison), [`Checked`] turns non-finite outputs into
//! [`Error::NonFinite`] naming the oracle.

pub use crate::hook::{Checked, Counted};

use crate::error::{Error, Oracle};
use crate::linalg;
use crate::scalar::Real;

/// Which samples an oracle averages over.
///
/// Finite-sum problems hold their samples in a fixed order (shuffle once when loading); a
/// minibatch is a contiguous range of it. Stochastic solvers visit the ranges in a shuffled
/// order, and variance-reduced ones key their tables on [`Batch::id`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum Batch {
    /// All samples: the deterministic oracle.
    #[default]
    Full,
    /// Samples `start .. start + len` (clamped to the data), the `id`-th minibatch.
    Range {
        /// Index of the minibatch (for variance-reduction tables).
        id: u32,
        /// First sample.
        start: u32,
        /// Number of samples.
        len: u32,
    },
}

impl Batch {
    /// The sample indices of this batch for a data set of `n` samples (clamped, never out of
    /// bounds; empty when the range lies past the data).
    #[inline]
    pub fn range(self, n: usize) -> core::ops::Range<usize> {
        match self {
            Batch::Full => 0..n,
            Batch::Range { start, len, .. } => {
                let s = (start as usize).min(n);
                let e = s.saturating_add(len as usize).min(n);
                s..e
            }
        }
    }

    /// The minibatch index (0 for the full batch).
    #[inline]
    pub fn id(self) -> u32 {
        match self {
            Batch::Full => 0,
            Batch::Range { id, .. } => id,
        }
    }
}

/// The oracles of a bilevel problem with upper variable `x ∈ R^DX` and lower variable
/// `y ∈ R^DY`, over scalar `T`.
///
/// `lower_grad` and `upper_grad` are required; the others have defaults returning
/// [`Error::Unsupported`] (or, for [`Problem::lower_hvp2`], two single products). Wrap a
/// gradient-only problem in [`FiniteDiff`] to get the second-order oracles.
pub trait Problem<T: Real, const DX: usize, const DY: usize> {
    /// `out ← ∇_y g(x, y)`.
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error>;

    /// `gx ← ∇_x f(x, y)`, `gy ← ∇_y f(x, y)`.
    fn upper_grad(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        batch: Batch,
        gx: &mut [T; DX],
        gy: &mut [T; DY],
    ) -> Result<(), Error>;

    /// `out ← ∇²_yy g(x, y)·v`.
    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let _ = (x, y, v, batch, out);
        Err(Error::Unsupported {
            oracle: Oracle::LowerHvp,
        })
    }

    /// The gradient and one Hessian-vector product at the same point and batch (one pass
    /// where the problem can share the rows' curvature; the single-loop methods need both
    /// each step). Counted as one of each.
    fn lower_grad_hvp(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v: &[T; DY],
        batch: Batch,
        grad: &mut [T; DY],
        hvp: &mut [T; DY],
    ) -> Result<(), Error> {
        self.lower_grad(x, y, batch, grad)?;
        self.lower_hvp(x, y, v, batch, hvp)
    }

    /// Two Hessian-vector products at the same point and batch (one fused pass where the
    /// problem can do it; NBO always has two right-hand sides).
    #[allow(clippy::too_many_arguments)]
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
        self.lower_hvp(x, y, v1, batch, out1)?;
        self.lower_hvp(x, y, v2, batch, out2)
    }

    /// `out ← ∇²_xy g(x, y)·v = ∇_x ⟨∇_y g(x, y), v⟩`.
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let _ = (x, y, v, batch, out);
        Err(Error::Unsupported {
            oracle: Oracle::LowerCross,
        })
    }

    /// `out ← ∇_x g(x, y)` (first-order penalty methods such as F2SA).
    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let _ = (x, y, batch, out);
        Err(Error::Unsupported {
            oracle: Oracle::LowerGradX,
        })
    }

    /// `g(x, y)`.
    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let _ = (x, y, batch);
        Err(Error::Unsupported {
            oracle: Oracle::LowerValue,
        })
    }

    /// `f(x, y)`.
    fn upper_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let _ = (x, y, batch);
        Err(Error::Unsupported {
            oracle: Oracle::UpperValue,
        })
    }

    /// Numbers of lower- and upper-level samples (1 and 1 for problems that are not finite
    /// sums); minibatch samplers split these.
    fn samples(&self) -> (usize, usize) {
        (1, 1)
    }
}

impl<T: Real, const DX: usize, const DY: usize, P: Problem<T, DX, DY> + ?Sized> Problem<T, DX, DY> for &P {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        (**self).lower_grad(x, y, b, out)
    }
    fn upper_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, gx: &mut [T; DX], gy: &mut [T; DY]) -> Result<(), Error> {
        (**self).upper_grad(x, y, b, gx, gy)
    }
    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        (**self).lower_hvp(x, y, v, b, out)
    }
    fn lower_grad_hvp(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v: &[T; DY],
        b: Batch,
        grad: &mut [T; DY],
        hvp: &mut [T; DY],
    ) -> Result<(), Error> {
        (**self).lower_grad_hvp(x, y, v, b, grad, hvp)
    }
    fn lower_hvp2(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        b: Batch,
        o1: &mut [T; DY],
        o2: &mut [T; DY],
    ) -> Result<(), Error> {
        (**self).lower_hvp2(x, y, v1, v2, b, o1, o2)
    }
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        (**self).lower_cross(x, y, v, b, out)
    }
    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        (**self).lower_grad_x(x, y, b, out)
    }
    fn lower_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        (**self).lower_value(x, y, b)
    }
    fn upper_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        (**self).upper_value(x, y, b)
    }
    fn samples(&self) -> (usize, usize) {
        (**self).samples()
    }
}

/// Numbers of oracle calls by kind. A fused [`Problem::lower_hvp2`] counts as two products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OracleCounts {
    /// ∇_y g calls.
    pub lower_grad: u64,
    /// ∇_x f / ∇_y f calls.
    pub upper_grad: u64,
    /// ∇²_yy g·v products.
    pub lower_hvp: u64,
    /// ∇²_xy g·v products.
    pub lower_cross: u64,
    /// ∇_x g calls.
    pub lower_grad_x: u64,
    /// g evaluations.
    pub lower_value: u64,
    /// f evaluations.
    pub upper_value: u64,
}

impl OracleCounts {
    /// The count of `oracle`'s calls.
    pub fn of_mut(&mut self, oracle: Oracle) -> &mut u64 {
        match oracle {
            Oracle::LowerGrad => &mut self.lower_grad,
            Oracle::UpperGrad => &mut self.upper_grad,
            Oracle::LowerHvp => &mut self.lower_hvp,
            Oracle::LowerCross => &mut self.lower_cross,
            Oracle::LowerGradX => &mut self.lower_grad_x,
            Oracle::LowerValue => &mut self.lower_value,
            Oracle::UpperValue => &mut self.upper_value,
        }
    }

    /// All calls together.
    pub fn total(&self) -> u64 {
        self.lower_grad
            + self.upper_grad
            + self.lower_hvp
            + self.lower_cross
            + self.lower_grad_x
            + self.lower_value
            + self.upper_value
    }
}

/// Second-order oracles from central differences of gradients, for problems that only
/// provide gradients.
///
/// `H·v ≈ [∇_y g(y + εv) − ∇_y g(y − εv)] / 2ε` with `ε = eps^{1/3}(1 + ‖y‖)/‖v‖` (about
/// 5e-3 relative accuracy in `f32`, 1e-10 in `f64`). The cross product uses differences of
/// `∇_x g` along `v` when the problem has it (2 calls), otherwise differences of `∇_y g`
/// along each coordinate of `x` (2·DX calls).
#[derive(Clone, Copy, Debug, Default)]
pub struct FiniteDiff<P>(pub P);

/// `ε = eps^{1/3}(1 + ‖base‖)/‖v‖`: balances the truncation (`ε²`) of a central difference
/// along `v` against its roundoff (`eps/ε`).
fn difference_step<T: Real, const N: usize>(base: &[T; N], dir_norm: T) -> T {
    let cbrt_eps = T::EPSILON.powf(T::from_f64(1.0 / 3.0));
    cbrt_eps * (T::ONE + linalg::norm(base)) / dir_norm
}

/// `out ← [∇g(y + εv) − ∇g(y − εv)] / 2ε ≈ ∇²g(y)·v` from the gradient `grad` (two calls;
/// none for `v = 0`), with the step of [`FiniteDiff`]. The two gradients are a secant pair
/// `(2εv, out·2ε)` centred at `y`.
pub fn gradient_difference<T: Real, const N: usize>(
    grad: impl Fn(&[T; N], &mut [T; N]) -> Result<(), Error>,
    y: &[T; N],
    v: &[T; N],
    out: &mut [T; N],
) -> Result<(), Error> {
    let nv = linalg::norm(v);
    if nv == T::ZERO {
        *out = [T::ZERO; N];
        return Ok(());
    }
    let eps = difference_step(y, nv);
    let (mut yp, mut ym) = (*y, *y);
    linalg::axpy(eps, v, &mut yp);
    linalg::axpy(-eps, v, &mut ym);
    let mut gm = [T::ZERO; N];
    grad(&yp, out)?;
    grad(&ym, &mut gm)?;
    let inv = T::ONE / (eps + eps);
    for (o, m) in out.iter_mut().zip(gm.iter()) {
        *o = (*o - *m) * inv;
    }
    Ok(())
}

impl<T: Real, const DX: usize, const DY: usize, P: Problem<T, DX, DY>> Problem<T, DX, DY> for FiniteDiff<P> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        self.0.lower_grad(x, y, b, out)
    }
    fn upper_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, gx: &mut [T; DX], gy: &mut [T; DY]) -> Result<(), Error> {
        self.0.upper_grad(x, y, b, gx, gy)
    }
    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        gradient_difference(|z, g| self.0.lower_grad(x, z, b, g), y, v, out)
    }
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let nv = linalg::norm(v);
        if nv == T::ZERO {
            *out = [T::ZERO; DX];
            return Ok(());
        }
        // Preferred: difference of ∇_x g along v (two calls).
        let eps = difference_step(y, nv);
        let (mut yp, mut ym) = (*y, *y);
        linalg::axpy(eps, v, &mut yp);
        linalg::axpy(-eps, v, &mut ym);
        let mut gm = [T::ZERO; DX];
        match self.0.lower_grad_x(x, &yp, b, out) {
            Ok(()) => {
                self.0.lower_grad_x(x, &ym, b, &mut gm)?;
                let inv = T::ONE / (eps + eps);
                for j in 0..DX {
                    out[j] = (out[j] - gm[j]) * inv;
                }
                Ok(())
            }
            Err(Error::Unsupported { .. }) => {
                // Fallback: ∂/∂x_j ⟨∇_y g(x, y), v⟩ by central differences in each x_j.
                let h = difference_step(x, T::ONE);
                let (mut gp, mut gmy) = ([T::ZERO; DY], [T::ZERO; DY]);
                for j in 0..DX {
                    let (mut xp, mut xm) = (*x, *x);
                    xp[j] += h;
                    xm[j] -= h;
                    self.0.lower_grad(&xp, y, b, &mut gp)?;
                    self.0.lower_grad(&xm, y, b, &mut gmy)?;
                    out[j] = (linalg::dot(&gp, v) - linalg::dot(&gmy, v)) / (h + h);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        self.0.lower_grad_x(x, y, b, out)
    }
    fn lower_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        self.0.lower_value(x, y, b)
    }
    fn upper_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        self.0.upper_value(x, y, b)
    }
    fn samples(&self) -> (usize, usize) {
        self.0.samples()
    }
}

/// `h ← h − ∇²_xy g(x, y)·u`: the ending of the implicit-function hypergradient
/// `∇_x f − ∇²_xy g·u`, with `h` holding `∇_x f(x, y)` on entry and `u ≈ [∇²_yy g]⁻¹ ∇_y f`
/// the adjoint. Every method that ends with an adjoint ends with this.
pub fn implicit_hypergradient<T: Real, const DX: usize, const DY: usize, P: Problem<T, DX, DY>>(
    problem: &P,
    x: &[T; DX],
    y: &[T; DY],
    u: &[T; DY],
    batch: Batch,
    h: &mut [T; DX],
) -> Result<(), Error> {
    let mut cross = [T::ZERO; DX];
    problem.lower_cross(x, y, u, batch, &mut cross)?;
    for j in 0..DX {
        h[j] -= cross[j];
    }
    Ok(())
}
