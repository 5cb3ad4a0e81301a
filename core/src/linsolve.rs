//! Iterative solvers for `H·u = b` where `H = ∇²_yy g(x, y)` is only available through
//! Hessian-vector products: conjugate gradient, gradient descent on `½uᵀHu − bᵀu`, the
//! truncated Neumann series `u = η Σ_{q=0}^{Q} (I − ηH)^q b`, and a quasi-Newton method on
//! `½uᵀHu − bᵀu` whose secant pairs are the products themselves ([`quasi_newton`]).
//!
//! Each method comes for one right-hand side and for two right-hand sides sharing one
//! Hessian (NBO solves `H·[v, u] = [∇_y g, ∇_y f]`). The two-right-hand-side versions run
//! both systems in lockstep and ask the operator for both products at once
//! ([`SymmetricOperator::apply2`], the fused [`Problem::lower_hvp2`] oracle), so each step
//! costs one oracle call for both vectors. There is one implementation per method: the
//! single-system functions are the lockstep solver with one system.
//!
//! Every solve reports how it ended ([`SolveStatus`]): converged, out of steps, broken
//! down (`pᵀHp ≤ 0` or non-finite in CG), or diverged (growing GD residuals or Neumann
//! terms, i.e. a step above `2/L`). A failure is an explicit status, never a silent zero.
//! Products with an exactly zero vector are skipped (`H·0 = 0`), so a cold start from zero
//! costs no oracle call.

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Checked, Problem, gradient_difference};
use crate::qn::InverseHessian;
use crate::scalar::Real;

/// How an iterative linear solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SolveStatus {
    /// The residual norm (for Neumann: the norm of the last term times `η`) fell below the
    /// tolerance.
    Converged,
    /// The step budget ran out first.
    Budget,
    /// Conjugate gradient cannot continue: the operator is not positive definite along a
    /// search direction (`pᵀHp ≤ 0`), or `pᵀHp` is not finite.
    Breakdown,
    /// The iteration is unstable: a gradient-descent residual grew past twice its start
    /// (or `‖b‖`), or a Neumann term grew past `‖b‖`. With a symmetric positive definite
    /// `H` this means the step (`β` or `η`) exceeds `2/L`.
    Diverged,
}

/// The outcome of one linear solve.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Solve<T> {
    /// How it ended.
    pub status: SolveStatus,
    /// Steps taken (iterate updates; for Neumann, terms added after the first).
    pub steps: u32,
    /// The last residual norm the method computed. CG: `‖b − H u‖` at the returned `u`
    /// (by recurrence). Gradient descent: `‖b − H u‖` at the iterate before the last step.
    /// Neumann: `‖(I − ηH)^q b‖ = ‖b − H u_{q−1}‖`, the residual of the sum without its
    /// last term. For the last two it bounds the final residual when the iteration is
    /// stable.
    pub residual: T,
}

/// A symmetric linear operator on `R^N`, applied by products (a Hessian).
///
/// The solvers only see `H` through this trait, so the operator decides which point and
/// which minibatch each product uses (a stochastic solver can draw a fresh batch per call).
pub trait SymmetricOperator<T: Real, const N: usize> {
    /// `out ← H·v`.
    fn apply(&self, v: &[T; N], out: &mut [T; N]) -> Result<(), Error>;

    /// `out1 ← H·v1`, `out2 ← H·v2` with the same `H`: one fused pass where the operator
    /// can do it. Defaults to two [`SymmetricOperator::apply`] calls.
    fn apply2(&self, v1: &[T; N], v2: &[T; N], out1: &mut [T; N], out2: &mut [T; N]) -> Result<(), Error> {
        self.apply(v1, out1)?;
        self.apply(v2, out2)
    }

    /// `true` when each product samples a fresh minibatch, so consecutive products see
    /// different matrices: residuals then carry sampling noise, and the growth tests of
    /// gradient descent and Neumann (which detect a step above `2/L` for one fixed matrix)
    /// do not apply. Defaults to `false`.
    fn samples_each_product(&self) -> bool {
        false
    }
}

/// The Hessian `∇²_yy g(x, y)` at a fixed point and batch, as an operator.
#[derive(Debug)]
pub struct LowerHessian<'a, 'p, P, T, const DX: usize, const DY: usize> {
    /// Checked oracle access.
    pub oracles: Checked<'p, P>,
    /// Upper variable.
    pub x: &'a [T; DX],
    /// Lower variable.
    pub y: &'a [T; DY],
    /// Batch of every product.
    pub batch: Batch,
}

impl<P: Problem<T, DX, DY>, T: Real, const DX: usize, const DY: usize> LowerHessian<'_, '_, P, T, DX, DY> {
    /// `out ← H·v` (one [`Problem::lower_hvp`] call).
    pub fn apply(&self, v: &[T; DY], out: &mut [T; DY]) -> Result<(), Error> {
        self.oracles.lower_hvp(self.x, self.y, v, self.batch, out)
    }

    /// `out1 ← H·v1`, `out2 ← H·v2` (one fused [`Problem::lower_hvp2`] call).
    pub fn apply2(&self, v1: &[T; DY], v2: &[T; DY], out1: &mut [T; DY], out2: &mut [T; DY]) -> Result<(), Error> {
        self.oracles.lower_hvp2(self.x, self.y, v1, v2, self.batch, out1, out2)
    }
}

impl<P: Problem<T, DX, DY>, T: Real, const DX: usize, const DY: usize> SymmetricOperator<T, DY>
    for LowerHessian<'_, '_, P, T, DX, DY>
{
    fn apply(&self, v: &[T; DY], out: &mut [T; DY]) -> Result<(), Error> {
        LowerHessian::apply(self, v, out)
    }
    fn apply2(&self, v1: &[T; DY], v2: &[T; DY], out1: &mut [T; DY], out2: &mut [T; DY]) -> Result<(), Error> {
        LowerHessian::apply2(self, v1, v2, out1, out2)
    }
}

