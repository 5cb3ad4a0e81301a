//! Forward-mode automatic differentiation with dual numbers: write the lower and upper
//! objectives once, generically over the scalar, and get exact gradients, Hessian-vector
//! products and cross products — no tape, no allocation, usable on a microcontroller.
//!
//! [`Dual<S>`] carries a value and one directional derivative. Nesting it,
//! `Dual<Dual<T>>`, carries two directions and their mixed second derivative (a hyper-dual
//! number), which is all a Hessian-vector product needs. [`AutoDiff`] turns any
//! [`Objectives`] into a [`Problem`]; every oracle is a few evaluations of the objective in
//! dual arithmetic (costs in [`AutoDiff`]'s documentation).
//!
//! ```
//! use bilevel::autodiff::{AutoDiff, Lift, Objectives};
//! use bilevel::{Batch, Error, Problem};
//!
//! /// g = ½ e^x ‖y‖² − Σ y,  f = ½ ‖y − 1‖².
//! struct Toy;
//! impl Objectives<f64, 1, 2> for Toy {
//!     fn lower<S: Lift<f64>>(&self, x: &[S; 1], y: &[S; 2], _: Batch) -> Result<S, Error> {
//!         let half = S::lift(0.5);
//!         Ok(half * x[0].exp() * (y[0] * y[0] + y[1] * y[1]) - y[0] - y[1])
//!     }
//!     fn upper<S: Lift<f64>>(&self, _: &[S; 1], y: &[S; 2], _: Batch) -> Result<S, Error> {
//!         let (a, b) = (y[0] - S::ONE, y[1] - S::ONE);
//!         Ok(S::lift(0.5) * (a * a + b * b))
//!     }
//! }
//!
//! let p = AutoDiff::new(Toy);
//! let mut hv = [0.0; 2];
//! p.lower_hvp(&[0.0], &[1.0, 2.0], &[3.0, 4.0], Batch::Full, &mut hv).unwrap();
//! assert_eq!(hv, [3.0, 4.0]); // ∇²_yy g = e^x I = I at x = 0
//! let mut cross = [0.0; 1];
//! p.lower_cross(&[0.0], &[1.0, 2.0], &[3.0, 4.0], Batch::Full, &mut cross).unwrap();
//! assert_eq!(cross, [11.0]); // ∇²_xy g · v = e^x yᵀv
//! ```

use core::cmp::Ordering;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::error::Error;
use crate::problem::{Batch, Problem};
use crate::scalar::Real;

/// A dual number `re + eps·ε` with `ε² = 0`: `eps` is the derivative of `re` along one
/// direction. Over `f32`/`f64` it gives first derivatives; nested, second derivatives.
///
/// Comparisons look at the real part only, so branches in a loss (a stable softplus, a
/// hinge) take the same path as the plain-float evaluation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dual<S> {
    /// The value.
    pub re: S,
    /// The derivative along the seeded direction.
    pub eps: S,
}

impl<S: Real> Dual<S> {
    /// A value with derivative `eps`.
    #[inline]
    pub const fn new(re: S, eps: S) -> Self {
        Self { re, eps }
    }

    /// A constant (zero derivative).
    #[inline]
    pub const fn constant(re: S) -> Self {
        Self { re, eps: S::ZERO }
    }

    /// Applies a scalar function with value `f` and derivative `df` at `self.re`
    /// (the chain rule).
    #[inline]
    fn chain(self, f: S, df: S) -> Self {
        Self {
            re: f,
            eps: df * self.eps,
        }
    }
}

impl<S: Real> PartialEq for Dual<S> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.re == other.re
    }
}

impl<S: Real> PartialOrd for Dual<S> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.re.partial_cmp(&other.re)
    }
}

impl<S: Real> Add for Dual<S> {
    type Output = Self;
    #[inline]
    fn add(self, o: Self) -> Self {
        Self {
            re: self.re + o.re,
            eps: self.eps + o.eps,
        }
    }
}

