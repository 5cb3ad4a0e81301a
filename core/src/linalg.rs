//! Dense linear algebra on fixed-size arrays `[T; N]` and `[[T; N]; M]`.
//!
//! Small, obvious loops with one fixed summation order (left to right), so results are
//! reproducible bit for bit across targets. Matrices are row-major: `a[i][j]` is row `i`.

use crate::error::Error;
use crate::scalar::Real;

/// `aᵀb`.
#[inline]
pub fn dot<T: Real, const N: usize>(a: &[T; N], b: &[T; N]) -> T {
    let mut s = T::ZERO;
    for i in 0..N {
        s += a[i] * b[i];
    }
    s
}

/// Euclidean norm `‖a‖₂`.
#[inline]
pub fn norm<T: Real, const N: usize>(a: &[T; N]) -> T {
    dot(a, a).sqrt()
}

/// Largest absolute entry `‖a‖∞`.
#[inline]
pub fn norm_inf<T: Real, const N: usize>(a: &[T; N]) -> T {
    let mut m = T::ZERO;
    for &v in a {
        m = m.max(v.abs());
    }
    m
}

/// `y ← y + alpha·x`.
#[inline]
pub fn axpy<T: Real, const N: usize>(alpha: T, x: &[T; N], y: &mut [T; N]) {
    for i in 0..N {
        y[i] += alpha * x[i];
    }
}

/// `a ← alpha·a`.
#[inline]
pub fn scale<T: Real, const N: usize>(alpha: T, a: &mut [T; N]) {
    for v in a.iter_mut() {
        *v *= alpha;
    }
}

/// `out ← a − b`.
#[inline]
pub fn sub<T: Real, const N: usize>(a: &[T; N], b: &[T; N], out: &mut [T; N]) {
    for i in 0..N {
        out[i] = a[i] - b[i];
    }
}

/// `‖a − b‖₂`.
#[inline]
pub fn dist<T: Real, const N: usize>(a: &[T; N], b: &[T; N]) -> T {
    let mut s = T::ZERO;
    for i in 0..N {
        let d = a[i] - b[i];
        s += d * d;
    }
    s.sqrt()
}

/// `true` when every entry is finite.
#[inline]
pub fn all_finite<T: Real, const N: usize>(a: &[T; N]) -> bool {
    a.iter().all(|v| v.is_finite())
}

/// `Ok` when every entry of `a` is finite, else [`Error::NonFinite`] naming `stage` and no
/// oracle: a solver's own arithmetic left the finite range (an oracle's bad output is caught
/// earlier, by [`crate::hook::Finite`]). The one check every solver ends its arithmetic with.
#[inline]
pub fn ensure_finite<T: Real, const N: usize>(a: &[T; N], stage: &'static str) -> Result<(), Error> {
    if all_finite(a) {
        Ok(())
    } else {
        Err(Error::NonFinite { oracle: None, stage })
    }
}

/// `out ← A·x` for a `M×N` matrix.
#[inline]
pub fn matvec<T: Real, const M: usize, const N: usize>(a: &[[T; N]; M], x: &[T; N], out: &mut [T; M]) {
    for i in 0..M {
        out[i] = dot(&a[i], x);
    }
}

/// `out ← Aᵀ·x` for a `M×N` matrix.
#[inline]
pub fn matvec_t<T: Real, const M: usize, const N: usize>(a: &[[T; N]; M], x: &[T; M], out: &mut [T; N]) {
    *out = [T::ZERO; N];
    for i in 0..M {
        axpy(x[i], &a[i], out);
    }
}

/// The `N×N` identity scaled by `s`.
#[inline]
pub fn scaled_identity<T: Real, const N: usize>(s: T) -> [[T; N]; N] {
    let mut m = [[T::ZERO; N]; N];
    for i in 0..N {
        m[i][i] = s;
    }
    m
}

/// In-place Cholesky factorisation `A = L·Lᵀ` of a symmetric positive definite matrix; the
/// lower triangle of `a` is overwritten with `L`. Returns `false` (and leaves `a` partly
/// overwritten) when `A` is not numerically positive definite.
pub fn cholesky<T: Real, const N: usize>(a: &mut [[T; N]; N]) -> bool {
    for j in 0..N {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if !(d > T::ZERO) || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j][j] = d;
        for i in (j + 1)..N {
            let mut s = a[i][j];
            for k in 0..j {
                s -= a[i][k] * a[j][k];
            }
            a[i][j] = s / d;
        }
    }
    true
}

/// Solves `L·Lᵀ·x = b` in place (`b` becomes `x`) given the factor from [`cholesky`].
pub fn cholesky_solve<T: Real, const N: usize>(l: &[[T; N]; N], b: &mut [T; N]) {
    for i in 0..N {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i][k] * b[k];
        }
        b[i] = s / l[i][i];
    }
    for i in (0..N).rev() {
        let mut s = b[i];
        for k in (i + 1)..N {
            s -= l[k][i] * b[k];
        }
        b[i] = s / l[i][i];
    }
}

/// Solves `A·x = b` for symmetric positive definite `A` (`b` becomes `x`). Returns `false`
/// when `A` is not positive definite; `b` is then unchanged.
pub fn spd_solve<T: Real, const N: usize>(a: &[[T; N]; N], b: &mut [T; N]) -> bool {
    let mut l = *a;
    if !cholesky(&mut l) {
        return false;
    }
    cholesky_solve(&l, b);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_spd_system() {
        let a = [[4.0f64, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let x = [1.0, -2.0, 0.5];
        let mut b = [0.0; 3];
        matvec(&a, &x, &mut b);
        assert!(spd_solve(&a, &mut b));
        assert!(dist(&b, &x) < 1e-14);
    }

    #[test]
    fn cholesky_rejects_indefinite() {
        let a = [[1.0f64, 2.0], [2.0, 1.0]];
        let mut b = [1.0, 1.0];
        assert!(!spd_solve(&a, &mut b));
        assert_eq!(b, [1.0, 1.0]);
    }

    #[test]
    fn transpose_product_matches_definition() {
        let a = [[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let mut out = [0.0; 3];
        matvec_t(&a, &[1.0, -1.0], &mut out);
        assert_eq!(out, [-3.0, -3.0, -3.0]);
    }
}
