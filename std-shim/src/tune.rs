//! `bilevel tune`: any core method on any of the bundled problem kinds, read from CSV files,
//! with a JSON summary, a per-step CSV trace and a progress bar on a terminal.
//!
//! Sizes are compile-time constants in the core. The command line is compiled for:
//!
//! - `logreg`, `logreg-per-feature`, `ridge`: feature widths [`WIDTHS`]; a file with `d`
//!   features is zero-padded to the next width. Zero columns change nothing: their weights
//!   stay 0 and so do their hypergradient entries.
//! - `hyperclean`: [`HYPERCLEAN_WIDTH`] features (zero-padded), [`HYPERCLEAN_CLASSES`]
//!   classes, and training sets of up to [`HYPERCLEAN_ROWS`] rows: the rows are padded to
//!   the capacity and [`FirstRows`] restricts every lower-level oracle to the real ones, so
//!   the padding is never read.
//! - `meta`: [`META_WIDTH`] features (zero-padded; the prior's padded weights stay 0) and
//!   exactly [`META_TASKS`] tasks (a task count cannot be padded without changing `F`).
//!
//! Every method runs through one generic dispatch ([`drive`]), whatever the problem.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::ops::ControlFlow;

use bilevel::Batch;
use bilevel::problem::{Counted, OracleCounts, Problem};
use bilevel::problems::{HyperCleaning, Logistic, MetaLearning, Ridge, Samples, Task};
use bilevel::reference::{ReferenceConfig, reference_hypergradient, reference_value};
use bilevel::registry::{Method, SettingError, Settings, Start, Visit};
use bilevel::run::{Adaptive, Budget, Driver, Outcome, Outer, Solver, Stopping};
use bilevel::scalar::Real;
use bilevel::schedule::Schedule;

use crate::data::{DataError, DataErrorKind, Dataset, Standardizer, Target, parse_csv};
use crate::progress::Progress;
use crate::tasks::{TaskData, read_tasks};

/// The error type of the command-line operations.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Feature widths of logistic and ridge regression; data is zero-padded to the next one.
pub const WIDTHS: [usize; 3] = [8, 32, 64];
/// Feature width of hyper-cleaning.
pub const HYPERCLEAN_WIDTH: usize = 64;
/// Class counts of hyper-cleaning (data with 3 to 9 classes uses the 10-class model).
pub const HYPERCLEAN_CLASSES: [usize; 2] = [2, 10];
/// Training-row capacities of hyper-cleaning (one weight per row; padded).
pub const HYPERCLEAN_ROWS: [usize; 2] = [256, 2048];
/// Feature width of meta-learning.
pub const META_WIDTH: usize = 8;
/// Task counts of meta-learning (exact).
pub const META_TASKS: [usize; 4] = [4, 8, 16, 32];
/// The problem to tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Logistic regression, one L2 strength.
    Logreg,
    /// Logistic regression, one L2 strength per feature.
    LogregPerFeature,
    /// Ridge regression, one L2 strength.
    Ridge,
    /// Multiclass hyper-cleaning: one weight per training sample.
    HyperClean,
    /// Few-shot meta-learning of a shared prior of linear regression tasks.
    Meta,
}

impl ProblemKind {
    /// The stable command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Logreg => "logreg",
            ProblemKind::LogregPerFeature => "logreg-per-feature",
            ProblemKind::Ridge => "ridge",
            ProblemKind::HyperClean => "hyperclean",
            ProblemKind::Meta => "meta",
        }
    }
}

/// Floating-point type of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// `f32`, as on a microcontroller with a single-precision FPU.
    F32,
    /// `f64`.
    F64,
}

/// When a run stops before its iteration budget (besides `‖h‖ ≤ 1e-9`). Both targets are
/// measured exactly, the same way for every method: after each step the reference
/// (Newton–CG lower solve, CG adjoint, warm-started) evaluates `F(x)` and `∇F(x)`; those
/// evaluations are neither counted as oracle calls nor timed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopAt {
    /// `‖∇F(x_k)‖ ≤ E·‖∇F(x_0)‖`.
    RelativeGradient(f64),
    /// `F(x_k) ≤ V`.
    Loss(f64),
}

/// What `bilevel tune` was asked to do.
#[derive(Clone, Debug)]
pub struct TuneRequest {
    /// The problem.
    pub problem: ProblemKind,
    /// Training CSV (lower level).
    pub train: Option<PathBuf>,
    /// Validation CSV (upper level).
    pub validation: Option<PathBuf>,
    /// Optional test CSV (a task file for `meta`).
    pub test: Option<PathBuf>,
    /// Task file of `meta`.
    pub tasks: Option<PathBuf>,
    /// Method name (one of [`Method::ALL`]).
    pub method: String,
    /// Outer iterations at most.
    pub iterations: u32,
    /// Seed of stochastic methods (and of the label noise).
    pub seed: u64,
    /// A fixed outer step; `None`: the scale-free adaptive step (Barzilai–Borwein for
    /// deterministic methods, AdaGrad-norm for stochastic ones).
    pub step: Option<f64>,
    /// Length of the adaptive step's first move, in the units of `x`.
    pub radius: f64,
    /// Starting value of every hyperparameter (a per-problem default when `None`).
    pub x0: Option<f64>,
    /// `--set key=value` overrides.
    pub settings: Vec<(String, f64)>,
    /// `f32` or `f64`.
    pub precision: Precision,
    /// Draw a progress bar if stderr is a terminal.
    pub progress: bool,
    /// Early stop at a target.
    pub stop: Option<StopAt>,
    /// Converged when the hypergradient estimate's norm is at most this times the first one's
    /// (entries a bound blocks left out).
    pub tolerance: f64,
    /// Converged when the hypergradient estimate's norm is at most this (0: no absolute test).
    pub absolute_tolerance: f64,
}