impl<S: Real> Sub for Dual<S> {
    type Output = Self;
    #[inline]
    fn sub(self, o: Self) -> Self {
        Self {
            re: self.re - o.re,
            eps: self.eps - o.eps,
        }
    }
}

impl<S: Real> Mul for Dual<S> {
    type Output = Self;
    #[inline]
    fn mul(self, o: Self) -> Self {
        Self {
            re: self.re * o.re,
            eps: self.re * o.eps + self.eps * o.re,
        }
    }
}

impl<S: Real> Div for Dual<S> {
    type Output = Self;
    #[inline]
    fn div(self, o: Self) -> Self {
        let q = self.re / o.re;
        Self {
            re: q,
            eps: (self.eps - q * o.eps) / o.re,
        }
    }
}

impl<S: Real> Neg for Dual<S> {
    type Output = Self;
    #[inline]
    fn neg(self) -> Self {
        Self {
            re: -self.re,
            eps: -self.eps,
        }
    }
}

macro_rules! assign_ops {
    ($($tr:ident $m:ident $op:tt),*) => {$(
        impl<S: Real> $tr for Dual<S> {
            #[inline]
            fn $m(&mut self, o: Self) {
                *self = *self $op o;
            }
        }
    )*};
}
assign_ops!(AddAssign add_assign +, SubAssign sub_assign -, MulAssign mul_assign *, DivAssign div_assign /);

impl<S: Real> Real for Dual<S> {
    const ZERO: Self = Self::constant(S::ZERO);
    const ONE: Self = Self::constant(S::ONE);
    const EPSILON: Self = Self::constant(S::EPSILON);
    const MAX: Self = Self::constant(S::MAX);

    #[inline]
    fn from_f64(v: f64) -> Self {
        Self::constant(S::from_f64(v))
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self.re.to_f64()
    }
    #[inline]
    fn sqrt(self) -> Self {
        let r = self.re.sqrt();
        self.chain(r, S::ONE / (r + r))
    }
    #[inline]
    fn exp(self) -> Self {
        let e = self.re.exp();
        self.chain(e, e)
    }
    #[inline]
    fn ln(self) -> Self {
        self.chain(self.re.ln(), S::ONE / self.re)
    }
    #[inline]
    fn ln_1p(self) -> Self {
        self.chain(self.re.ln_1p(), S::ONE / (S::ONE + self.re))
    }
    /// `a^e` with both parts differentiated: `d(a^e) = a^e (e' ln a + e a'/a)`; when the
    /// exponent is a constant the `ln a` term is skipped, so negative or zero bases work
    /// wherever the plain power does.
    #[inline]
    fn powf(self, e: Self) -> Self {
        let p = self.re.powf(e.re);
        let from_base = e.re * self.re.powf(e.re - S::ONE) * self.eps;
        let eps = if e.eps == S::ZERO {
            from_base
        } else {
            from_base + p * self.re.ln() * e.eps
        };
        Self { re: p, eps }
    }
    #[inline]
    fn abs(self) -> Self {
        if self.re < S::ZERO { -self } else { self }
    }
    #[inline]
    fn is_finite(self) -> bool {
        self.re.is_finite() && self.eps.is_finite()
    }
}

/// A scalar the objectives can be evaluated in: the base type `T` itself or a (nested)
/// dual number over it. [`Lift::lift`] brings data and constants of type `T` in as
/// constants.
pub trait Lift<T: Real>: Real {
    /// `v` as a constant of this scalar type.
    fn lift(v: T) -> Self;
}

impl Lift<f32> for f32 {
    #[inline]
    fn lift(v: f32) -> Self {
        v
    }
}

impl Lift<f64> for f64 {
    #[inline]
    fn lift(v: f64) -> Self {
        v
    }
}

impl<T: Real, S: Lift<T>> Lift<T> for Dual<S> {
    #[inline]
    fn lift(v: T) -> Self {
        Self::constant(S::lift(v))
    }
}