/// The Hessian `∇²_yy g(x, y)` at a fixed point and batch, applied by central differences
/// of lower gradients ([`gradient_difference`]): two [`Problem::lower_grad`] calls per
/// product and no Hessian-vector oracle (qNBO's Subroutine B).
#[derive(Debug)]
pub struct GradientDifferenceHessian<'a, 'p, P, T, const DX: usize, const DY: usize> {
    /// Checked oracle access.
    pub oracles: Checked<'p, P>,
    /// Upper variable.
    pub x: &'a [T; DX],
    /// Lower variable (the centre of every difference).
    pub y: &'a [T; DY],
    /// Batch of every gradient.
    pub batch: Batch,
}

impl<P: Problem<T, DX, DY>, T: Real, const DX: usize, const DY: usize> SymmetricOperator<T, DY>
    for GradientDifferenceHessian<'_, '_, P, T, DX, DY>
{
    fn apply(&self, v: &[T; DY], out: &mut [T; DY]) -> Result<(), Error> {
        gradient_difference(|z, g| self.oracles.lower_grad(self.x, z, self.batch, g), self.y, v, out)
    }
}

/// `outs[k] ← H·vs[k]` for every system `k` with `active[k]`, pairing the products into
/// fused [`SymmetricOperator::apply2`] calls. A zero vector costs no call.
fn products<O, T, const N: usize, const K: usize>(
    op: &O,
    active: &[bool; K],
    vs: &[[T; N]; K],
    outs: &mut [[T; N]; K],
) -> Result<(), Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    let mut pending: Option<usize> = None;
    for k in 0..K {
        if !active[k] {
            continue;
        }
        if vs[k].iter().all(|&v| v == T::ZERO) {
            outs[k] = [T::ZERO; N];
            continue;
        }
        match pending {
            None => pending = Some(k),
            Some(j) => {
                let (head, tail) = outs.split_at_mut(k);
                if let (Some(out_j), Some(out_k)) = (head.get_mut(j), tail.first_mut()) {
                    op.apply2(&vs[j], &vs[k], out_j, out_k)?;
                }
                pending = None;
            }
        }
    }
    if let Some(j) = pending {
        op.apply(&vs[j], &mut outs[j])?;
    }
    Ok(())
}

/// Conjugate gradient on `K` systems `H·u_k = b_k` sharing `H`, in lockstep.
fn conjugate_gradient_lockstep<O, T, const N: usize, const K: usize>(
    op: &O,
    b: [&[T; N]; K],
    u: [&mut [T; N]; K],
    max_steps: u32,
    tol: [T; K],
) -> Result<[Solve<T>; K], Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    let mut x = [[T::ZERO; N]; K];
    for k in 0..K {
        x[k] = *u[k];
    }
    let mut active = [true; K];
    let mut r = [[T::ZERO; N]; K];
    products(op, &active, &x, &mut r)?;
    let mut rr = [T::ZERO; K];
    for k in 0..K {
        for i in 0..N {
            r[k][i] = b[k][i] - r[k][i];
        }
        rr[k] = linalg::dot(&r[k], &r[k]);
    }
    let mut p = r;
    let mut hp = [[T::ZERO; N]; K];
    let mut out = [Solve {
        status: SolveStatus::Budget,
        steps: 0,
        residual: T::ZERO,
    }; K];
    loop {
        for k in 0..K {
            if !active[k] {
                continue;
            }
            out[k].residual = rr[k].sqrt();
            if out[k].residual <= tol[k] {
                out[k].status = SolveStatus::Converged;
                active[k] = false;
            } else if out[k].steps >= max_steps {
                out[k].status = SolveStatus::Budget;
                active[k] = false;
            }
        }
        if !active.iter().any(|&a| a) {
            break;
        }
        products(op, &active, &p, &mut hp)?;
        for k in 0..K {
            if !active[k] {
                continue;
            }
            let php = linalg::dot(&p[k], &hp[k]);
            if !(php > T::ZERO) || !php.is_finite() {
                out[k].status = SolveStatus::Breakdown;
                active[k] = false;
                continue;
            }
            let alpha = rr[k] / php;
            linalg::axpy(alpha, &p[k], &mut x[k]);
            linalg::axpy(-alpha, &hp[k], &mut r[k]);
            let rr_new = linalg::dot(&r[k], &r[k]);
            let beta = rr_new / rr[k];
            for i in 0..N {
                p[k][i] = r[k][i] + beta * p[k][i];
            }
            rr[k] = rr_new;
            out[k].steps += 1;
        }
    }
    x.iter()
        .try_for_each(|v| linalg::ensure_finite(v, "conjugate gradient"))?;
    for (dst, src) in u.into_iter().zip(x.iter()) {
        *dst = *src;
    }
    Ok(out)
}