impl TuneRequest {
    /// A request with the defaults of the command line.
    pub fn new(problem: ProblemKind, method: &str) -> Self {
        TuneRequest {
            problem,
            train: None,
            validation: None,
            test: None,
            tasks: None,
            method: method.to_string(),
            iterations: 200,
            seed: 1,
            step: None,
            radius: 1.0,
            x0: None,
            settings: Vec::new(),
            precision: Precision::F64,
            progress: false,
            stop: None,
            tolerance: 1e-6,
            absolute_tolerance: 0.0,
        }
    }
}

/// One row of the trace.
#[derive(Clone, Debug)]
pub struct TraceRow {
    /// Outer iteration.
    pub iteration: u32,
    /// `‖h‖` of the estimate used.
    pub hypergradient_norm: f64,
    /// Validation loss `f(x, y)` at the solver's lower iterate after the step.
    pub validation_loss: f64,
    /// Oracle calls so far (all kinds).
    pub oracle_calls: u64,
    /// Seconds since the start, without the time of the exact evaluations.
    pub seconds: f64,
    /// `F(x)` after the step with the lower level solved by the reference (Newton–CG);
    /// computed only when a target is set (`bilevel bench`), NaN otherwise.
    pub exact_value: f64,
    /// `‖∇F(x)‖` after the step by the reference; as `exact_value`.
    pub exact_gradient_norm: f64,
}

/// Test-set figures.
#[derive(Clone, Copy, Debug)]
pub struct TestScore {
    /// Test loss.
    pub loss: f64,
    /// `"accuracy"` or `"r2"`.
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
}

/// The result, as printed and written to JSON.
#[derive(Clone, Debug)]
pub struct TuneSummary {
    /// Problem name.
    pub problem: &'static str,
    /// Method name.
    pub method: String,
    /// `f32` or `f64`.
    pub precision: &'static str,
    /// How the run ended (`converged`, `target`, `iteration budget`, `failed: …`).
    pub status: String,
    /// Outer iterations.
    pub iterations: u32,
    /// Oracle calls by kind.
    pub oracle_calls: OracleCounts,
    /// Tuned hyperparameters (padding removed).
    pub x: Vec<f64>,
    /// What `x` holds.
    pub x_meaning: &'static str,
    /// Validation loss at `x` with the lower level solved to tolerance.
    pub upper_value: f64,
    /// Norm of the last hypergradient estimate.
    pub hypergradient_norm: f64,
    /// That norm over the first estimate's (the stopping test's measure; entries a bound
    /// blocks left out of both).
    pub relative_hypergradient_norm: f64,
    /// Test figures when a test file was given.
    pub test: Option<TestScore>,
    /// Wall time of the run.
    pub wall_time_s: f64,
    /// Features in the files and the compiled width used.
    pub features: (usize, usize),
    /// One row per outer step.
    pub trace: Vec<TraceRow>,
    /// Problem-specific JSON members (`"key": value` pairs, already encoded).
    pub extra: Vec<(String, String)>,
    /// Notes for the human summary.
    pub notes: Vec<String>,
}

impl TuneSummary {
    /// `true` unless the run failed.
    pub fn ok(&self) -> bool {
        !self.status.starts_with("failed")
    }
}

// ---------------------------------------------------------------------------------------
// Hyperparameters and `--set`.

/// A method with its settings (registry defaults, then `--set` overrides) and the problem's
/// settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The method.
    pub method: Method,
    /// Its settings.
    pub settings: Settings,
    /// The problem's settings.
    pub problem: Vec<(&'static str, f64)>,
}

impl Params {
    /// The value of a problem setting `key` (NaN if the problem has none).
    pub fn get(&self, key: &str) -> f64 {
        self.problem
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(f64::NAN, |&(_, v)| v)
    }

    /// Every key `--set` accepts: the method's, then the problem's.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.settings
            .iter()
            .map(|(s, _)| s.key)
            .chain(self.problem.iter().map(|(k, _)| *k))
    }
}

