//! Outer runs measured against a closed-form hypergradient: how many iterations and oracle
//! calls a solver needs until `‖∇F(x)‖ ≤ target·‖∇F(x₀)‖`, and how long that takes.

use core::ops::ControlFlow;
use std::time::{Duration, Instant};

use bilevel::Error;
use bilevel::linalg;
use bilevel::problem::{Counted, OracleCounts, Problem};
use bilevel::run::{Budget, Outcome, Outer, Solver, run};

/// Iterations over which a run must improve its best relative hypergradient norm by 1%.
pub const STALL_WINDOW: u32 = 20_000;

/// The first iterate that met the relative hypergradient target.
#[derive(Clone, Copy, Debug)]
pub struct Reached {
    /// Outer iterations taken.
    pub iterations: u32,
    /// Oracle calls by kind up to that iterate.
    pub calls: OracleCounts,
}

/// The result of [`run_to_target`].
#[derive(Clone, Debug)]
pub struct TargetRun<const DX: usize> {
    /// When the target was met, if it was.
    pub reached: Option<Reached>,
    /// The last iterate (at the target, or after the budget or an error).
    pub x: [f64; DX],
    /// Smallest `‖∇F(x)‖ / ‖∇F(x₀)‖` seen.
    pub best_relative: f64,
    /// The run blew up: `‖∇F(x)‖` became non-finite or above `1e8·‖∇F(x₀)‖`, or the driver
    /// returned an error.
    pub diverged: bool,
    /// How the driver ended (an error means the run blew up).
    pub outcome: Result<Outcome, Error>,
}

/// Runs `solver` from `x0` with constant outer step `alpha` for at most `max_iterations`,
/// stopping at the first iterate with `‖grad(x)‖ ≤ target·‖grad(x₀)‖`, where `grad` is the
/// exact hypergradient; or when the run has blown up (`‖grad(x)‖ > 1e8·‖grad(x₀)‖`); or
/// when it has stalled (the smallest relative norm improved by less than 1% over the last
/// [`STALL_WINDOW`] iterations: a biased method at its floor).
pub fn run_to_target<P, S, G, const DX: usize, const DY: usize>(
    solver: &mut S,
    problem: P,
    x0: [f64; DX],
    alpha: f64,
    max_iterations: u32,
    grad: G,
    target: f64,
) -> TargetRun<DX>
where
    P: Problem<f64, DX, DY>,
    S: Solver<f64, DX, DY>,
    G: Fn(&[f64; DX]) -> [f64; DX],
{
    let counted = Counted::new(problem);
    let mut x = x0;
    let g0 = linalg::norm(&grad(&x0));
    let mut reached = None;
    let mut best_relative = 1.0f64;
    let mut best_at_window_start = 1.0f64;
    let mut blew_up = false;
    let outcome = run(
        solver,
        &counted,
        &mut x,
        &Outer::constant(alpha),
        Budget::iterations(max_iterations),
        0.0,
        |step, x| {
            let rel = linalg::norm(&grad(x)) / g0;
            best_relative = best_relative.min(rel);
            if rel <= target {
                reached = Some(Reached {
                    iterations: step.iteration + 1,
                    calls: step.oracle_calls,
                });
                ControlFlow::Break(())
            } else if !rel.is_finite() || rel > 1e8 {
                blew_up = true;
                ControlFlow::Break(())
            } else if (step.iteration + 1) % STALL_WINDOW == 0 {
                let stalled = best_relative > 0.99 * best_at_window_start;
                best_at_window_start = best_relative;
                if stalled {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .map(|r| r.outcome);
    TargetRun {
        reached,
        x,
        best_relative,
        diverged: blew_up || outcome.is_err(),
        outcome,
    }
}

/// Wall time of `iterations` outer iterations of `solver` from `x0` (no monitoring inside
/// the loop); returns the time and the final iterate.
pub fn time_iterations<P, S, const DX: usize, const DY: usize>(
    solver: &mut S,
    problem: P,
    x0: [f64; DX],
    alpha: f64,
    iterations: u32,
) -> Result<(Duration, [f64; DX]), Error>
where
    P: Problem<f64, DX, DY>,
    S: Solver<f64, DX, DY>,
{
    let counted = Counted::new(problem);
    let mut x = x0;
    let start = Instant::now();
    run(
        solver,
        &counted,
        &mut x,
        &Outer::constant(alpha),
        Budget::iterations(iterations),
        0.0,
        |_, _| ControlFlow::Continue(()),
    )?;
    Ok((start.elapsed(), x))
}