/// Gradient descent `u ← u − β(H u − b)` on `K` systems sharing `H`, in lockstep.
fn gradient_descent_lockstep<O, T, const N: usize, const K: usize>(
    op: &O,
    b: [&[T; N]; K],
    u: [&mut [T; N]; K],
    step: T,
    max_steps: u32,
    tol: [T; K],
) -> Result<[Solve<T>; K], Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    crate::error::ensure(
        step.is_finite() && step > T::ZERO,
        "linear-system step",
        "finite and > 0",
    )?;
    let two = T::ONE + T::ONE;
    let sampled = op.samples_each_product();
    let mut x = [[T::ZERO; N]; K];
    let mut bound = [T::ZERO; K];
    for k in 0..K {
        x[k] = *u[k];
    }
    let mut active = [true; K];
    let mut hx = [[T::ZERO; N]; K];
    let mut out = [Solve {
        status: SolveStatus::Budget,
        steps: 0,
        residual: T::ZERO,
    }; K];
    for step_index in 0..max_steps {
        products(op, &active, &x, &mut hx)?;
        for k in 0..K {
            if !active[k] {
                continue;
            }
            let mut r = [T::ZERO; N];
            linalg::sub(&hx[k], b[k], &mut r);
            let rn = linalg::norm(&r);
            out[k].residual = rn;
            if step_index == 0 {
                bound[k] = two * rn.max(linalg::norm(b[k]));
            }
            if rn <= tol[k] {
                out[k].status = SolveStatus::Converged;
                active[k] = false;
            } else if (rn > bound[k] && !sampled) || !rn.is_finite() {
                out[k].status = SolveStatus::Diverged;
                active[k] = false;
            } else {
                for i in 0..N {
                    x[k][i] -= step * r[i];
                }
                out[k].steps += 1;
            }
        }
        if !active.iter().any(|&a| a) {
            break;
        }
    }
    x.iter()
        .try_for_each(|v| linalg::ensure_finite(v, "gradient descent on a linear system"))?;
    for (dst, src) in u.into_iter().zip(x.iter()) {
        *dst = *src;
    }
    Ok(out)
}

/// Truncated Neumann series `u_k = η Σ_{q=0}^{Q} (I − ηH)^q b_k` on `K` systems sharing `H`.
fn neumann_lockstep<O, T, const N: usize, const K: usize>(
    op: &O,
    b: [&[T; N]; K],
    u: [&mut [T; N]; K],
    eta: T,
    terms: u32,
    tol: [T; K],
) -> Result<[Solve<T>; K], Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    crate::error::ensure(eta.is_finite() && eta > T::ZERO, "Neumann step", "finite and > 0")?;
    let growth = T::ONE + T::EPSILON.sqrt();
    let sampled = op.samples_each_product();
    let mut p = [[T::ZERO; N]; K];
    let mut bn = [T::ZERO; K];
    for k in 0..K {
        p[k] = *b[k];
        bn[k] = linalg::norm(b[k]);
    }
    let mut sum = p;
    let mut active = [true; K];
    let mut out = [Solve {
        status: SolveStatus::Budget,
        steps: 0,
        residual: T::ZERO,
    }; K];
    for k in 0..K {
        out[k].residual = bn[k];
        if eta * bn[k] <= tol[k] {
            out[k].status = SolveStatus::Converged;
            active[k] = false;
        }
    }
    let mut hp = [[T::ZERO; N]; K];
    for _ in 0..terms {
        if !active.iter().any(|&a| a) {
            break;
        }
        products(op, &active, &p, &mut hp)?;
        for k in 0..K {
            if !active[k] {
                continue;
            }
            let mut next = p[k];
            linalg::axpy(-eta, &hp[k], &mut next);
            let n = linalg::norm(&next);
            if (n > growth * bn[k] && !sampled) || !n.is_finite() {
                out[k].status = SolveStatus::Diverged;
                active[k] = false;
                continue;
            }
            p[k] = next;
            for i in 0..N {
                sum[k][i] += next[i];
            }
            out[k].steps += 1;
            out[k].residual = n;
            if eta * n <= tol[k] {
                out[k].status = SolveStatus::Converged;
                active[k] = false;
            }
        }
    }
    for s in sum.iter_mut() {
        linalg::scale(eta, s);
    }
    sum.iter()
        .try_for_each(|v| linalg::ensure_finite(v, "Neumann series"))?;
    for (dst, src) in u.into_iter().zip(sum.iter()) {
        *dst = *src;
    }
    Ok(out)
}

/// Conjugate gradient on `H·u = b`, warm-started from the incoming `u`, for at most
/// `max_steps` steps or until `‖b − H u‖ ≤ tol`. A warm start costs one product for the
/// initial residual (none from `u = 0`). On error `u` is unchanged.
///
/// ```
/// use bilevel::linsolve::{conjugate_gradient, LowerHessian, SolveStatus};
/// use bilevel::problem::{Batch, Checked};
/// use bilevel::problems::Quadratic;
/// let q = Quadratic::<f64, 2, 5>::random(1, 50.0, 0.1);
/// let (x, y) = ([0.0; 2], [0.0; 5]);
/// let h = LowerHessian { oracles: Checked::new(&q, "doc"), x: &x, y: &y, batch: Batch::Full };
/// let b = [1.0, -2.0, 0.5, 0.0, 3.0];
/// let mut u = [0.0; 5];
/// let s = conjugate_gradient(&h, &b, &mut u, 5, 1e-9).unwrap();
/// assert_eq!(s.status, SolveStatus::Converged); // exact within n = 5 steps
/// ```
pub fn conjugate_gradient<O, T, const N: usize>(
    op: &O,
    b: &[T; N],
    u: &mut [T; N],
    max_steps: u32,
    tol: T,
) -> Result<Solve<T>, Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    let [s] = conjugate_gradient_lockstep(op, [b], [u], max_steps, [tol])?;
    Ok(s)
}

/// Conjugate gradient on two systems `H·u[k] = b[k]` sharing `H`, in lockstep: each step
/// takes one fused product for both search directions (one product while only one system
/// is still running). Tolerances per system; warm starts as in [`conjugate_gradient`].
pub fn conjugate_gradient2<O, T, const N: usize>(
    op: &O,
    b: [&[T; N]; 2],
    u: [&mut [T; N]; 2],
    max_steps: u32,
    tol: [T; 2],
) -> Result<[Solve<T>; 2], Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    conjugate_gradient_lockstep(op, b, u, max_steps, tol)
}

