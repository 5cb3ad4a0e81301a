//! Lower-level solvers: steps on `y ↦ g(x, y)` at fixed `x`: plain gradient descent
//! ([`gradient_descent`]) and quasi-Newton steps with any [`InverseHessian`] memory
//! ([`quasi_newton`], fixed step or Armijo backtracking).

use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Batch, Checked, Problem};
use crate::qn::InverseHessian;
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
    linalg::ensure_finite(&next, oracles.stage())?;
    *y = next;
    Ok(g)
}

/// `steps` full-batch gradient steps on `y` alone: the held step ([`crate::run::Solver::advance`])
/// of a solver whose lower level takes gradient steps and whose adjoint is rebuilt by the next
/// estimate. `y` is unchanged on error.
pub fn advance_by_gradient_steps<P, T, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &mut [T; DY],
    beta: T,
    steps: u32,
) -> Result<crate::run::Diagnostics, Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    gradient_descent(oracles, x, y, beta, steps, Batch::Full)?;
    Ok(crate::run::Diagnostics {
        inner_steps: steps,
        ..crate::run::Diagnostics::default()
    })
}

/// The step length of a lower-level quasi-Newton step `y ← y − t·H∇_y g`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub enum StepRule<T> {
    /// A fixed step `t = γ` (qNBO's rule; no function values needed).
    Fixed(T),
    /// Armijo backtracking on `g` values: from `t = initial`, multiply by `shrink` until
    /// `g(y − t·d) ≤ g(y) − c1·t·dᵀ∇g(y)`, at most `max_trials` values. Needs
    /// [`Problem::lower_value`].
    Armijo {
        /// First trial step (1 for quasi-Newton directions).
        initial: T,
        /// Backtracking factor in `(0, 1)`.
        shrink: T,
        /// Sufficient-decrease constant `c1` in `(0, 1)` (`1e-4` is standard).
        c1: T,
        /// Function values at most per step (≥ 1).
        max_trials: u32,
    },
}

impl<T: Real> StepRule<T> {
    /// Armijo backtracking with `initial = 1`, `shrink = 0.5`, `c1 = 1e-4`, 30 trials.
    pub fn armijo() -> Self {
        StepRule::Armijo {
            initial: T::ONE,
            shrink: T::from_f64(0.5),
            c1: T::from_f64(1e-4),
            max_trials: 30,
        }
    }

    /// Checks the constants.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = |v: T| v.is_finite() && v > T::ZERO;
        match *self {
            StepRule::Fixed(t) => ensure(positive(t), "quasi-Newton step γ", "finite and > 0"),
            StepRule::Armijo {
                initial,
                shrink,
                c1,
                max_trials,
            } => {
                ensure(positive(initial), "Armijo initial step", "finite and > 0")?;
                ensure(positive(shrink) && shrink < T::ONE, "Armijo shrink", "in (0, 1)")?;
                ensure(positive(c1) && c1 < T::ONE, "Armijo c1", "in (0, 1)")?;
                ensure(max_trials >= 1, "Armijo max_trials", "≥ 1")
            }
        }
    }
}

/// How a run of [`quasi_newton`] ended.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuasiNewtonRun<T> {
    /// Steps taken.
    pub steps: u32,
    /// `‖∇_y g‖` at the returned iterate.
    pub gradient_norm: T,
    /// `‖s‖` of the last step taken (0 if none).
    pub last_step_norm: T,
    /// The loop stopped because `‖∇_y g‖ ≤ tol`.
    pub converged: bool,
    /// The loop stopped because Armijo backtracking found no decrease or, where the
    /// predicted decrease `t·dᵀ∇g` is below the resolution `4ε·|g|` of the values (so the
    /// initial step is judged by `‖∇g‖` instead), the gradient norm did not decrease.
    pub line_search_failed: bool,
}

/// Up to `steps` quasi-Newton steps `y ← y − t·H∇_y g(x, y)` on `g(x, ·)`, recording each
/// secant pair in `memory` (its safeguards decide; directions are descent-checked by
/// [`InverseHessian::direction`]). `grad` must hold `∇_y g(x, y)` on entry and holds the
/// gradient at the returned `y` on exit, so consecutive calls share gradients. Stops early
/// when `‖∇_y g‖ ≤ tol` or a line search fails. Near the solution, where values no longer
/// resolve the decrease (below their resolution, or no trial shows it), the Armijo steps
/// backtrack on `‖∇_y g‖` instead. `y`, `grad` and `memory` are updated only
/// when the whole call succeeded.
#[allow(clippy::too_many_arguments)]
pub fn quasi_newton<P, T, H, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &mut [T; DY],
    grad: &mut [T; DY],
    memory: &mut H,
    rule: &StepRule<T>,
    steps: u32,
    tol: T,
    batch: Batch,
) -> Result<QuasiNewtonRun<T>, Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
    H: InverseHessian<T, DY>,
{
    let mut mem = memory.clone();
    let (mut yk, mut gk) = (*y, *grad);
    let report = quasi_newton_in_place(oracles, x, &mut yk, &mut gk, &mut mem, rule, steps, tol, batch)?;
    *y = yk;
    *grad = gk;
    *memory = mem;
    Ok(report)
}

