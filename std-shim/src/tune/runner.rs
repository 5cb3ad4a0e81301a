//! Running a method: the registry builds the solver, the core's driver steps it, and an
//! observer keeps the trace, the progress bar and the exact targets.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::ops::ControlFlow;

use bilevel::Batch;
use bilevel::problem::{Counted, OracleCounts, Problem};
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel::registry::{Start, Visit};
use bilevel::run::{Adaptive, Budget, Driver, Outer, Solver, Stopping};
use bilevel::scalar::Real;
use bilevel::schedule::Schedule;

use crate::progress::Progress;

use super::*;

/// What every run needs besides the problem.
pub(super) struct RunPlan {
    pub(super) iterations: u32,
    pub(super) seed: u64,
    pub(super) step: Option<f64>,
    pub(super) radius: f64,
    pub(super) tracking: f64,
    pub(super) estimates: bilevel::registry::Estimates,
    pub(super) bounds: Option<(f64, f64)>,
    pub(super) tolerance: f64,
    pub(super) absolute_tolerance: f64,
    pub(super) progress: bool,
    pub(super) label: String,
    pub(super) stop: Option<StopAt>,
    pub(super) trace: Option<PathBuf>,
}

impl RunPlan {
    /// The plan of `req` for the method of `prm`, inside `bounds`.
    pub(super) fn new(req: &TuneRequest, prm: &Params, bounds: Option<(f64, f64)>, label: String) -> Self {
        let estimates = prm.method.info().estimates;
        RunPlan {
            iterations: req.iterations,
            seed: req.seed,
            step: req.step,
            radius: req.radius,
            tracking: req.tracking.unwrap_or_else(|| estimates.default_tracking()),
            estimates,
            bounds,
            progress: req.progress,
            tolerance: req.tolerance,
            absolute_tolerance: req.absolute_tolerance,
            label,
            stop: req.stop,
            trace: req.trace.clone(),
        }
    }
}

/// What one run produced.
pub(super) struct RunResult<T, const DX: usize> {
    pub(super) x: [T; DX],
    /// The solver's last lower iterate: where the final evaluation's lower solve starts.
    pub(super) lower: Vec<T>,
    pub(super) iterations: u32,
    pub(super) status: String,
    pub(super) calls: OracleCounts,
    pub(super) hypergradient_norm: f64,
    pub(super) relative_hypergradient_norm: f64,
    pub(super) relative_lower_residual: f64,
    pub(super) held_iterations: u32,
    pub(super) seconds: f64,
    pub(super) trace: Vec<TraceRow>,
}

/// Builds the method's solver from `params` and runs it on `problem` from `x0`, `y0`.
pub(super) fn run_method<T, P, const DX: usize, const DY: usize>(
    problem: &P,
    params: &Params,
    plan: &RunPlan,
    x0: [T; DX],
    y0: [T; DY],
) -> Result<RunResult<T, DX>, BoxError>
where
    T: Real,
    P: Problem<T, DX, DY>,
{
    let start = Start::new(y0, problem.samples(), plan.seed);
    let runner = Runner { problem, plan, x0 };
    params.method.build(&params.settings, &start, runner)?
}

/// Runs the solver it is handed.
pub(super) struct Runner<'a, P, T, const DX: usize> {
    pub(super) problem: &'a P,
    pub(super) plan: &'a RunPlan,
    pub(super) x0: [T; DX],
}