/// Gradient descent on `½uᵀHu − bᵀu`: `u ← u − β(H u − b)`, warm-started from the incoming
/// `u`, for at most `max_steps` steps or until `‖H u − b‖ ≤ tol` (checked before each step,
/// so a converged warm start takes no step). Converges for `0 < β < 2/L`; reports
/// [`SolveStatus::Diverged`] when a residual exceeds twice `max(‖r₀‖, ‖b‖)` (for one fixed
/// matrix; not for operators that [sample each product](SymmetricOperator::samples_each_product))
/// or is not finite. Each step
/// costs one product (none for the first step from `u = 0`). On error `u` is unchanged.
pub fn gradient_descent<O, T, const N: usize>(
    op: &O,
    b: &[T; N],
    u: &mut [T; N],
    step: T,
    max_steps: u32,
    tol: T,
) -> Result<Solve<T>, Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    let [s] = gradient_descent_lockstep(op, [b], [u], step, max_steps, [tol])?;
    Ok(s)
}

/// [`gradient_descent`] on two systems sharing `H`, in lockstep with one fused product per
/// step.
pub fn gradient_descent2<O, T, const N: usize>(
    op: &O,
    b: [&[T; N]; 2],
    u: [&mut [T; N]; 2],
    step: T,
    max_steps: u32,
    tol: [T; 2],
) -> Result<[Solve<T>; 2], Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    gradient_descent_lockstep(op, b, u, step, max_steps, tol)
}

/// The truncated Neumann series `u = η Σ_{q=0}^{Q} (I − ηH)^q b` with `Q = terms`, the
/// paper's form with the leading `η` (spec §3.5): `Q` products. Not warm-started: `u` is
/// overwritten. Stops early ([`SolveStatus::Converged`]) when `η‖(I − ηH)^q b‖ ≤ tol`.
/// The series converges for `0 < η < 2/L`; a term growing past `(1 + √ε)‖b‖` is reported
/// as [`SolveStatus::Diverged`] and not added. On error `u` is unchanged.
///
/// ```
/// use bilevel::linsolve::{neumann, LowerHessian, SolveStatus};
/// use bilevel::problem::{Batch, Checked};
/// use bilevel::problems::Quadratic;
/// let q = Quadratic::<f64, 2, 4>::random(2, 10.0, 0.1);
/// let (x, y) = ([0.0; 2], [0.0; 4]);
/// let h = LowerHessian { oracles: Checked::new(&q, "doc"), x: &x, y: &y, batch: Batch::Full };
/// let mut u = [0.0; 4];
/// let big = 2.5 / q.lower_lipschitz();
/// let s = neumann(&h, &[1.0; 4], &mut u, big, 100, 0.0).unwrap();
/// assert_eq!(s.status, SolveStatus::Diverged);
/// ```
pub fn neumann<O, T, const N: usize>(
    op: &O,
    b: &[T; N],
    u: &mut [T; N],
    eta: T,
    terms: u32,
    tol: T,
) -> Result<Solve<T>, Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    let [s] = neumann_lockstep(op, [b], [u], eta, terms, [tol])?;
    Ok(s)
}

/// [`neumann`] on two right-hand sides sharing `H`, with one fused product per term.
pub fn neumann2<O, T, const N: usize>(
    op: &O,
    b: [&[T; N]; 2],
    u: [&mut [T; N]; 2],
    eta: T,
    terms: u32,
    tol: [T; 2],
) -> Result<[Solve<T>; 2], Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    neumann_lockstep(op, b, u, eta, terms, tol)
}

/// Quasi-Newton iterations on `½uᵀHu − bᵀu`, warm-started from the incoming `u`: the
/// direction is `p = M·(b − H u)` with the inverse-Hessian approximation `memory`
/// (descent-checked by [`InverseHessian::direction`]), the step is the exact line search
/// `α = pᵀ(b − Hu) / pᵀHp`, and the pair `(p, H·p)` then updates `memory`. Each step costs
/// one product and needs no other oracle.
///
/// With exact line searches on a quadratic, BFGS from `M = h0·I` produces the conjugate
/// gradient iterates preconditioned by `h0·I`, so the solve terminates within `N`
/// independent steps and the memory then equals `H⁻¹`; SR1 recovers `H⁻¹` from any `N`
/// independent pairs; L-BFGS of `m < N` pairs converges without finite termination.
/// Stops when `‖b − H u‖ ≤ tol` (checked before each step, by recurrence), after
/// `max_steps`, or with [`SolveStatus::Breakdown`] when `pᵀHp ≤ 0` or is not finite. The
/// pairs are offered with unit `‖p‖` (the BFGS and SR1 updates do not depend on the
/// pair's scale), so no pair falls under the tiny-step floor of the memory. A warm start
/// costs one product for its residual (none from `u = 0`). On error `u` and `memory` are
/// unchanged.
///
/// ```
/// use bilevel::linsolve::{quasi_newton, LowerHessian, SolveStatus};
/// use bilevel::problem::{Batch, Checked};
/// use bilevel::problems::Quadratic;
/// use bilevel::qn::{DenseBfgs, InverseHessian, Safeguards};
/// let q = Quadratic::<f64, 2, 5>::random(1, 50.0, 0.1);
/// let (x, y) = ([0.0; 2], [0.0; 5]);
/// let h = LowerHessian { oracles: Checked::new(&q, "doc"), x: &x, y: &y, batch: Batch::Full };
/// let b = [1.0, -2.0, 0.5, 0.0, 3.0];
/// let mut memory = DenseBfgs::<f64, 5>::new(Safeguards::default());
/// let mut u = [0.0; 5];
/// let s = quasi_newton(&h, &mut memory, &b, &mut u, 10, 1e-9).unwrap();
/// assert_eq!(s.status, SolveStatus::Converged);
/// assert!(s.steps <= 6); // finite termination (one more step absorbs roundoff)
/// ```
pub fn quasi_newton<O, M, T, const N: usize>(
    op: &O,
    memory: &mut M,
    b: &[T; N],
    u: &mut [T; N],
    max_steps: u32,
    tol: T,
) -> Result<Solve<T>, Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    M: InverseHessian<T, N>,
    T: Real,
{
    let mut mem = memory.clone();
    let mut uk = *u;
    let solve = quasi_newton_in_place(op, &mut mem, b, &mut uk, max_steps, tol)?;
    *u = uk;
    *memory = mem;
    Ok(solve)
}