/// The two objectives of a bilevel problem, written once for any scalar `S`: the lower
/// level `g(x, y)` and the upper level `f(x, y)`, each on a batch of samples.
///
/// Use only the operations of [`Real`] (and [`Lift::lift`] for data), so the same code runs
/// in plain floats and in dual numbers.
pub trait Objectives<T: Real, const DX: usize, const DY: usize> {
    /// The lower-level objective `g(x, y)` on `batch`.
    fn lower<S: Lift<T>>(&self, x: &[S; DX], y: &[S; DY], batch: Batch) -> Result<S, Error>;
    /// The upper-level objective `f(x, y)` on `batch`.
    fn upper<S: Lift<T>>(&self, x: &[S; DX], y: &[S; DY], batch: Batch) -> Result<S, Error>;
    /// Numbers of (lower, upper) samples, for stochastic solvers; `(0, 0)` when the
    /// objectives are not finite sums.
    fn samples(&self) -> (usize, usize) {
        (0, 0)
    }
}

/// The [`Problem`] of a pair of [`Objectives`], with every oracle computed exactly by
/// forward-mode differentiation.
///
/// Costs, in evaluations of an objective (each in the stated arithmetic): `lower_grad`
/// `DY` (dual), `upper_grad` `DX + DY` (dual), `lower_hvp` `DY` (nested dual, about 3×
/// a dual one), `lower_cross` `DX` (nested dual), `lower_grad_x` `DX` (dual), values 1.
/// Forward mode is the right trade-off for the small `DY` a device holds; for large `DY`,
/// hand-written oracles are faster.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoDiff<O>(pub O);

impl<O> AutoDiff<O> {
    /// Wraps the objectives.
    pub const fn new(objectives: O) -> Self {
        Self(objectives)
    }
}

/// `v` lifted to constants.
fn constants<T: Real, S: Lift<T>, const N: usize>(v: &[T; N]) -> [S; N] {
    v.map(S::lift)
}

/// `v` lifted, with unit derivative in coordinate `i`.
fn seeded<T: Real, const N: usize>(v: &[T; N], i: usize) -> [Dual<T>; N] {
    let mut out = v.map(Dual::constant);
    if let Some(e) = out.get_mut(i) {
        e.eps = T::ONE;
    }
    out
}

/// `v` lifted to nested duals whose inner derivative is `dir` and outer derivative is the
/// unit vector `i` (`None`: zero).
fn seeded2<T: Real, const N: usize>(v: &[T; N], dir: Option<&[T; N]>, i: Option<usize>) -> [Dual<Dual<T>>; N] {
    let mut out = [Dual::<Dual<T>>::ZERO; N];
    for (k, o) in out.iter_mut().enumerate() {
        let inner = match dir {
            Some(d) => Dual::new(v[k], d[k]),
            None => Dual::constant(v[k]),
        };
        let outer = if Some(k) == i { Dual::ONE } else { Dual::ZERO };
        *o = Dual::new(inner, outer);
    }
    out
}

