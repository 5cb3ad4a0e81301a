//! The reference hypergradient: the ground truth every algorithm is tested against.
//!
//! The lower level is solved to tolerance by a damped Newton–CG method on Hessian-vector
//! products, the adjoint `u = [∇²_yy g]⁻¹ ∇_y f` by conjugate gradient, and
//! `∇F = ∇_x f − ∇²_xy g·u`. Deterministic (full batch), slow, exact to the tolerances.

use crate::error::{Error, Oracle};
use crate::linalg;
use crate::linsolve::{LowerHessian, SolveStatus, conjugate_gradient};
use crate::problem::{Batch, Checked, Problem, implicit_hypergradient};
use crate::scalar::Real;

/// Tolerances and budgets of [`reference_hypergradient`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct ReferenceConfig<T> {
    /// Stop the Newton iteration when `‖∇_y g‖ ≤ lower_tol`.
    pub lower_tol: T,
    /// Stop CG on the adjoint when `‖∇_y f − H u‖ ≤ adjoint_tol·(1 + ‖∇_y f‖)`.
    pub adjoint_tol: T,
    /// Newton steps at most.
    pub max_newton: u32,
    /// CG steps at most per solve.
    pub max_cg: u32,
}

impl<T: Real> Default for ReferenceConfig<T> {
    /// Tolerances at `eps^0.75` (about 2e-12 in `f64`, 6e-6 in `f32`).
    fn default() -> Self {
        let tol = T::EPSILON.powf(T::from_f64(0.75));
        ReferenceConfig {
            lower_tol: tol,
            adjoint_tol: tol,
            max_newton: 100,
            max_cg: 1000,
        }
    }
}

/// What [`reference_hypergradient`] computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reference<T, const DX: usize, const DY: usize> {
    /// The lower-level solution `y*(x)`.
    pub y: [T; DY],
    /// The adjoint `u* = [∇²_yy g]⁻¹ ∇_y f` at `y*`.
    pub u: [T; DY],
    /// `∇F(x)`.
    pub hypergradient: [T; DX],
    /// `‖∇_y g(x, y*)‖` reached.
    pub lower_grad_norm: T,
    /// Newton steps taken.
    pub newton_steps: u32,
}

/// Solves the lower level from `y0` with Newton–CG to `cfg.lower_tol` and returns `y*(x)`
/// and the number of Newton steps.
pub fn solve_lower<P, T, const DX: usize, const DY: usize>(
    problem: &P,
    x: &[T; DX],
    y0: &[T; DY],
    cfg: &ReferenceConfig<T>,
) -> Result<([T; DY], T, u32), Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    let o = Checked::new(problem, "reference lower-level solve");
    let mut y = *y0;
    let mut g = [T::ZERO; DY];
    o.lower_grad(x, &y, Batch::Full, &mut g)?;
    let mut gnorm = linalg::norm(&g);
    let mut value = match o.lower_value(x, &y, Batch::Full) {
        Ok(v) => Some(v),
        Err(Error::Unsupported {
            oracle: Oracle::LowerValue,
        }) => None,
        Err(e) => return Err(e),
    };
    let half = T::from_f64(0.5);
    let mut stalled = 0u32;
    for k in 0..cfg.max_newton {
        if gnorm <= cfg.lower_tol {
            return Ok((y, gnorm, k));
        }
        // Inexact Newton direction: H d = g, forcing term min(0.5, √‖g‖)·‖g‖.
        let h = LowerHessian {
            oracles: o,
            x,
            y: &y,
            batch: Batch::Full,
        };
        let mut d = [T::ZERO; DY];
        let forcing = half.min(gnorm.sqrt()) * gnorm;
        let s = conjugate_gradient(&h, &g, &mut d, cfg.max_cg, forcing)?;
        if s.status == SolveStatus::Breakdown && s.steps == 0 {
            d = g; // not positive definite along g: fall back to a gradient step
        }
        let slope = linalg::dot(&g, &d);
        // Backtracking: Armijo on g when values exist, otherwise decrease of ‖∇_y g‖.
        let mut t = T::ONE;
        let mut accepted = false;
        let mut y_new = y;
        let mut g_new = [T::ZERO; DY];
        for _ in 0..60 {
            y_new = y;
            linalg::axpy(-t, &d, &mut y_new);
            o.lower_grad(x, &y_new, Batch::Full, &mut g_new)?;
            // Near the solution g's values stop resolving progress, so a strict decrease
            // of ‖∇_y g‖ also accepts the step.
            let grad_decreased = linalg::norm(&g_new) < gnorm;
            let ok = match value {
                Some(v) => {
                    let v_new = o.lower_value(x, &y_new, Batch::Full)?;
                    let armijo = v_new < v && v_new <= v - T::from_f64(1e-4) * t * slope;
                    if armijo || grad_decreased {
                        value = Some(v_new);
                    }
                    armijo || grad_decreased
                }
                None => grad_decreased,
            };
            if ok {
                accepted = true;
                break;
            }
            t *= half;
        }
        if !accepted {
            // No decrease representable at this precision: y is as good as it gets.
            if gnorm <= cfg.lower_tol.sqrt() {
                return Ok((y, gnorm, k));
            }
            return Err(Error::Breakdown {
                stage: "reference Newton line search",
            });
        }
        let gnorm_new = linalg::norm(&g_new);
        stalled = if gnorm_new < gnorm { 0 } else { stalled + 1 };
        y = y_new;
        g = g_new;
        gnorm = gnorm_new;
        if stalled >= 3 {
            // Roundoff floor: the gradient no longer decreases.
            return if gnorm <= cfg.lower_tol.sqrt() {
                Ok((y, gnorm, k + 1))
            } else {
                Err(Error::Breakdown {
                    stage: "reference Newton iteration stalled",
                })
            };
        }
    }
    if gnorm <= cfg.lower_tol {
        Ok((y, gnorm, cfg.max_newton))
    } else {
        Err(Error::Budget)
    }
}