/// Every method name, comma-separated (for messages and help).
pub fn method_list() -> String {
    Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

/// Problem settings accepted by `--set` besides the method's.
pub fn problem_defaults(problem: ProblemKind) -> Vec<(&'static str, f64)> {
    match problem {
        ProblemKind::HyperClean => vec![("noise", 0.0), ("l2", HyperCleaning::<f64, 1, 2, 1, 4>::DEFAULT_L2)],
        ProblemKind::Meta => vec![("lambda", 1.0)],
        _ => vec![],
    }
}

/// Every method with its family, summary and settings (defaults in terms of the lower
/// level's smoothness `L`).
pub fn methods_table() -> String {
    use bilevel::registry::{Initial, Kind};
    let mut s = String::new();
    for m in Method::ALL {
        let info = m.info();
        let outer = match info.estimates {
            bilevel::registry::Estimates::Converged => "Barzilai–Borwein outer step",
            bilevel::registry::Estimates::Truncated => "AdaGrad-norm outer step",
            bilevel::registry::Estimates::Stochastic => "stochastic, AdaGrad-norm outer step",
        };
        let _ = writeln!(s, "{} ({}, {outer}): {}", info.name, info.family.name(), info.summary);
        for setting in info.settings {
            let default = match setting.initial {
                Initial::Value(v) => format!("{v}"),
                Initial::OverLipschitz(1.0) => "1/L".to_string(),
                Initial::OverLipschitz(c) => format!("{c}/L"),
                Initial::TimesLipschitz(1.0) => "L".to_string(),
                Initial::TimesLipschitz(c) => format!("{c}·L"),
            };
            let range = match setting.kind {
                Kind::Count { min, max } if max == u32::MAX => format!("whole, ≥ {min}"),
                Kind::Count { min, max } => format!("whole, {min}..={max}"),
                Kind::Positive => "> 0".to_string(),
                Kind::Fraction => "in [0, 1]".to_string(),
            };
            let _ = writeln!(
                s,
                "    {:<18} {} (default {default}; {range})",
                setting.key, setting.doc
            );
        }
    }
    s
}

/// The method's and the problem's settings with `overrides` applied, for a lower level of
/// smoothness `lipschitz`; an unknown key is an error naming it and listing the valid ones.
pub fn params(
    problem: ProblemKind,
    method: &str,
    lipschitz: f64,
    overrides: &[(String, f64)],
) -> Result<Params, String> {
    let Some(m) = Method::from_name(method) else {
        return Err(format!("unknown method {method:?}; one of: {}", method_list()));
    };
    let mut p = Params {
        method: m,
        settings: Settings::new(m, lipschitz),
        problem: problem_defaults(problem),
    };
    for (key, value) in overrides {
        if let Some(entry) = p.problem.iter_mut().find(|(k, _)| k == key) {
            entry.1 = *value;
            continue;
        }
        match p.settings.set(key, *value) {
            Ok(()) => {}
            Err(SettingError::Unknown) => {
                let valid: Vec<&str> = p.keys().collect();
                let valid = if valid.is_empty() {
                    "none".to_string()
                } else {
                    valid.join(", ")
                };
                return Err(format!(
                    "unknown --set key {key:?} for {} with {method}; valid keys: {valid}",
                    problem.name()
                ));
            }
            Err(SettingError::Invalid(e)) => return Err(format!("--set {key}={value}: {e}")),
        }
    }
    Ok(p)
}

/// Parses one `key=value` of `--set`.
pub fn parse_setting(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--set {s:?}: expected key=value"))?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("--set {s:?}: {v:?} is not a number"))?;
    Ok((k.trim().to_string(), v))
}

// ---------------------------------------------------------------------------------------
// Running a method: the registry builds the solver, the core's driver steps it, and an
// observer keeps the trace, the progress bar and the exact targets.

/// What every run needs besides the problem.
struct RunPlan {
    iterations: u32,
    seed: u64,
    step: Option<f64>,
    radius: f64,
    estimates: bilevel::registry::Estimates,
    bounds: Option<(f64, f64)>,
    tolerance: f64,
    absolute_tolerance: f64,
    progress: bool,
    label: String,
    stop: Option<StopAt>,
}

/// What one run produced.
struct RunResult<T, const DX: usize> {
    x: [T; DX],
    iterations: u32,
    status: String,
    calls: OracleCounts,
    hypergradient_norm: f64,
    relative_hypergradient_norm: f64,
    seconds: f64,
    trace: Vec<TraceRow>,
}

/// Builds the method's solver from `params` and runs it on `problem` from `x0`, `y0`.
fn run_method<T, P, const DX: usize, const DY: usize>(
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
struct Runner<'a, P, T, const DX: usize> {
    problem: &'a P,
    plan: &'a RunPlan,
    x0: [T; DX],
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
                let rule = Adaptive::for_estimates(plan.estimates, radius);
                Driver::adaptive(rule, bounds, budget, stopping)?
            }
        };
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
            trace.push(TraceRow {
                iteration: r.iteration,
                hypergradient_norm: norm,
                validation_loss: loss,
                oracle_calls: r.oracle_calls.total(),
                seconds,
                exact_value,
                exact_gradient_norm,
            });
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
        let status = match result {
            Ok(_) if target => "target".to_string(),
            Ok(report) => match report.outcome {
                Outcome::Converged => "converged".to_string(),
                Outcome::IterationBudget => "iteration budget".to_string(),
                Outcome::OracleBudget => "oracle budget".to_string(),
                Outcome::Stopped => "stopped".to_string(),
            },
            Err(e) => format!("failed: {e}"),
        };
        Ok(RunResult {
            x,
            iterations: driver.iteration(),
            status,
            calls: counted.counts(),
            hypergradient_norm: driver.hypergradient_norm().to_f64(),
            relative_hypergradient_norm: driver.hypergradient_norm().to_f64() / driver.first_norm().to_f64(),
            seconds: (start.elapsed() - excluded).as_secs_f64(),
            trace,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Data.

fn io_error(path: &Path, e: std::io::Error) -> DataError {
    DataError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        kind: DataErrorKind::Io(e.to_string()),
    }
}

/// Reads a CSV of `width` features into rows padded to `W` columns.
fn read_padded<const W: usize>(path: &Path, width: usize, target: Target) -> Result<Dataset<W>, DataError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    // Insert the padding columns before the label so the reader sees exactly W features.
    let pad = ",0".repeat(W - width);
    let mut padded = String::with_capacity(text.len() + text.lines().count() * pad.len());
    for line in text.lines() {
        if line.trim().is_empty() {
            padded.push('\n');
            continue;
        }
        match line.rfind(',') {
            Some(i) => {
                padded.push_str(&line[..i]);
                padded.push_str(&pad);
                padded.push_str(&line[i..]);
            }
            None => padded.push_str(line),
        }
        padded.push('\n');
    }
    parse_csv::<W>(&name, &padded, target).map_err(|mut e| {
        // Report positions in the original line: the label's column moves back over the
        // inserted padding, and the counts leave it out (a line without a comma got none).
        let label_start = text.lines().nth(e.line.wrapping_sub(1)).and_then(|l| l.rfind(','));
        if let Some(i) = label_start
            && e.column > i + pad.len()
        {
            e.column -= pad.len();
        }
        if let DataErrorKind::ColumnCount { expected, found } = e.kind {
            let padded = W - width;
            e.kind = DataErrorKind::ColumnCount {
                expected: expected.saturating_sub(padded),
                found: if label_start.is_some() {
                    found.saturating_sub(padded)
                } else {
                    found
                },
            };
        }
        e
    })
}