/// [`quasi_newton`] on `y`, `grad` and `memory` in place, without copying them: the same
/// steps and bits, and no copy of the memory on the stack (for L-BFGS on 4 pairs of 31
/// floats, about 1.1 KB less). On error, `y`, `grad` and `memory` may hold the partial run:
/// for callers that work on copies they discard on error (as qNBO's subroutines and SHINE
/// do with their memories).
#[allow(clippy::too_many_arguments)]
pub fn quasi_newton_in_place<P, T, H, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &mut [T; DY],
    grad: &mut [T; DY],
    memory: &mut H,
    rule: &StepRule<T>,
    steps: u32,
    tol: T,
    batch: Batch,
) -> Result<QuasiNewtonRun<T>, Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
    H: InverseHessian<T, DY>,
{
    rule.validate()?;
    ensure(tol.is_finite() && tol >= T::ZERO, "lower tolerance", "finite and ≥ 0")?;
    memory.safeguards().validate()?;
    let (yk, gk, mem) = (y, grad, memory);
    let mut report = QuasiNewtonRun {
        steps: 0,
        gradient_norm: linalg::norm(gk),
        last_step_norm: T::ZERO,
        converged: false,
        line_search_failed: false,
    };
    let mut value: Option<T> = None;
    let mut d = [T::ZERO; DY];
    for _ in 0..steps {
        if report.gradient_norm <= tol {
            break;
        }
        mem.direction(gk, &mut d);
        let mut y_next = *yk;
        let mut g_next = [T::ZERO; DY];
        let mut judge_by_gradient = None;
        match *rule {
            StepRule::Fixed(t) => linalg::axpy(-t, &d, &mut y_next),
            StepRule::Armijo {
                initial,
                shrink,
                c1,
                max_trials,
            } => {
                let f0 = match value {
                    Some(v) => v,
                    None => oracles.lower_value(x, yk, batch)?,
                };
                let slope = linalg::dot(&d, gk);
                // Below the resolution of g's values no trial can show a decrease: take the
                // initial step and judge it by the gradient norm instead (below).
                let resolution = T::from_f64(4.0) * T::EPSILON * f0.abs();
                if !(initial * slope > resolution) {
                    judge_by_gradient = Some((initial, shrink, max_trials));
                } else {
                    // Each trial point is built in `y_next` (the accepted one stays there).
                    let mut t = initial;
                    let mut accepted = None;
                    for _ in 0..max_trials {
                        y_next = *yk;
                        linalg::axpy(-t, &d, &mut y_next);
                        let f = oracles.lower_value(x, &y_next, batch)?;
                        if f <= f0 - c1 * t * slope {
                            accepted = Some(f);
                            break;
                        }
                        t *= shrink;
                    }
                    match accepted {
                        // A step below the resolution of `y` is no progress (roundoff in g).
                        Some(f) if y_next != *yk => {
                            value = Some(f);
                        }
                        Some(_) => {
                            report.line_search_failed = true;
                            break;
                        }
                        // No trial showed the decrease: near the solution the roundoff of
                        // `g`'s values (a sum of terms much larger than its changes) hides
                        // it. The initial step is then judged by the gradient norm, as
                        // below the resolution.
                        None => judge_by_gradient = Some((initial, shrink, max_trials)),
                    }
                }
            }
        }
        match judge_by_gradient {
            // Backtracking on `‖∇_y g‖` instead of on values.
            Some((initial, shrink, max_trials)) => {
                value = None;
                let mut t = initial;
                let mut decreased = false;
                for _ in 0..max_trials {
                    y_next = *yk;
                    linalg::axpy(-t, &d, &mut y_next);
                    linalg::ensure_finite(&y_next, oracles.stage())?;
                    oracles.lower_grad(x, &y_next, batch, &mut g_next)?;
                    if linalg::norm(&g_next) < report.gradient_norm {
                        decreased = true;
                        break;
                    }
                    t *= shrink;
                }
                if !decreased || y_next == *yk {
                    report.line_search_failed = true;
                    break;
                }
            }
            None => {
                linalg::ensure_finite(&y_next, oracles.stage())?;
                oracles.lower_grad(x, &y_next, batch, &mut g_next)?;
            }
        }
        // The pair `s = y_next − yk`, `r = g_next − gk`, written over `yk` and `gk` (both
        // replaced right after): two fewer `DY` arrays on the stack.
        for i in 0..DY {
            yk[i] = y_next[i] - yk[i];
            gk[i] = g_next[i] - gk[i];
        }
        mem.update(yk, gk, linalg::norm(&y_next));
        report.last_step_norm = linalg::norm(yk);
        report.gradient_norm = linalg::norm(&g_next);
        report.steps += 1;
        *yk = y_next;
        *gk = g_next;
    }
    report.converged = report.gradient_norm <= tol;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::problem::Counted;
    use crate::problems::Quadratic;
    use crate::qn::{DenseBfgs, LBfgs, LSr1, Safeguards};

    fn solve<H: InverseHessian<f64, 6>>(rule: StepRule<f64>, steps: u32, tol: f64) -> (f64, QuasiNewtonRun<f64>, H) {
        let q = Quadratic::<f64, 2, 6>::random(3, 18.0, 0.1);
        let x = [0.4, -0.3];
        let ys = q.lower_solution(&x).unwrap();
        let o = Checked::new(&q, "test");
        let mut y = [0.0; 6];
        let mut g = [0.0; 6];
        o.lower_grad(&x, &y, Batch::Full, &mut g).unwrap();
        let mut h = H::new(Safeguards::default());
        let run = quasi_newton(o, &x, &mut y, &mut g, &mut h, &rule, steps, tol, Batch::Full).unwrap();
        (linalg::dist(&y, &ys) / linalg::norm(&ys), run, h)
    }

    #[test]
    fn armijo_bfgs_converges_on_the_quadratic() {
        // Values resolve g − g* only down to ‖∇g‖ ≈ 1e-8 in f64.
        let (err, run, h) = solve::<DenseBfgs<f64, 6>>(StepRule::armijo(), 60, 1e-7);
        assert!(err < 1e-7, "{err} {run:?}");
        assert!(run.converged && run.steps < 30, "{run:?}");
        assert!(h.counts().accepted > 5);
        let (err, run, _) = solve::<LBfgs<f64, 6, 4>>(StepRule::armijo(), 100, 1e-7);
        assert!(err < 1e-7 && run.converged, "{err} {run:?}");
    }

    #[test]
    fn fixed_unit_step_converges_with_scaled_bfgs_and_sr1() {
        let (err, run, _) = solve::<LBfgs<f64, 6, 6>>(StepRule::Fixed(1.0), 200, 1e-12);
        assert!(err < 1e-9, "{err} {run:?}");
        let (err, run, h) = solve::<LSr1<f64, 6, 6>>(StepRule::Fixed(1.0), 200, 1e-12);
        assert!(err < 1e-9, "{err} {run:?} {:?}", h.counts());
    }

    #[test]
    fn armijo_needs_lower_values_and_state_is_kept_on_error() {
        struct NoValue(Quadratic<f64, 2, 3>);
        impl Problem<f64, 2, 3> for NoValue {
            fn lower_grad(&self, x: &[f64; 2], y: &[f64; 3], b: Batch, out: &mut [f64; 3]) -> Result<(), Error> {
                self.0.lower_grad(x, y, b, out)
            }
            fn upper_grad(
                &self,
                x: &[f64; 2],
                y: &[f64; 3],
                b: Batch,
                gx: &mut [f64; 2],
                gy: &mut [f64; 3],
            ) -> Result<(), Error> {
                self.0.upper_grad(x, y, b, gx, gy)
            }
        }
        let p = Counted::new(NoValue(Quadratic::random(1, 5.0, 0.1)));
        let o = Checked::new(&p, "test");
        let x = [0.1, 0.2];
        let mut y = [1.0, 2.0, 3.0];
        let mut g = [0.0; 3];
        o.lower_grad(&x, &y, Batch::Full, &mut g).unwrap();
        let g0 = g;
        let mut h = DenseBfgs::<f64, 3>::new(Safeguards::default());
        let e = quasi_newton(o, &x, &mut y, &mut g, &mut h, &StepRule::armijo(), 5, 0.0, Batch::Full);
        assert!(matches!(e, Err(Error::Unsupported { .. })));
        assert_eq!((y, g), ([1.0, 2.0, 3.0], g0));
        assert!(h.is_empty());
        let bad = StepRule::Fixed(-1.0);
        assert!(quasi_newton(o, &x, &mut y, &mut g, &mut h, &bad, 5, 0.0, Batch::Full).is_err());
    }
}