/// The reference hypergradient at `x`, starting the lower solve from `y0`.
///
/// ```
/// use bilevel::problems::Quadratic;
/// use bilevel::reference::{reference_hypergradient, ReferenceConfig};
/// let q = Quadratic::<f64, 3, 5>::random(1, 20.0, 0.1);
/// let x = [0.3, -0.2, 0.1];
/// let r = reference_hypergradient(&q, &x, &[0.0; 5], &ReferenceConfig::default()).unwrap();
/// let exact = q.hypergradient(&x).unwrap();
/// for j in 0..3 {
///     assert!((r.hypergradient[j] - exact[j]).abs() < 1e-9);
/// }
/// ```
pub fn reference_hypergradient<P, T, const DX: usize, const DY: usize>(
    problem: &P,
    x: &[T; DX],
    y0: &[T; DY],
    cfg: &ReferenceConfig<T>,
) -> Result<Reference<T, DX, DY>, Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    let (y, lower_grad_norm, newton_steps) = solve_lower(problem, x, y0, cfg)?;
    let o = Checked::new(problem, "reference adjoint");
    let mut gx = [T::ZERO; DX];
    let mut gy = [T::ZERO; DY];
    o.upper_grad(x, &y, Batch::Full, &mut gx, &mut gy)?;
    let h = LowerHessian {
        oracles: o,
        x,
        y: &y,
        batch: Batch::Full,
    };
    let mut u = [T::ZERO; DY];
    let tol = cfg.adjoint_tol * (T::ONE + linalg::norm(&gy));
    let s = conjugate_gradient(&h, &gy, &mut u, cfg.max_cg, tol)?;
    match s.status {
        SolveStatus::Converged => {}
        SolveStatus::Budget => return Err(Error::Budget),
        SolveStatus::Breakdown | SolveStatus::Diverged => {
            return Err(Error::Breakdown {
                stage: "reference adjoint CG",
            });
        }
    }
    let mut hypergradient = gx;
    implicit_hypergradient(&o, x, &y, &u, Batch::Full, &mut hypergradient)?;
    Ok(Reference {
        y,
        u,
        hypergradient,
        lower_grad_norm,
        newton_steps,
    })
}

/// `F(x) = f(x, y*(x))` with the lower level solved by [`solve_lower`] from `y0`.
pub fn reference_value<P, T, const DX: usize, const DY: usize>(
    problem: &P,
    x: &[T; DX],
    y0: &[T; DY],
    cfg: &ReferenceConfig<T>,
) -> Result<(T, [T; DY]), Error>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    let (y, _, _) = solve_lower(problem, x, y0, cfg)?;
    let v = Checked::new(problem, "reference value").upper_value(x, &y, Batch::Full)?;
    Ok((v, y))
}

/// Outer gradient steps on the reference hypergradient: the exact (and expensive)
/// baseline. The lower solve is warm-started from the previous `y*`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(feature = "serde", serde(bound(deserialize = "T: Real + serde::Deserialize<'de>")))]
pub struct ReferenceSolver<T, const DY: usize> {
    /// Tolerances of each reference solve.
    pub config: ReferenceConfig<T>,
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    y: [T; DY],
}

impl<T: Real, const DY: usize> ReferenceSolver<T, DY> {
    /// Starts the lower level at `y0`.
    pub fn new(config: ReferenceConfig<T>, y0: [T; DY]) -> Self {
        ReferenceSolver { config, y: y0 }
    }
}

impl<T: Real, const DX: usize, const DY: usize> crate::run::Solver<T, DX, DY> for ReferenceSolver<T, DY> {
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<crate::run::Diagnostics, Error> {
        let r = reference_hypergradient(problem, x, &self.y, &self.config)?;
        self.y = r.y;
        *h = r.hypergradient;
        Ok(crate::run::Diagnostics {
            inner_steps: r.newton_steps,
            ..Default::default()
        })
    }

    fn lower(&self) -> &[T; DY] {
        &self.y
    }
}

/// The registry entry of the reference ([`crate::registry`]).
pub struct ReferenceMethod;

impl crate::registry::MethodSpec for ReferenceMethod {
    const INFO: crate::registry::MethodInfo = crate::registry::MethodInfo {
        name: "reference",
        family: crate::registry::Family::Reference,
        summary: "Newton–CG lower solve and CG adjoint to tolerance every step: exact and costly; the yardstick",
        estimates: crate::registry::Estimates::Converged,
        settings: &[],
    };

    type Solver<T: Real, const DX: usize, const DY: usize> = ReferenceSolver<T, DY>;
    fn build<T: Real, const DX: usize, const DY: usize>(
        _: &crate::registry::Settings,
        start: &crate::registry::Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error> {
        Ok(ReferenceSolver::new(ReferenceConfig::default(), start.y0))
    }
}