/// Features of a CSV file: the header's field count minus the label.
fn width_of(path: &Path) -> Result<usize, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let header = text.lines().find(|l| !l.trim().is_empty()).ok_or(DataError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        kind: DataErrorKind::Empty,
    })?;
    Ok(header.split(',').count().saturating_sub(1).max(1))
}

/// Train, validation and optional test sets standardized with the training statistics.
struct Files<const W: usize> {
    train: Dataset<W>,
    validation: Dataset<W>,
    test: Option<Dataset<W>>,
}

fn required<'a>(p: &'a Option<PathBuf>, flag: &str, problem: ProblemKind) -> Result<&'a PathBuf, BoxError> {
    p.as_ref()
        .ok_or_else(|| format!("--problem {} needs {flag}", problem.name()).into())
}

fn read_files<const W: usize>(req: &TuneRequest, width: usize, target: Target) -> Result<Files<W>, BoxError> {
    let train = read_padded::<W>(required(&req.train, "--train", req.problem)?, width, target)?;
    let validation = read_padded::<W>(required(&req.validation, "--val", req.problem)?, width, target)?;
    let test = req
        .test
        .as_ref()
        .map(|t| read_padded::<W>(t, width, target))
        .transpose()?;
    let s = Standardizer::fit(&train);
    Ok(Files {
        train: s.apply(&train),
        validation: s.apply(&validation),
        test: test.map(|t| s.apply(&t)),
    })
}

/// A data set in `T`.
struct Converted<T, const W: usize> {
    rows: Vec<[T; W]>,
    targets: Vec<T>,
}

impl<T: Real, const W: usize> Converted<T, W> {
    fn new(d: &Dataset<W>) -> Self {
        Converted {
            rows: d.rows.iter().map(|r| r.map(T::from_f64)).collect(),
            targets: d.targets.iter().map(|&v| T::from_f64(v)).collect(),
        }
    }

    fn samples(&self) -> Result<Samples<'_, T, W>, bilevel::Error> {
        Samples::new(&self.rows, &self.targets)
    }
}

fn sq(v: f64) -> f64 {
    v * v
}

fn max_row_norm2<T: Real, const W: usize>(rows: &[[T; W]]) -> f64 {
    rows.iter()
        .map(|r| 1.0 + r.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>())
        .fold(0.0, f64::max)
}

/// `1 − Σ(t − ŷ)² / Σ(t − t̄)²` of the affine model `y = [w, b]` on `rows`.
fn r2<T: Real, const W: usize>(rows: &[[T; W]], targets: &[T], y: &[T]) -> f64 {
    let n = targets.len().max(1) as f64;
    let mean = targets.iter().map(|t| t.to_f64()).sum::<f64>() / n;
    let (mut res, mut tot) = (0.0, 0.0);
    for (r, t) in rows.iter().zip(targets) {
        let pred = y[W].to_f64() + r.iter().zip(y).map(|(a, w)| a.to_f64() * w.to_f64()).sum::<f64>();
        res += sq(t.to_f64() - pred);
        tot += sq(t.to_f64() - mean);
    }
    if tot > 0.0 { 1.0 - res / tot } else { f64::NAN }
}

// ---------------------------------------------------------------------------------------
// The problems.

/// Runs the request.
pub fn tune(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    // Reject unknown methods and keys before reading any data.
    params(req.problem, &req.method, 1.0, &req.settings)?;
    match req.precision {
        Precision::F64 => tune_in::<f64>(req),
        Precision::F32 => tune_in::<f32>(req),
    }
}

fn width_for(req: &TuneRequest, widths: &[usize]) -> Result<(usize, usize), BoxError> {
    let path = required(&req.train, "--train", req.problem)?;
    let width = width_of(path)?;
    let Some(&w) = widths.iter().find(|&&w| w >= width) else {
        return Err(format!(
            "{} has {width} features; --problem {} supports at most {}",
            path.display(),
            req.problem.name(),
            widths[widths.len() - 1]
        )
        .into());
    };
    Ok((width, w))
}

