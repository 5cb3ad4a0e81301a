//! Lower-level solvers: steps on `y ↦ g(x, y)` at fixed `x`.

use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Batch, Checked, Problem};
use crate::scalar::Real;

/// `steps` gradient steps `y ← y − β ∇_y g(x, y)` on the given batch. `y` is updated only
/// after every step succeeded, so an error leaves it unchanged. Returns the last gradient
/// computed (at the iterate before the final step), or zeros when `steps == 0`.
pub fn gradient_descent<P, T, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &mut [T; DY],
    beta: T,
    steps: u32,
    batch: Batch,
) -> Result<[T; DY], Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    ensure(beta.is_finite() && beta > T::ZERO, "lower step", "finite and > 0")?;
    let mut next = *y;
    let mut g = [T::ZERO; DY];
    for _ in 0..steps {
        oracles.lower_grad(x, &next, batch, &mut g)?;
        linalg::axpy(-beta, &g, &mut next);
    }
    if !linalg::all_finite(&next) {
        return Err(Error::NonFinite {
            oracle: None,
            stage: oracles.stage,
        });
    }
    *y = next;
    Ok(g)
}