impl<T: Real, P: Problem<T, DX, DY>, const DX: usize, const DY: usize> Visit<T, DX, DY> for Runner<'_, P, T, DX> {
    type Output = Result<RunResult<T, DX>, BoxError>;

    fn visit<S: Solver<T, DX, DY>>(self, mut solver: S) -> Self::Output {
        let Runner { problem, plan, x0 } = self;
        let counted = Counted::new(problem);
        let mut x = x0;
        let bounds = plan.bounds.map(|(a, b)| (T::from_f64(a), T::from_f64(b)));
        let stopping = Stopping {
            relative: T::from_f64(plan.tolerance),
            absolute: T::from_f64(plan.absolute_tolerance),
        };
        let budget = Budget::iterations(plan.iterations);
        let mut driver = match plan.step {
            Some(step) => Driver::new(
                Outer {
                    schedule: Schedule::Constant(T::from_f64(step)),
                    bounds,
                },
                budget,
                stopping,
            )?,
            None => {
                let radius = T::from_f64(plan.radius);
                let rule = Adaptive::for_estimates(plan.estimates, plan.tracking, radius);
                Driver::adaptive(rule, bounds, budget, stopping)?
            }
        }
        .tracking(T::from_f64(plan.tracking))?;
        // Exact F and ‖∇F‖ for the targets, warm-started from the last lower solution.
        let mut y_ref = [T::ZERO; DY];
        let mut exact = |x: &[T; DX]| -> (f64, f64) {
            match reference_hypergradient(problem, x, &y_ref, &ReferenceConfig::default()) {
                Ok(r) => {
                    y_ref = r.y;
                    let f = problem.upper_value(x, &r.y, Batch::Full).map_or(f64::NAN, T::to_f64);
                    (f, bilevel::linalg::norm(&r.hypergradient).to_f64())
                }
                Err(_) => (f64::NAN, f64::NAN),
            }
        };
        let exact_start = if plan.stop.is_some() {
            exact(&x)
        } else {
            (f64::NAN, f64::NAN)
        };
        let mut excluded = std::time::Duration::ZERO;
        let start = Instant::now();
        let mut trace = Vec::new();
        let exact_columns = plan.stop.is_some();
        let mut sink = TraceFile::create(plan.trace.as_deref(), exact_columns)?;
        let mut bar = Progress::new(plan.progress, plan.iterations, &plan.label);
        let mut target = false;
        let result = driver.run(&mut solver, &counted, &mut x, |r, x, solver| {
            let norm = r.hypergradient_norm.to_f64();
            let loss = problem
                .upper_value(x, solver.lower(), Batch::Full)
                .map_or(f64::NAN, T::to_f64);
            let seconds = (start.elapsed() - excluded).as_secs_f64();
            let (exact_value, exact_gradient_norm) = if plan.stop.is_some() {
                let t0 = Instant::now();
                let e = exact(x);
                excluded += t0.elapsed();
                e
            } else {
                (f64::NAN, f64::NAN)
            };
            let row = TraceRow {
                iteration: r.iteration,
                held: r.held,
                hypergradient_norm: norm,
                validation_loss: loss,
                oracle_calls: r.oracle_calls.total(),
                seconds,
                exact_value,
                exact_gradient_norm,
            };
            sink.write(&row, exact_columns);
            trace.push(row);
            bar.tick(r.iteration + 1, norm, loss);
            target = match plan.stop {
                Some(StopAt::RelativeGradient(e)) => exact_gradient_norm <= e * exact_start.1,
                Some(StopAt::Loss(v)) => exact_value <= v,
                None => false,
            };
            if target {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        bar.finish();
        sink.finish()?;
        let status = match result {
            Ok(_) if target => "target".to_string(),
            Ok(report) => report.outcome.name().to_string(),
            Err(e) => format!("failed: {e}"),
        };
        Ok(RunResult {
            x,
            lower: solver.lower().to_vec(),
            iterations: driver.iteration(),
            status,
            calls: counted.counts(),
            // NaN (JSON null) until there is an estimate, and its ratio until one moved x.
            hypergradient_norm: measured(driver.hypergradient_norm()),
            relative_hypergradient_norm: match driver.first_norm() {
                first if first > T::ZERO => measured(driver.hypergradient_norm()) / first.to_f64(),
                _ => f64::NAN,
            },
            relative_lower_residual: {
                let (last, first) = driver.lower_residual();
                measured(last) / first.to_f64()
            },
            held_iterations: trace.iter().filter(|r| r.held).count() as u32,
            seconds: (start.elapsed() - excluded).as_secs_f64(),
            trace,
        })
    }
}

/// The trace file, a row written and flushed per step; the first write error is kept and
/// reported when the run ends (the run itself goes on).
struct TraceFile {
    file: Option<(PathBuf, std::io::LineWriter<std::fs::File>)>,
    error: Option<std::io::Error>,
}

impl TraceFile {
    fn create(path: Option<&Path>, exact: bool) -> Result<Self, BoxError> {
        let file = match path {
            None => None,
            Some(p) => {
                let mut w = std::fs::File::create(p)
                    .map(std::io::LineWriter::new)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                w.write_all(TraceRow::csv_header(exact).as_bytes())
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                Some((p.to_path_buf(), w))
            }
        };
        Ok(TraceFile { file, error: None })
    }

    fn write(&mut self, row: &TraceRow, exact: bool) {
        if let (Some((_, w)), None) = (&mut self.file, &self.error)
            && let Err(e) = w.write_all(row.csv_line(exact).as_bytes())
        {
            self.error = Some(e);
        }
    }

    fn finish(self) -> Result<(), BoxError> {
        match (self.file, self.error) {
            (Some((path, _)), Some(e)) => Err(format!("{}: {e}", path.display()).into()),
            (Some((path, mut w)), None) => w.flush().map_err(|e| format!("{}: {e}", path.display()).into()),
            (None, _) => Ok(()),
        }
    }
}

/// A driver measure in `f64`: NaN for its "not measured yet" `T::MAX`.
fn measured<T: Real>(v: T) -> f64 {
    if v == T::MAX { f64::NAN } else { v.to_f64() }
}