fn tune_in<T: Real>(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    use ProblemKind::*;
    match req.problem {
        Logreg | LogregPerFeature | Ridge => {
            let (width, w) = width_for(req, &WIDTHS)?;
            match (w, req.problem) {
                (8, Logreg) => regression::<T, 8, 1, 9>(req, width),
                (8, LogregPerFeature) => regression::<T, 8, 8, 9>(req, width),
                (8, _) => regression::<T, 8, 1, 9>(req, width),
                (32, Logreg) => regression::<T, 32, 1, 33>(req, width),
                (32, LogregPerFeature) => regression::<T, 32, 32, 33>(req, width),
                (32, _) => regression::<T, 32, 1, 33>(req, width),
                (_, Logreg) => regression::<T, 64, 1, 65>(req, width),
                (_, LogregPerFeature) => regression::<T, 64, 64, 65>(req, width),
                (_, _) => regression::<T, 64, 1, 65>(req, width),
            }
        }
        HyperClean => hyperclean::<T>(req),
        Meta => meta::<T>(req),
    }
}

fn outcome_summary<T: Real, const DX: usize>(
    req: &TuneRequest,
    d: &RunResult<T, DX>,
    x: Vec<f64>,
    x_meaning: &'static str,
    upper_value: f64,
    test: Option<TestScore>,
    features: (usize, usize),
) -> TuneSummary {
    TuneSummary {
        problem: req.problem.name(),
        method: req.method.clone(),
        precision: precision_name::<T>(),
        status: d.status.clone(),
        iterations: d.iterations,
        oracle_calls: d.calls,
        x,
        x_meaning,
        upper_value,
        hypergradient_norm: d.hypergradient_norm,
        relative_hypergradient_norm: d.relative_hypergradient_norm,
        test,
        wall_time_s: d.seconds,
        features,
        trace: d.trace.clone(),
        extra: Vec::new(),
        notes: Vec::new(),
    }
}

fn precision_name<T: Real>() -> &'static str {
    if T::EPSILON.to_f64() > 1e-10 { "f32" } else { "f64" }
}

/// Logistic regression (one or per-feature L2) and ridge regression (one L2), `ln λ`.
fn regression<T: Real, const W: usize, const DX: usize, const DY: usize>(
    req: &TuneRequest,
    width: usize,
) -> Result<TuneSummary, BoxError> {
    let ridge = req.problem == ProblemKind::Ridge;
    let target = if ridge { Target::Real } else { Target::Classes(2) };
    let files = read_files::<W>(req, width, target)?;
    let (train, validation) = (Converted::<T, W>::new(&files.train), Converted::new(&files.validation));
    let test = files.test.as_ref().map(Converted::<T, W>::new);
    let x0 = [T::from_f64(req.x0.unwrap_or(0.0)); DX];
    let y0 = [T::ZERO; DY];
    let plan = |lipschitz: f64| -> Result<(RunPlan, Params), BoxError> {
        let prm = params(req.problem, &req.method, lipschitz, &req.settings)?;
        let plan = RunPlan {
            iterations: req.iterations,
            seed: req.seed,
            step: req.step,
            radius: req.radius,
            estimates: prm.method.info().estimates,
            bounds: Some((-12.0, 12.0)),
            progress: req.progress,
            tolerance: req.tolerance,
            absolute_tolerance: req.absolute_tolerance,
            label: format!("{} {}", req.problem.name(), req.method),
            stop: req.stop,
        };
        Ok((plan, prm))
    };
    let used = if DX == 1 { 1 } else { width };
    let meaning = if DX == 1 { "ln λ" } else { "ln λ per feature" };
    if ridge {
        let p: Ridge<'_, T, W, DX, DY> = Ridge::new(train.samples()?, validation.samples()?)?;
        let (plan, prm) = plan(p.lower_lipschitz(&x0).to_f64())?;
        let d = run_method(&p, &prm, &plan, x0, y0)?;
        let model = p.lower_solution(&d.x)?;
        let value = p.value(&d.x)?.to_f64();
        let test = match &test {
            Some(t) => Some(TestScore {
                loss: Ridge::<T, W, DX, DY>::loss(&t.samples()?, &model)?.to_f64(),
                metric: "r2",
                value: r2(&t.rows, &t.targets, &model),
            }),
            None => None,
        };
        let x = d.x[..used].iter().map(|v| v.to_f64()).collect();
        Ok(outcome_summary(req, &d, x, meaning, value, test, (width, W)))
    } else {
        let p: Logistic<'_, T, W, DX, DY> = Logistic::new(train.samples()?, validation.samples()?)?;
        let (plan, prm) = plan(p.lower_lipschitz(&x0).to_f64())?;
        let d = run_method(&p, &prm, &plan, x0, y0)?;
        let (value, model) = reference_value(&p, &d.x, &y0, &ReferenceConfig::default())?;
        let test = match &test {
            Some(t) => Some(TestScore {
                loss: Logistic::<T, W, DX, DY>::loss(&t.samples()?, &model)?.to_f64(),
                metric: "accuracy",
                value: Logistic::<T, W, DX, DY>::accuracy(&t.samples()?, &model).to_f64(),
            }),
            None => None,
        };
        let x = d.x[..used].iter().map(|v| v.to_f64()).collect();
        Ok(outcome_summary(req, &d, x, meaning, value.to_f64(), test, (width, W)))
    }
}

/// A problem over the first `rows` training rows of a data set padded with more: every
/// lower-level full-batch call becomes the batch of those rows, and [`Problem::samples`]
/// counts only them, so samplers never draw the padding. Hyper-cleaning reads `x_i` only for
/// the rows of a batch, so the padding rows' weights are never used either: the wrapped
/// problem is the unpadded one, exactly.
pub struct FirstRows<P> {
    /// The padded problem.
    pub inner: P,
    /// Real rows (the first ones).
    pub rows: usize,
}

