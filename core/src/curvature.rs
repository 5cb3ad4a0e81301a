//! Inner steps from the curvature where the solver is. The default inner step `1/L` takes
//! `L` from a bound over every `y` (for logistic regression, ¼ of the Gram matrix's top
//! eigenvalue plus `λ`); where the model fits its data most sigmoid slopes are far below ¼
//! and the Hessian's largest eigenvalue is many times smaller. Gradient steps, Neumann
//! series and unrolled depths need about `λ_max/λ_min` steps per digit, so they need that
//! many times fewer with steps from the Hessian at hand. [`LocalSteps`] estimates `λ_max`
//! of `∇²_yy g` at the solver's lower iterate before each estimate (power iteration,
//! warm-started across calls: a few Hessian-vector products) and gives the solver the steps
//! `scale/λ_max` ([`Solver::set_steps`]).

use crate::error::Error;
use crate::linsolve::{LowerHessian, largest_eigenvalue};
use crate::problem::{Batch, Checked, Problem};
use crate::registry::{Setting, Settings};
use crate::run::{Adjoint, Bias, Deepening, Diagnostics, Solver};
use crate::scalar::Real;

/// Power iterations of the first estimate, from the fixed start; later ones are
/// warm-started from the last eigenvector.
pub const FIRST_ITERATIONS: u32 = 16;

/// A solver whose inner steps follow the lower Hessian's largest eigenvalue at its lower
/// iterate. Everything else is the solver's own; the driver's
/// [`Solver::shorten_steps`] halves the scale of the steps for good (the Hessian where the
/// steps are taken can be stiffer than where it was measured).
///
/// Cost per estimate: `iterations` Hessian-vector products at the full batch
/// ([`FIRST_ITERATIONS`] at the first), on top of the solver's own calls.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSteps<S, T, const DY: usize> {
    solver: S,
    iterations: u32,
    direction: [T; DY],
    /// Steps are `scale/λ_max`.
    scale: T,
    /// The step last given to the solver, restored when a call fails.
    step: T,
    estimated: bool,
}

impl<S, T: Real, const DY: usize> LocalSteps<S, T, DY> {
    /// `solver` with its `1/L` steps replaced by `scale/λ_max` from `iterations` power
    /// iterations per estimate (at least [`FIRST_ITERATIONS`] at the first); it takes
    /// `step` (the global `1/L`) until then. With `iterations = 0`, `solver` as it is.
    pub fn new<const DX: usize>(mut solver: S, iterations: u32, step: T) -> Self
    where
        S: Solver<T, DX, DY>,
    {
        if iterations > 0 {
            solver.set_steps(step);
        }
        LocalSteps {
            solver,
            iterations,
            direction: [T::ZERO; DY],
            scale: T::ONE,
            step,
            estimated: false,
        }
    }

    /// A registry method's `solver` with the steps of `settings`: from the local curvature
    /// ([`Settings::curvature_iterations`]) unless one of `steps` was set by hand, starting
    /// from the first of `steps` (the global `1/L` by default).
    pub fn from_settings<const DX: usize>(solver: S, settings: &Settings, steps: &[&Setting]) -> Self
    where
        S: Solver<T, DX, DY>,
    {
        let start = steps.first().map_or(T::ONE, |s| settings.real(s));
        LocalSteps::new(solver, settings.curvature_iterations(steps), start)
    }

    /// The wrapped solver.
    pub fn solver(&self) -> &S {
        &self.solver
    }

    /// The step of the last estimate (or the starting step before it).
    pub fn step(&self) -> T {
        self.step
    }
}

impl<S, T, const DX: usize, const DY: usize> Solver<T, DX, DY> for LocalSteps<S, T, DY>
where
    S: Solver<T, DX, DY>,
    T: Real,
{
    /// Estimates `λ_max` at `(x, y)`, sets the solver's steps, then the solver's call. A
    /// vanishing estimate keeps the last steps. On error the steps and the eigenvector are
    /// as before.
    fn hypergradient<P: Problem<T, DX, DY>>(
        &mut self,
        problem: &P,
        x: &[T; DX],
        h: &mut [T; DX],
    ) -> Result<Diagnostics, Error> {
        if self.iterations == 0 {
            return self.solver.hypergradient(problem, x, h);
        }
        let iterations = if self.estimated {
            self.iterations
        } else {
            self.iterations.max(FIRST_ITERATIONS)
        };
        let mut direction = self.direction;
        let hessian = LowerHessian {
            oracles: Checked::new(problem, "local curvature"),
            x,
            y: self.solver.lower(),
            batch: Batch::Full,
        };
        let largest = largest_eigenvalue(&hessian, &mut direction, iterations)?;
        let step = if largest > T::ZERO {
            self.scale / largest
        } else {
            self.step
        };
        self.solver.set_steps(step);
        match self.solver.hypergradient(problem, x, h) {
            Ok(d) => {
                self.direction = direction;
                self.step = step;
                self.estimated = true;
                Ok(d)
            }
            Err(e) => {
                self.solver.set_steps(self.step);
                Err(e)
            }
        }
    }

    fn lower(&self) -> &[T; DY] {
        self.solver.lower()
    }

    fn advance<P: Problem<T, DX, DY>>(&mut self, problem: &P, x: &[T; DX]) -> Result<Diagnostics, Error> {
        self.solver.advance(problem, x)
    }

    fn adjoint(&self) -> Option<Adjoint<'_, T, DY>> {
        self.solver.adjoint()
    }

    fn estimate_residual(&self) -> Option<T> {
        self.solver.estimate_residual()
    }

    fn deepen_adjoint(&mut self) -> Deepening {
        self.solver.deepen_adjoint()
    }

    fn reduce_noise(&mut self) -> bool {
        self.solver.reduce_noise()
    }

    /// Halves the scale of every later step and the current one.
    fn shorten_steps(&mut self) -> bool {
        if self.iterations == 0 {
            return self.solver.shorten_steps();
        }
        let half = T::from_f64(0.5);
        self.scale *= half;
        self.step *= half;
        self.solver.set_steps(self.step)
    }

    fn bias(&self) -> Bias {
        self.solver.bias()
    }
}