/// [`quasi_newton`] on `u` and `memory` in place, without copying them (the same steps and
/// bits, and no copy of the memory on the stack). On error, `u` and `memory` may hold the
/// partial solve: for callers that work on copies they discard on error (qNBO's
/// Subroutine B).
pub fn quasi_newton_in_place<O, M, T, const N: usize>(
    op: &O,
    memory: &mut M,
    b: &[T; N],
    u: &mut [T; N],
    max_steps: u32,
    tol: T,
) -> Result<Solve<T>, Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    M: InverseHessian<T, N>,
    T: Real,
{
    let mut residual = *b;
    if u.iter().any(|&v| v != T::ZERO) {
        let mut hu = [T::ZERO; N];
        op.apply(u, &mut hu)?;
        for (r, h) in residual.iter_mut().zip(hu.iter()) {
            *r -= *h;
        }
    }
    let mut solve = Solve {
        status: SolveStatus::Budget,
        steps: 0,
        residual: linalg::norm(&residual),
    };
    let (mut p, mut hp) = ([T::ZERO; N], [T::ZERO; N]);
    loop {
        if solve.residual <= tol {
            solve.status = SolveStatus::Converged;
            break;
        }
        if solve.steps >= max_steps {
            break;
        }
        memory.direction(&residual, &mut p);
        let p_norm = linalg::norm(&p);
        op.apply(&p, &mut hp)?;
        let curvature = linalg::dot(&p, &hp);
        let alpha = linalg::dot(&p, &residual) / curvature;
        if !(curvature > T::ZERO) || !alpha.is_finite() || !(p_norm > T::ZERO) {
            solve.status = SolveStatus::Breakdown;
            break;
        }
        linalg::axpy(alpha, &p, u);
        linalg::axpy(-alpha, &hp, &mut residual);
        linalg::scale(T::ONE / p_norm, &mut p);
        linalg::scale(T::ONE / p_norm, &mut hp);
        memory.update(&p, &hp, T::ZERO);
        solve.residual = linalg::norm(&residual);
        solve.steps += 1;
    }
    linalg::ensure_finite(u, "quasi-Newton linear solve")?;
    Ok(solve)
}