impl<P> FirstRows<P> {
    fn lower(&self, b: Batch) -> Batch {
        match b {
            Batch::Full => Batch::Range {
                id: 0,
                start: 0,
                len: self.rows as u32,
            },
            other => other,
        }
    }
}

impl<T: Real, P: Problem<T, N, DY>, const N: usize, const DY: usize> Problem<T, N, DY> for FirstRows<P> {
    fn lower_grad(&self, x: &[T; N], y: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), bilevel::Error> {
        self.inner.lower_grad(x, y, self.lower(b), out)
    }
    fn upper_grad(
        &self,
        x: &[T; N],
        y: &[T; DY],
        b: Batch,
        gx: &mut [T; N],
        gy: &mut [T; DY],
    ) -> Result<(), bilevel::Error> {
        self.inner.upper_grad(x, y, b, gx, gy)
    }
    fn lower_hvp(
        &self,
        x: &[T; N],
        y: &[T; DY],
        v: &[T; DY],
        b: Batch,
        out: &mut [T; DY],
    ) -> Result<(), bilevel::Error> {
        self.inner.lower_hvp(x, y, v, self.lower(b), out)
    }
    fn lower_hvp2(
        &self,
        x: &[T; N],
        y: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        b: Batch,
        o1: &mut [T; DY],
        o2: &mut [T; DY],
    ) -> Result<(), bilevel::Error> {
        self.inner.lower_hvp2(x, y, v1, v2, self.lower(b), o1, o2)
    }
    fn lower_cross(
        &self,
        x: &[T; N],
        y: &[T; DY],
        v: &[T; DY],
        b: Batch,
        out: &mut [T; N],
    ) -> Result<(), bilevel::Error> {
        self.inner.lower_cross(x, y, v, self.lower(b), out)
    }
    fn lower_grad_x(&self, x: &[T; N], y: &[T; DY], b: Batch, out: &mut [T; N]) -> Result<(), bilevel::Error> {
        self.inner.lower_grad_x(x, y, self.lower(b), out)
    }
    fn lower_value(&self, x: &[T; N], y: &[T; DY], b: Batch) -> Result<T, bilevel::Error> {
        self.inner.lower_value(x, y, self.lower(b))
    }
    fn upper_value(&self, x: &[T; N], y: &[T; DY], b: Batch) -> Result<T, bilevel::Error> {
        self.inner.upper_value(x, y, b)
    }
    fn samples(&self) -> (usize, usize) {
        (self.rows, self.inner.samples().1)
    }
}

fn hyperclean<T: Real>(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    const W: usize = HYPERCLEAN_WIDTH;
    let (width, _) = width_for(req, &[W])?;
    let files = read_files::<W>(req, width, Target::Classes(10))?;
    let top = files
        .train
        .targets
        .iter()
        .chain(&files.validation.targets)
        .fold(0.0f64, |a, &b| a.max(b)) as usize;
    let classes = if top < 2 { 2 } else { 10 };
    let n = files.train.len();
    let Some(&rows) = HYPERCLEAN_ROWS.iter().find(|&&r| r >= n) else {
        return Err(format!(
            "--problem hyperclean supports at most {} training rows; {} has {n}",
            HYPERCLEAN_ROWS[HYPERCLEAN_ROWS.len() - 1],
            req.train.as_ref().map_or(String::new(), |p| p.display().to_string())
        )
        .into());
    };
    match (classes, rows) {
        (2, 256) => cleaning::<T, 2, 256, { 65 * 2 }>(req, width, files, top + 1),
        (2, _) => cleaning::<T, 2, 2048, { 65 * 2 }>(req, width, files, top + 1),
        (_, 256) => cleaning::<T, 10, 256, { 65 * 10 }>(req, width, files, top + 1),
        (_, _) => cleaning::<T, 10, 2048, { 65 * 10 }>(req, width, files, top + 1),
    }
}