impl<O, T, const DX: usize, const DY: usize> Problem<T, DX, DY> for AutoDiff<O>
where
    O: Objectives<T, DX, DY>,
    T: Real + Lift<T>,
{
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let xd = constants::<T, Dual<T>, DX>(x);
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.0.lower(&xd, &seeded(y, j), batch)?.eps;
        }
        Ok(())
    }

    fn upper_grad(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        batch: Batch,
        gx: &mut [T; DX],
        gy: &mut [T; DY],
    ) -> Result<(), Error> {
        let (xd, yd) = (constants::<T, Dual<T>, DX>(x), constants::<T, Dual<T>, DY>(y));
        for (i, o) in gx.iter_mut().enumerate() {
            *o = self.0.upper(&seeded(x, i), &yd, batch)?.eps;
        }
        for (j, o) in gy.iter_mut().enumerate() {
            *o = self.0.upper(&xd, &seeded(y, j), batch)?.eps;
        }
        Ok(())
    }

    /// `(∇²_yy g · v)_j`: the inner derivative along `v`, the outer along `e_j`.
    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let xd = seeded2(x, None, None);
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.0.lower(&xd, &seeded2(y, Some(v), Some(j)), batch)?.eps.eps;
        }
        Ok(())
    }

    /// `(∇²_xy g · v)_i`: the inner derivative along `v` in `y`, the outer along `e_i` in `x`.
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let yd = seeded2(y, Some(v), None);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0.lower(&seeded2(x, None, Some(i)), &yd, batch)?.eps.eps;
        }
        Ok(())
    }

    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let yd = constants::<T, Dual<T>, DY>(y);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.0.lower(&seeded(x, i), &yd, batch)?.eps;
        }
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        self.0.lower(x, y, batch)
    }

    fn upper_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        self.0.upper(x, y, batch)
    }

    fn samples(&self) -> (usize, usize) {
        self.0.samples()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::{sigmoid, softplus};

    type D = Dual<f64>;
    type DD = Dual<Dual<f64>>;

    /// Derivative of `f` at `a` by central differences.
    fn fd(f: impl Fn(f64) -> f64, a: f64) -> f64 {
        let h = 1e-6;
        (f(a + h) - f(a - h)) / (2.0 * h)
    }

    fn check_first(f: impl Fn(D) -> D, g: impl Fn(f64) -> f64, a: f64) {
        let d = f(D::new(a, 1.0));
        assert_eq!(d.re, g(a), "value at {a}");
        let want = fd(&g, a);
        assert!(
            (d.eps - want).abs() < 1e-6 * want.abs().max(1.0),
            "derivative at {a}: {} vs {want}",
            d.eps
        );
    }

    #[test]
    fn elementary_derivatives_match_differences() {
        for &a in &[0.3, 1.7, 4.0] {
            check_first(|t| t.sqrt(), libm::sqrt, a);
            check_first(|t| t.exp(), libm::exp, a);
            check_first(|t| t.ln(), libm::log, a);
            check_first(|t| t.ln_1p(), libm::log1p, a);
            check_first(|t| t.powf(D::from_f64(2.5)), |s| libm::pow(s, 2.5), a);
            check_first(|t| t.powf(t), |s| libm::pow(s, s), a);
            check_first(|t| D::ONE / (t * t + D::ONE), |s| 1.0 / (s * s + 1.0), a);
            check_first(softplus, softplus::<f64>, a - 2.0);
            check_first(sigmoid, sigmoid::<f64>, a - 2.0);
            check_first(|t| (-t).abs(), |s| libm::fabs(-s), a);
        }
    }

    #[test]
    fn nested_duals_give_second_derivatives() {
        // f(t) = t³ e^t: f'' = (6t + 6t² + t³) e^t.
        for &a in &[-1.0, 0.5, 2.0] {
            let t = DD::new(D::new(a, 1.0), D::new(1.0, 0.0));
            let f = t * t * t * t.exp();
            let want = (6.0 * a + 6.0 * a * a + a * a * a) * libm::exp(a);
            assert!((f.eps.eps - want).abs() < 1e-12 * want.abs().max(1.0));
            assert_eq!(f.re.eps, f.eps.re, "both first derivatives agree");
        }
    }

    #[test]
    fn comparisons_and_finiteness_use_the_right_parts() {
        assert!(D::new(1.0, 5.0) < D::new(2.0, -5.0));
        assert_eq!(D::new(1.0, 5.0), D::new(1.0, 0.0));
        assert!(!D::new(1.0, f64::NAN).is_finite());
        assert!(!DD::new(D::new(1.0, 0.0), D::new(0.0, f64::INFINITY)).is_finite());
    }

    #[test]
    fn lift_embeds_constants() {
        let c: DD = Lift::lift(2.5f64);
        assert_eq!((c.re.re, c.re.eps, c.eps.re, c.eps.eps), (2.5, 0.0, 0.0, 0.0));
        let c: Dual<f32> = Lift::lift(1.5f32);
        assert_eq!((c.re, c.eps), (1.5, 0.0));
    }
}