/// The largest eigenvalue of a positive semidefinite `H` by `iterations` steps of power
/// iteration from `v` (warm-started across calls: the top eigenvector moves little between
/// nearby points), which is left holding the last unit iterate. A zero or non-finite `v`
/// starts from a fixed vector of alternating signs and decreasing size, far from
/// orthogonal to any one eigenvector. The estimate `‖H·v‖` of a unit `v` never exceeds
/// the largest eigenvalue and approaches it; a step `1/estimate` is then below `2/λ_max`
/// as soon as the estimate is above half of it. `0` when `H·v` vanishes; errors only
/// from the products.
pub fn largest_eigenvalue<O, T, const N: usize>(op: &O, v: &mut [T; N], iterations: u32) -> Result<T, Error>
where
    O: SymmetricOperator<T, N> + ?Sized,
    T: Real,
{
    let mut length = linalg::norm(v);
    if !(length > T::ZERO) || !length.is_finite() {
        for (j, vj) in v.iter_mut().enumerate() {
            let s = T::ONE / T::from_f64((j + 2) as f64);
            *vj = if j % 2 == 0 { s } else { -s };
        }
        length = linalg::norm(v);
    }
    linalg::scale(T::ONE / length, v);
    let mut largest = T::ZERO;
    let mut hv = [T::ZERO; N];
    for _ in 0..iterations {
        op.apply(v, &mut hv)?;
        let norm = linalg::norm(&hv);
        if !(norm > T::ZERO) || !norm.is_finite() {
            return Ok(T::ZERO);
        }
        largest = norm;
        *v = hv;
        linalg::scale(T::ONE / norm, v);
    }
    Ok(largest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::problems::Quadratic;
    use core::cell::Cell;

    type Q = Quadratic<f64, 3, 6>;

    /// A symmetric matrix as an operator, counting single and fused calls.
    struct Matrix<const N: usize> {
        a: [[f64; N]; N],
        single: Cell<u32>,
        fused: Cell<u32>,
    }

    impl<const N: usize> Matrix<N> {
        fn new(a: [[f64; N]; N]) -> Self {
            Matrix {
                a,
                single: Cell::new(0),
                fused: Cell::new(0),
            }
        }
    }

    impl<const N: usize> SymmetricOperator<f64, N> for Matrix<N> {
        fn apply(&self, v: &[f64; N], out: &mut [f64; N]) -> Result<(), Error> {
            self.single.set(self.single.get() + 1);
            linalg::matvec(&self.a, v, out);
            Ok(())
        }
        fn apply2(&self, v1: &[f64; N], v2: &[f64; N], o1: &mut [f64; N], o2: &mut [f64; N]) -> Result<(), Error> {
            self.fused.set(self.fused.get() + 1);
            linalg::matvec(&self.a, v1, o1);
            linalg::matvec(&self.a, v2, o2);
            Ok(())
        }
    }

    fn spd(seed: u64, kappa: f64) -> Matrix<6> {
        Matrix::new(Q::random(seed, kappa, 0.1).a)
    }

    fn exact(a: &[[f64; 6]; 6], b: &[f64; 6]) -> [f64; 6] {
        let mut x = *b;
        assert!(linalg::spd_solve(a, &mut x));
        x
    }

    fn rhs(seed: u64) -> [f64; 6] {
        let mut r = crate::rng::Rng128::new(seed);
        let mut b = [0.0; 6];
        r.fill_gaussian(&mut b);
        b
    }

    #[test]
    fn cg_is_exact_within_n_steps() {
        for seed in 0..4 {
            let h = spd(seed, 100.0);
            let b = rhs(10 + seed);
            let mut u = [0.0; 6];
            let s = conjugate_gradient(&h, &b, &mut u, 6, 0.0).unwrap();
            let e = exact(&h.a, &b);
            assert!(linalg::dist(&u, &e) < 1e-10 * linalg::norm(&e), "{s:?}");
            assert!(s.steps <= 6);
            // n products for n steps from u = 0 (no product for the zero start).
            assert_eq!(h.single.get(), s.steps);
        }
    }

    #[test]
    fn quasi_newton_terminates_and_its_memory_inverts_the_operator() {
        use crate::qn::{DenseBfgs, InverseHessian, LSr1, Safeguards};
        for seed in 0..4 {
            let h = spd(seed, 100.0);
            let b = rhs(20 + seed);
            let e = exact(&h.a, &b);
            // BFGS with exact line searches: the CG iterates, exact within n steps, and the
            // memory then equals H⁻¹ (checked on another right-hand side).
            let mut bfgs = DenseBfgs::<f64, 6>::new(Safeguards::default());
            let mut u = [0.0; 6];
            let s = quasi_newton(&h, &mut bfgs, &b, &mut u, 6, 0.0).unwrap();
            assert!(linalg::dist(&u, &e) < 1e-10 * linalg::norm(&e), "{s:?}");
            assert_eq!((s.steps, h.single.get()), (6, 6));
            let other = rhs(40 + seed);
            let mut hinv = [0.0; 6];
            bfgs.apply(&other, &mut hinv);
            let e2 = exact(&h.a, &other);
            assert!(linalg::dist(&hinv, &e2) < 1e-8 * linalg::norm(&e2));
            // SR1 from a warm start: exact too.
            let mut sr1 = LSr1::<f64, 6, 12>::new(Safeguards::default());
            let mut u = rhs(60 + seed);
            let s = quasi_newton(&h, &mut sr1, &b, &mut u, 12, 1e-12 * linalg::norm(&b)).unwrap();
            assert_eq!(s.status, SolveStatus::Converged, "{s:?}");
            assert!(linalg::dist(&u, &e) < 1e-10 * linalg::norm(&e), "{s:?}");
        }
    }

    #[test]
    fn growth_tests_skip_operators_that_sample_each_product() {
        /// The same matrix, declared as sampled.
        struct Sampled(Matrix<6>);
        impl SymmetricOperator<f64, 6> for Sampled {
            fn apply(&self, v: &[f64; 6], out: &mut [f64; 6]) -> Result<(), Error> {
                self.0.apply(v, out)
            }
            fn samples_each_product(&self) -> bool {
                true
            }
        }
        let q = Q::random(3, 20.0, 0.1);
        let h = Matrix::new(q.a);
        let big = 2.5 / q.lower_lipschitz();
        let b = rhs(7);
        let mut u = [0.0; 6];
        assert_eq!(
            gradient_descent(&h, &b, &mut u, big, 40, 0.0).unwrap().status,
            SolveStatus::Diverged
        );
        let sampled = Sampled(Matrix::new(q.a));
        let mut u = [0.0; 6];
        let s = gradient_descent(&sampled, &b, &mut u, big, 40, 0.0).unwrap();
        assert_eq!((s.status, s.steps), (SolveStatus::Budget, 40));
        assert!(s.residual > 10.0 * linalg::norm(&b), "{s:?}");
        let mut u = [0.0; 6];
        assert_eq!(
            neumann(&h, &b, &mut u, big, 40, 0.0).unwrap().status,
            SolveStatus::Diverged
        );
        let mut u = [0.0; 6];
        assert_eq!(
            neumann(&sampled, &b, &mut u, big, 40, 0.0).unwrap().status,
            SolveStatus::Budget
        );
    }

    #[test]
    fn quasi_newton_keeps_u_and_memory_on_error() {
        use crate::qn::{DenseBfgs, InverseHessian, Safeguards};
        /// Fails at the third product.
        struct Failing(Matrix<6>);
        impl SymmetricOperator<f64, 6> for Failing {
            fn apply(&self, v: &[f64; 6], out: &mut [f64; 6]) -> Result<(), Error> {
                if self.0.single.get() == 2 {
                    return Err(Error::NonFinite {
                        oracle: None,
                        stage: "test",
                    });
                }
                self.0.apply(v, out)
            }
        }
        let h = Failing(spd(2, 30.0));
        let mut memory = DenseBfgs::<f64, 6>::new(Safeguards::default());
        let mut u = [0.0; 6];
        assert!(quasi_newton(&h, &mut memory, &rhs(5), &mut u, 6, 0.0).is_err());
        assert_eq!(u, [0.0; 6]);
        assert!(memory.is_empty());
    }

    #[test]
    fn cg_warm_start_at_the_solution_takes_no_step() {
        let h = spd(1, 50.0);
        let b = rhs(3);
        let mut u = exact(&h.a, &b);
        let s = conjugate_gradient(&h, &b, &mut u, 10, 1e-10).unwrap();
        assert_eq!(s.status, SolveStatus::Converged);
        assert_eq!(s.steps, 0);
        assert_eq!(h.single.get(), 1); // the initial residual only
    }

    #[test]
    fn two_systems_match_two_single_solves_with_fused_products() {
        let h = spd(2, 30.0);
        let (b1, b2) = (rhs(4), rhs(5));
        let warm = rhs(6);
        // CG, one system cold and one warm.
        let (mut s1, mut s2) = ([0.0; 6], warm);
        conjugate_gradient(&h, &b1, &mut s1, 4, 0.0).unwrap();
        conjugate_gradient(&h, &b2, &mut s2, 4, 0.0).unwrap();
        let fused = spd(2, 30.0);
        let (mut t1, mut t2) = ([0.0; 6], warm);
        let st = conjugate_gradient2(&fused, [&b1, &b2], [&mut t1, &mut t2], 4, [0.0; 2]).unwrap();
        assert_eq!((s1, s2), (t1, t2));
        assert_eq!(st[0].steps, 4);
        // One single product for the warm start's residual, then one fused call per step.
        assert_eq!((fused.single.get(), fused.fused.get()), (1, 4));

        // Gradient descent.
        let beta = 1.0 / 30.0;
        let (mut s1, mut s2) = ([0.0; 6], warm);
        gradient_descent(&h, &b1, &mut s1, beta, 5, 0.0).unwrap();
        gradient_descent(&h, &b2, &mut s2, beta, 5, 0.0).unwrap();
        let fused = spd(2, 30.0);
        let (mut t1, mut t2) = ([0.0; 6], warm);
        gradient_descent2(&fused, [&b1, &b2], [&mut t1, &mut t2], beta, 5, [0.0; 2]).unwrap();
        assert_eq!((s1, s2), (t1, t2));
        // First step: only the warm system needs a product.
        assert_eq!((fused.single.get(), fused.fused.get()), (1, 4));

        // Neumann.
        let (mut s1, mut s2) = ([0.0; 6], [0.0; 6]);
        neumann(&h, &b1, &mut s1, beta, 7, 0.0).unwrap();
        neumann(&h, &b2, &mut s2, beta, 7, 0.0).unwrap();
        let fused = spd(2, 30.0);
        let (mut t1, mut t2) = ([0.0; 6], [0.0; 6]);
        neumann2(&fused, [&b1, &b2], [&mut t1, &mut t2], beta, 7, [0.0; 2]).unwrap();
        assert_eq!((s1, s2), (t1, t2));
        assert_eq!((fused.single.get(), fused.fused.get()), (0, 7));
    }

    #[test]
    fn gradient_descent_converges_below_two_over_l_and_diverges_above() {
        let h = spd(3, 20.0);
        let b = rhs(7);
        let e = exact(&h.a, &b);
        let mut u = [0.0; 6];
        let s = gradient_descent(&h, &b, &mut u, 1.0 / 20.0, 2000, 1e-12).unwrap();
        assert_eq!(s.status, SolveStatus::Converged);
        assert!(linalg::dist(&u, &e) < 1e-11, "{s:?}");

        let mut u = [0.0; 6];
        let s = gradient_descent(&h, &b, &mut u, 2.2 / 20.0, 200, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Diverged, "{s:?}");
        assert!(linalg::all_finite(&u));
    }

    #[test]
    fn neumann_matches_the_solve_below_two_over_l_and_diverges_above() {
        let q = Q::random(0, 18.0, 0.1);
        let l = q.lower_lipschitz();
        let h = LowerHessian {
            oracles: Checked::new(&q, "test"),
            x: &[0.0; 3],
            y: &[0.0; 6],
            batch: Batch::Full,
        };
        let b = rhs(8);
        let e = exact(&q.a, &b);
        // Spec §8: 300 terms at η = 1/L match the solve to about 3e-8 (κ ≈ 18); here 2e-8.
        let mut u = [0.0; 6];
        let s = neumann(&h, &b, &mut u, 1.0 / l, 300, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Budget);
        let err = linalg::dist(&u, &e) / linalg::norm(&e);
        assert!(err < 1e-7, "{err:e}");
        // Fewer terms, larger error (0.1 with 30 terms).
        let mut short = [0.0; 6];
        neumann(&h, &b, &mut short, 1.0 / l, 30, 0.0).unwrap();
        assert!(linalg::dist(&short, &e) / linalg::norm(&e) > 0.01);
        // η close to 2/L still converges.
        let mut u2 = [0.0; 6];
        neumann(&h, &b, &mut u2, 1.9 / l, 600, 0.0).unwrap();
        assert!(linalg::dist(&u2, &e) / linalg::norm(&e) < 1e-10);
        // The leading η: zero extra terms give η·b.
        let mut one = [0.0; 6];
        neumann(&h, &b, &mut one, 0.01, 0, 0.0).unwrap();
        for i in 0..6 {
            assert_eq!(one[i], 0.01 * b[i]);
        }
        // Above 2/L the terms grow: reported, not summed into a wrong answer.
        let mut d = [0.0; 6];
        let s = neumann(&h, &b, &mut d, 2.2 / l, 300, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Diverged, "{s:?}");
        assert!(s.steps < 300);
    }

    /// A problem whose lower Hessian is `diag(1, −1)`: indefinite.
    struct Saddle;
    impl Problem<f64, 1, 2> for Saddle {
        fn lower_grad(&self, _: &[f64; 1], y: &[f64; 2], _: Batch, out: &mut [f64; 2]) -> Result<(), Error> {
            *out = [y[0], -y[1]];
            Ok(())
        }
        fn upper_grad(
            &self,
            _: &[f64; 1],
            y: &[f64; 2],
            _: Batch,
            gx: &mut [f64; 1],
            gy: &mut [f64; 2],
        ) -> Result<(), Error> {
            *gx = [0.0];
            *gy = *y;
            Ok(())
        }
        fn lower_hvp(
            &self,
            _: &[f64; 1],
            _: &[f64; 2],
            v: &[f64; 2],
            _: Batch,
            out: &mut [f64; 2],
        ) -> Result<(), Error> {
            *out = [v[0], -v[1]];
            Ok(())
        }
    }

    #[test]
    fn breakdown_on_an_indefinite_hessian_is_reported() {
        let p = Saddle;
        let h = LowerHessian {
            oracles: Checked::new(&p, "test"),
            x: &[0.0],
            y: &[0.0; 2],
            batch: Batch::Full,
        };
        // b along the negative direction: pᵀHp = −1 at the first step.
        let mut u = [0.0; 2];
        let s = conjugate_gradient(&h, &[0.0, 1.0], &mut u, 5, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Breakdown);
        assert_eq!((s.steps, u), (0, [0.0; 2]));
        // b = (1, 1): pᵀHp = 0.
        let s = conjugate_gradient(&h, &[1.0, 1.0], &mut u, 5, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Breakdown);
        // Lockstep: the positive system converges, the other breaks down.
        let (mut a, mut c) = ([0.0; 2], [0.0; 2]);
        let st = conjugate_gradient2(&h, [&[2.0, 0.0], &[0.0, 1.0]], [&mut a, &mut c], 5, [1e-12; 2]).unwrap();
        assert_eq!(
            (st[0].status, st[1].status),
            (SolveStatus::Converged, SolveStatus::Breakdown)
        );
        assert_eq!(a, [2.0, 0.0]);
        // Gradient descent and Neumann grow along the negative direction.
        let mut g = [0.0; 2];
        let s = gradient_descent(&h, &[0.0, 1.0], &mut g, 0.5, 100, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Diverged);
        let s = neumann(&h, &[0.0, 1.0], &mut g, 0.5, 100, 0.0).unwrap();
        assert_eq!(s.status, SolveStatus::Diverged);
    }

    /// An HVP that fails on its second call.
    struct FailsLater(Cell<u32>);
    impl SymmetricOperator<f64, 2> for FailsLater {
        fn apply(&self, v: &[f64; 2], out: &mut [f64; 2]) -> Result<(), Error> {
            self.0.set(self.0.get() + 1);
            if self.0.get() > 1 {
                return Err(Error::NonFinite {
                    oracle: Some(crate::error::Oracle::LowerHvp),
                    stage: "test",
                });
            }
            *out = [2.0 * v[0], v[1]];
            Ok(())
        }
    }

    #[test]
    fn an_oracle_error_leaves_the_iterate_unchanged() {
        let mut u = [0.5, 0.5];
        assert!(conjugate_gradient(&FailsLater(Cell::new(0)), &[1.0, 1.0], &mut u, 5, 0.0).is_err());
        assert_eq!(u, [0.5, 0.5]);
        assert!(gradient_descent(&FailsLater(Cell::new(0)), &[1.0, 1.0], &mut u, 0.1, 5, 0.0).is_err());
        assert_eq!(u, [0.5, 0.5]);
        assert!(neumann(&FailsLater(Cell::new(0)), &[1.0, 1.0], &mut u, 0.1, 5, 0.0).is_err());
        assert_eq!(u, [0.5, 0.5]);
    }

    #[test]
    fn invalid_steps_are_rejected() {
        let h = spd(0, 10.0);
        let mut u = [0.0; 6];
        assert!(matches!(
            gradient_descent(&h, &[1.0; 6], &mut u, 0.0, 5, 0.0),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            neumann(&h, &[1.0; 6], &mut u, f64::NAN, 5, 0.0),
            Err(Error::InvalidConfig { .. })
        ));
    }

    /// `W·diag(d)·W` with the reflection `W = I − 2wwᵀ/wᵀw`: eigenvalues `d`, eigenvectors
    /// the columns of `W` (none of them a unit vector).
    fn with_eigenvalues(d: [f64; 6]) -> Matrix<6> {
        let w = [1.0, -2.0, 0.5, 3.0, -1.0, 2.0];
        let ww = linalg::dot(&w, &w);
        let mut r = [[0.0; 6]; 6];
        for i in 0..6 {
            for j in 0..6 {
                r[i][j] = f64::from(u8::from(i == j)) - 2.0 * w[i] * w[j] / ww;
            }
        }
        let mut a = [[0.0; 6]; 6];
        for i in 0..6 {
            for j in 0..6 {
                a[i][j] = (0..6).map(|k| r[i][k] * d[k] * r[j][k]).sum();
            }
        }
        Matrix::new(a)
    }

    #[test]
    fn power_iteration_approaches_the_largest_eigenvalue_from_below_and_warm_starts() {
        let h = with_eigenvalues([0.5, 4.0, 1.0, 5.0, 0.01, 2.0]);
        let mut v = [0.0; 6];
        let mut last = 0.0;
        for round in 0..8 {
            let e = largest_eigenvalue(&h, &mut v, 8).unwrap();
            assert!(
                e <= 5.0 * (1.0 + 1e-12) && e >= last * (1.0 - 1e-12),
                "round {round}: {e} after {last}"
            );
            last = e;
        }
        assert!((last - 5.0).abs() < 1e-6, "{last}");
        assert_eq!(h.single.get(), 64);
        // From the converged vector, one product gives the eigenvalue.
        let e = largest_eigenvalue(&h, &mut v, 1).unwrap();
        assert!((e - 5.0).abs() < 1e-6, "{e}");
        // The zero matrix: nothing to estimate.
        let zero = Matrix::new([[0.0; 6]; 6]);
        assert_eq!(largest_eigenvalue(&zero, &mut [0.0; 6], 4).unwrap(), 0.0);
        // No iterations, no product.
        assert_eq!(largest_eigenvalue(&h, &mut v, 0).unwrap(), 0.0);
        assert_eq!(h.single.get(), 65);
    }
}