fn cleaning<T: Real, const C: usize, const N: usize, const DY: usize>(
    req: &TuneRequest,
    width: usize,
    mut files: Files<HYPERCLEAN_WIDTH>,
    classes_seen: usize,
) -> Result<TuneSummary, BoxError> {
    const W: usize = HYPERCLEAN_WIDTH;
    let n = files.train.len();
    let settings = params(req.problem, &req.method, 1.0, &req.settings)?;
    let noise = settings.get("noise");
    if !(0.0..=1.0).contains(&noise) {
        return Err(format!("noise = {noise} must be in [0, 1]").into());
    }
    let flipped = if noise > 0.0 {
        files.train.flip_labels(noise, classes_seen.max(2), req.seed)
    } else {
        Vec::new()
    };
    let mut train = Converted::<T, W>::new(&files.train);
    train.rows.resize(N, [T::ZERO; W]);
    train.targets.resize(N, T::ZERO);
    let validation = Converted::<T, W>::new(&files.validation);
    let test = files.test.as_ref().map(Converted::<T, W>::new);
    let l2 = settings.get("l2");
    let inner: HyperCleaning<'_, T, W, C, N, DY> =
        HyperCleaning::new(train.samples()?, validation.samples()?)?.with_l2(T::from_f64(l2))?;
    let p = FirstRows { inner, rows: n };
    let lipschitz = 0.5 * max_row_norm2(&train.rows[..n]) + l2;
    let prm = params(req.problem, &req.method, lipschitz, &req.settings)?;
    let plan = RunPlan {
        iterations: req.iterations,
        seed: req.seed,
        step: req.step,
        radius: req.radius,
        estimates: prm.method.info().estimates,
        bounds: Some((-8.0, 8.0)),
        progress: req.progress,
        tolerance: req.tolerance,
        absolute_tolerance: req.absolute_tolerance,
        label: format!("hyperclean {}", req.method),
        stop: req.stop,
    };
    let x0 = [T::from_f64(req.x0.unwrap_or(0.0)); N];
    let y0 = [T::ZERO; DY];
    let d = run_method(&p, &prm, &plan, x0, y0)?;
    let (value, model) = reference_value(&p, &d.x, &y0, &ReferenceConfig::default())?;
    let test = match &test {
        Some(t) => Some(TestScore {
            loss: HyperCleaning::<T, W, C, N, DY>::loss(&t.samples()?, &model)?.to_f64(),
            metric: "accuracy",
            value: HyperCleaning::<T, W, C, N, DY>::accuracy(&t.samples()?, &model).to_f64(),
        }),
        None => None,
    };
    let x: Vec<f64> = d.x[..n].iter().map(|v| v.to_f64()).collect();
    let mut s = outcome_summary(
        req,
        &d,
        x.clone(),
        "sample weight logits (weight σ(x_i))",
        value.to_f64(),
        test,
        (width, W),
    );
    let list: Vec<String> = flipped.iter().map(|i| i.to_string()).collect();
    s.extra.push(("classes".into(), C.to_string()));
    s.extra.push(("noise".into(), format!("{noise:?}")));
    s.extra.push(("flipped".into(), format!("[{}]", list.join(", "))));
    if !flipped.is_empty() && flipped.len() < n {
        // Probability that a clean row has a larger weight than a flipped one (ties ½).
        let mut ordered = 0.0;
        let clean: Vec<usize> = (0..n).filter(|i| flipped.binary_search(i).is_err()).collect();
        for &c in &clean {
            for &f in &flipped {
                ordered += if x[c] > x[f] {
                    1.0
                } else if x[c] == x[f] {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let auc = ordered / (clean.len() * flipped.len()) as f64;
        s.extra.push(("flipped_auc".into(), format!("{auc:?}")));
        s.notes.push(format!(
            "{} of {n} training labels flipped (seed {}); AUC of clean over flipped weights = {auc:.4}",
            flipped.len(),
            req.seed
        ));
    }
    if classes_seen > 2 && classes_seen < C {
        s.notes.push(format!(
            "{classes_seen} classes in the data; the model has {C} outputs (supported: 2 or 10)"
        ));
    }
    s.notes.push(format!("{n} training rows (compiled for up to {N})"));
    Ok(s)
}

fn meta<T: Real>(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    const W: usize = META_WIDTH;
    let path = required(&req.tasks, "--tasks", req.problem)?;
    let file = read_tasks(path)?;
    if file.features > W {
        return Err(format!(
            "{} has {} features; --problem meta supports at most {W}",
            path.display(),
            file.features
        )
        .into());
    }
    let tasks = file.padded::<W>();
    let test = req.test.as_ref().map(|t| read_tasks(t)).transpose()?;
    if let Some(t) = &test
        && t.features != file.features
    {
        return Err(format!(
            "{} has {} features, the training tasks {}",
            req.test.as_ref().map_or(String::new(), |p| p.display().to_string()),
            t.features,
            file.features
        )
        .into());
    }
    let test = test.map(|t| t.padded::<W>());
    let test = test.as_deref();
    match tasks.len() {
        4 => meta_sized::<T, 4, { 4 * (W + 1) }>(req, file.features, &tasks, test),
        8 => meta_sized::<T, 8, { 8 * (W + 1) }>(req, file.features, &tasks, test),
        16 => meta_sized::<T, 16, { 16 * (W + 1) }>(req, file.features, &tasks, test),
        32 => meta_sized::<T, 32, { 32 * (W + 1) }>(req, file.features, &tasks, test),
        k => Err(format!(
            "{} has {k} tasks; --problem meta is compiled for exactly {:?} tasks",
            path.display(),
            META_TASKS
        )
        .into()),
    }
}

fn meta_sized<T: Real, const TASKS: usize, const DY: usize>(
    req: &TuneRequest,
    features: usize,
    tasks: &[TaskData<META_WIDTH>],
    test: Option<&[TaskData<META_WIDTH>]>,
) -> Result<TuneSummary, BoxError> {
    const W: usize = META_WIDTH;
    const DX: usize = META_WIDTH + 1;
    let data: Vec<(Converted<T, W>, Converted<T, W>)> = tasks
        .iter()
        .map(|t| (Converted::new(&t.support), Converted::new(&t.query)))
        .collect();
    let mut list = Vec::with_capacity(TASKS);
    for (s, q) in &data {
        list.push(Task {
            support: s.samples()?,
            query: q.samples()?,
        });
    }
    let array: [Task<'_, T, W>; TASKS] = list
        .try_into()
        .map_err(|_| "task count differs from the compiled count")?;
    let settings = params(req.problem, &req.method, 1.0, &req.settings)?;
    let lambda = settings.get("lambda");
    let p: MetaLearning<'_, T, W, TASKS, DX, DY> = MetaLearning::new(array, T::from_f64(lambda))?;
    let support_norm = data.iter().map(|(s, _)| max_row_norm2(&s.rows)).fold(0.0, f64::max);
    let lipschitz = (support_norm + lambda) / TASKS as f64;
    let prm = params(req.problem, &req.method, lipschitz, &req.settings)?;
    let plan = RunPlan {
        iterations: req.iterations,
        seed: req.seed,
        step: req.step,
        radius: req.radius,
        estimates: prm.method.info().estimates,
        bounds: None,
        progress: req.progress,
        tolerance: req.tolerance,
        absolute_tolerance: req.absolute_tolerance,
        label: format!("meta {}", req.method),
        stop: req.stop,
    };
    let x0 = [T::from_f64(req.x0.unwrap_or(0.0)); DX];
    let y0 = [T::ZERO; DY];
    let d = run_method(&p, &prm, &plan, x0, y0)?;
    let value = p.value(&d.x)?.to_f64();
    let test = match test {
        Some(tasks) => {
            let (mut loss, mut res, mut tot, mut rows) = (0.0, 0.0, 0.0, 0usize);
            let mut targets = Vec::new();
            for t in tasks {
                let (s, q) = (Converted::<T, W>::new(&t.support), Converted::<T, W>::new(&t.query));
                let task = Task {
                    support: s.samples()?,
                    query: q.samples()?,
                };
                let y = p.adapt(&task, &d.x)?;
                loss += Ridge::<T, W, 1, DX>::loss(&task.query, &y)?.to_f64();
                for (r, &target) in q.rows.iter().zip(&q.targets) {
                    let pred = y[W].to_f64() + r.iter().zip(&y).map(|(a, w)| a.to_f64() * w.to_f64()).sum::<f64>();
                    res += sq(target.to_f64() - pred);
                    targets.push(target.to_f64());
                    rows += 1;
                }
            }
            let mean = targets.iter().sum::<f64>() / rows.max(1) as f64;
            for v in &targets {
                tot += sq(v - mean);
            }
            Some(TestScore {
                loss: loss / tasks.len() as f64,
                metric: "r2",
                value: if tot > 0.0 { 1.0 - res / tot } else { f64::NAN },
            })
        }
        None => None,
    };
    let mut x: Vec<f64> = d.x[..features].iter().map(|v| v.to_f64()).collect();
    x.push(d.x[W].to_f64());
    let mut s = outcome_summary(req, &d, x, "prior weights, then bias", value, test, (features, W));
    s.extra.push(("tasks".into(), TASKS.to_string()));
    s.extra.push(("lambda".into(), format!("{lambda:?}")));
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// Output.

fn json_number(v: f64) -> String {
    if v.is_finite() { format!("{v:?}") } else { "null".into() }
}

impl TuneSummary {
    /// The machine-readable summary.
    pub fn to_json(&self) -> String {
        let c = &self.oracle_calls;
        let x: Vec<String> = self.x.iter().map(|&v| json_number(v)).collect();
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"problem\": \"{}\",", self.problem);
        let _ = writeln!(s, "  \"method\": \"{}\",", self.method);
        let _ = writeln!(s, "  \"precision\": \"{}\",", self.precision);
        let _ = writeln!(s, "  \"status\": {:?},", self.status);
        let _ = writeln!(s, "  \"iterations\": {},", self.iterations);
        let _ = writeln!(
            s,
            "  \"oracle_calls\": {{\"lower_grad\": {}, \"upper_grad\": {}, \"lower_hvp\": {}, \"lower_cross\": {}, \"lower_grad_x\": {}, \"lower_value\": {}, \"upper_value\": {}}},",
            c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross, c.lower_grad_x, c.lower_value, c.upper_value
        );
        let _ = writeln!(s, "  \"x\": [{}],", x.join(", "));
        let _ = writeln!(s, "  \"x_meaning\": \"{}\",", self.x_meaning);
        let _ = writeln!(s, "  \"upper_value\": {},", json_number(self.upper_value));
        let _ = writeln!(s, "  \"hypergradient_norm\": {},", json_number(self.hypergradient_norm));
        let _ = writeln!(
            s,
            "  \"relative_hypergradient_norm\": {},",
            json_number(self.relative_hypergradient_norm)
        );
        if let Some(t) = self.test {
            let _ = writeln!(
                s,
                "  \"test\": {{\"loss\": {}, \"{}\": {}}},",
                json_number(t.loss),
                t.metric,
                json_number(t.value)
            );
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "  \"{k}\": {v},");
        }
        let _ = writeln!(
            s,
            "  \"features\": {}, \"compiled_width\": {},",
            self.features.0, self.features.1
        );
        let _ = writeln!(s, "  \"wall_time_s\": {:?}", self.wall_time_s);
        s.push_str("}\n");
        s
    }

    /// The trace as CSV: one row per outer step.
    pub fn trace_csv(&self) -> String {
        let exact = self.trace.iter().any(|r| !r.exact_value.is_nan());
        let mut s = String::from("iteration,hypergradient_norm,validation_loss,oracle_calls,seconds");
        s.push_str(if exact {
            ",exact_value,exact_gradient_norm\n"
        } else {
            "\n"
        });
        for r in &self.trace {
            let _ = write!(
                s,
                "{},{:?},{:?},{},{:?}",
                r.iteration, r.hypergradient_norm, r.validation_loss, r.oracle_calls, r.seconds
            );
            if exact {
                let _ = write!(s, ",{:?},{:?}", r.exact_value, r.exact_gradient_norm);
            }
            s.push('\n');
        }
        s
    }
}

/// Runs `f` on a thread with a large stack: the solvers keep their state in fixed-size
/// arrays (a dense BFGS matrix of the 10-class hyper-cleaning model alone is 3.4 MB).
pub fn with_large_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(f)
        .expect("spawning the solver thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
