//! The exp-parametrized L2 penalty shared by the regression problems:
//! `½ Σ_j e^{x_j} w_j²` over the weights `w = y[..DY−1]`, with the last entry of `y` the
//! bias, which is not penalized. `DX = 1` gives one strength for all weights (`x = ln λ`);
//! `DX = DY − 1` gives one per feature. The exp parametrization keeps every λ positive
//! without constraints.

use crate::scalar::Real;

/// Checks the size relation (`DX = 1` or `DX = DY − 1`); call it in a `const { }` block so
/// a wrong pair of sizes fails at compile time.
pub const fn check_sizes<const DX: usize, const DY: usize>() {
    assert!(DY >= 2, "the lower variable holds at least one weight and the bias");
    assert!(
        DX == 1 || DX + 1 == DY,
        "DX is 1 (scalar L2) or DY − 1 (per-feature L2)"
    );
}

/// `λ_j = e^{x_j}` (or `e^{x_0}` for the scalar penalty) for weight `j`.
#[inline]
pub fn strength<T: Real, const DX: usize>(x: &[T; DX], j: usize) -> T {
    let k = if DX == 1 { 0 } else { j };
    x.get(k).copied().unwrap_or(T::ZERO).exp()
}

/// `½ Σ_j λ_j w_j²`.
pub fn value<T: Real, const DX: usize, const DY: usize>(x: &[T; DX], w: &[T; DY]) -> T {
    let mut s = T::ZERO;
    for j in 0..DY - 1 {
        s += strength(x, j) * w[j] * w[j];
    }
    T::from_f64(0.5) * s
}

/// `out_j += λ_j v_j` for the weights: the penalty's gradient (`v = w`) or its Hessian
/// times `v`.
pub fn add_scaled<T: Real, const DX: usize, const DY: usize>(x: &[T; DX], v: &[T; DY], out: &mut [T; DY]) {
    for j in 0..DY - 1 {
        out[j] += strength(x, j) * v[j];
    }
}

/// `∇_x ⟨∇_w penalty, v⟩`: `λ_j w_j v_j` per feature, or `λ Σ_j w_j v_j` for the scalar.
pub fn cross<T: Real, const DX: usize, const DY: usize>(x: &[T; DX], w: &[T; DY], v: &[T; DY], out: &mut [T; DX]) {
    *out = [T::ZERO; DX];
    for j in 0..DY - 1 {
        let k = if DX == 1 { 0 } else { j };
        if let Some(o) = out.get_mut(k) {
            *o += strength(x, j) * w[j] * v[j];
        }
    }
}

/// `∇_x penalty`: `½ λ_j w_j²` per feature, or `½ λ Σ_j w_j²`.
pub fn grad_x<T: Real, const DX: usize, const DY: usize>(x: &[T; DX], w: &[T; DY], out: &mut [T; DX]) {
    cross(x, w, w, out);
    for o in out.iter_mut() {
        *o *= T::from_f64(0.5);
    }
}
