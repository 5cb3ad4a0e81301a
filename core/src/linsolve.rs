//! Iterative solvers for `H·u = b` where `H = ∇²_yy g(x, y)` is only available through
//! Hessian-vector products: conjugate gradient (one or two right-hand sides sharing `H`).
//!
//! Every solve reports how it ended ([`SolveStatus`]); a breakdown is an explicit status,
//! never a silent zero.

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Checked, Problem};
use crate::scalar::Real;

/// How an iterative linear solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SolveStatus {
    /// The residual norm fell below the tolerance.
    Converged,
    /// The step budget ran out first.
    Budget,
    /// The operator is not positive definite along a search direction (`pᵀHp ≤ 0`).
    Breakdown,
}

/// The outcome of one linear solve.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Solve<T> {
    /// How it ended.
    pub status: SolveStatus,
    /// Steps taken (Hessian-vector products after the initial residual).
    pub steps: u32,
    /// Final residual norm `‖b − H u‖`.
    pub residual: T,
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
    /// `out ← H·v`.
    pub fn apply(&self, v: &[T; DY], out: &mut [T; DY]) -> Result<(), Error> {
        self.oracles.lower_hvp(self.x, self.y, v, self.batch, out)
    }
}

/// Conjugate gradient on `H·u = b`, warm-started from the incoming `u`, for at most
/// `max_steps` steps or until `‖b − H u‖ ≤ tol`. `u` is updated only with finite values;
/// on an oracle error it keeps its last finite iterate.
pub fn conjugate_gradient<P, T, const DX: usize, const DY: usize>(
    h: &LowerHessian<'_, '_, P, T, DX, DY>,
    b: &[T; DY],
    u: &mut [T; DY],
    max_steps: u32,
    tol: T,
) -> Result<Solve<T>, Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    let mut r = [T::ZERO; DY];
    h.apply(u, &mut r)?;
    for i in 0..DY {
        r[i] = b[i] - r[i];
    }
    let mut p = r;
    let mut rr = linalg::dot(&r, &r);
    let mut hp = [T::ZERO; DY];
    let mut steps = 0;
    while steps < max_steps {
        if rr.sqrt() <= tol {
            return Ok(Solve {
                status: SolveStatus::Converged,
                steps,
                residual: rr.sqrt(),
            });
        }
        h.apply(&p, &mut hp)?;
        let php = linalg::dot(&p, &hp);
        if !(php > T::ZERO) {
            return Ok(Solve {
                status: SolveStatus::Breakdown,
                steps,
                residual: rr.sqrt(),
            });
        }
        let alpha = rr / php;
        linalg::axpy(alpha, &p, u);
        linalg::axpy(-alpha, &hp, &mut r);
        let rr_new = linalg::dot(&r, &r);
        let beta = rr_new / rr;
        for i in 0..DY {
            p[i] = r[i] + beta * p[i];
        }
        rr = rr_new;
        steps += 1;
    }
    let status = if rr.sqrt() <= tol {
        SolveStatus::Converged
    } else {
        SolveStatus::Budget
    };
    Ok(Solve {
        status,
        steps,
        residual: rr.sqrt(),
    })
}
