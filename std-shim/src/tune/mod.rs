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
//!   the capacity and the hook [`bilevel::hook::FirstRows`] restricts every lower-level
//!   oracle to the real ones, so the padding is never read.
//! - `meta`: [`META_WIDTH`] features (zero-padded; the prior's padded weights stay 0) and
//!   from 2 up to the largest of [`META_TASKS`] tasks: a file's tasks are placed in the next
//!   compiled count and `MetaLearning::first_tasks` keeps the remaining places out of every
//!   oracle, so `F` is the file's.
//!
//! Every method is built from the registry and stepped by the core's driver ([`runner`]);
//! the rooms: [`settings`], [`files`], [`problems`], [`runner`], [`output`].

use std::path::PathBuf;

use bilevel::problem::OracleCounts;
use bilevel::scalar::Real;

use crate::data::Target;
use crate::formats::ReadOptions;

/// The error type of the command-line operations.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Feature widths of logistic and ridge regression; data is zero-padded to the next one.
/// Each width compiles every method three times (two precisions), so the ladder is sparse
/// above 64: a file of 65–256 features pays at most 4× its width in row products.
pub const WIDTHS: [usize; 5] = [8, 32, 64, 256, 1024];
/// Feature width of hyper-cleaning.
pub const HYPERCLEAN_WIDTH: usize = 64;
/// Class counts of hyper-cleaning (data with 3 to 9 classes uses the 10-class model).
pub const HYPERCLEAN_CLASSES: [usize; 2] = [2, 10];
/// Training-row capacities of hyper-cleaning (one weight per row; padded).
pub const HYPERCLEAN_ROWS: [usize; 2] = [256, 2048];
/// Feature width of meta-learning.
pub const META_WIDTH: usize = 8;
/// Task capacities of meta-learning: a file's tasks go into the smallest that holds them.
pub const META_TASKS: [usize; 3] = [8, 32, 128];
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
    /// Inner tracking ratio ([`bilevel::run::Driver::tracking`]); `None`: the method's
    /// default ([`bilevel::registry::Estimates::default_tracking`]).
    pub tracking: Option<f64>,
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
    /// How to read the data files (format, header).
    pub read: ReadOptions,
    /// The CSV trace, written a row per outer step as the run goes (a stopped run keeps the
    /// steps it took).
    pub trace: Option<PathBuf>,
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
            iterations: 5000,
            seed: 1,
            step: None,
            radius: 1.0,
            tracking: None,
            x0: None,
            settings: Vec::new(),
            precision: Precision::F64,
            progress: false,
            stop: None,
            tolerance: 1e-6,
            absolute_tolerance: 0.0,
            read: ReadOptions::default(),
            trace: None,
        }
    }
}

/// One row of the trace.
#[derive(Clone, Debug)]
pub struct TraceRow {
    /// Outer iteration.
    pub iteration: u32,
    /// `x` was held: the inner state had not caught up (`--tracking`).
    pub held: bool,
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

/// One data file as read.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// `train`, `validation` or `test`.
    pub role: &'static str,
    /// The path given.
    pub file: String,
    /// What it turned out to be (format, separator, header).
    pub layout: String,
    /// Data rows.
    pub rows: usize,
    /// Features per row.
    pub features: usize,
    /// Distinct classes among its labels (`None` for a real target).
    pub classes: Option<usize>,
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
    /// The lower level's residual `‖∇_y g‖` at the solver's iterate when last measured, over
    /// its value at the start (NaN when never measured: no relative tolerance, no tracking).
    pub relative_lower_residual: f64,
    /// Iterations that held `x` while the inner state caught up.
    pub held_iterations: u32,
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
    /// The data files as read.
    pub data: Vec<FileReport>,
    /// `label → class` when the files' labels are not class indices.
    pub labels: Vec<(String, usize)>,
    /// Degenerate data that the run went on with.
    pub warnings: Vec<String>,
}

impl TuneSummary {
    /// `true` unless the run failed.
    pub fn ok(&self) -> bool {
        !self.status.starts_with("failed")
    }

    /// `true` when the run met its tolerance or its target.
    pub fn finished(&self) -> bool {
        self.status == "converged" || self.status == "target"
    }
}

mod files;
mod output;
mod problems;
mod runner;
mod settings;

use crate::run_files::{DataFiles, Standardized};
use files::{Converted, describe, r2, read_user_files, required, sq};
use problems::{hyperclean, meta, regression};
use runner::{RunPlan, RunResult, run_method};

pub use settings::{Params, method_list, methods_table, params, parse_setting, problem_defaults};

/// Runs the request.
pub fn tune(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    // Reject unknown methods and keys, and flags the problem does not read, before reading
    // any data.
    params(req.problem, &req.method, 1.0, &req.settings)?;
    check_flags(req)?;
    match req.precision {
        Precision::F64 => tune_in::<f64>(req),
        Precision::F32 => tune_in::<f32>(req),
    }
}

/// A flag the problem does not read is an error, not silently ignored.
fn check_flags(req: &TuneRequest) -> Result<(), BoxError> {
    let name = req.problem.name();
    if req.problem != ProblemKind::Meta {
        if req.tasks.is_some() {
            return Err(format!("--tasks applies to --problem meta only, not {name}").into());
        }
        return Ok(());
    }
    let given = [(req.train.is_some(), "--train"), (req.validation.is_some(), "--val")];
    if let Some((_, flag)) = given.iter().find(|(g, _)| *g) {
        return Err(format!("--problem meta reads --tasks (and --test for test tasks); {flag} does not apply").into());
    }
    if req.read != ReadOptions::default() {
        return Err("--format, --header and --no-header do not apply to --problem meta's task files".into());
    }
    Ok(())
}

/// The compiled width for `files`, the first of `widths` that holds them.
fn width_for(req: &TuneRequest, files: &DataFiles, widths: &[usize]) -> Result<usize, BoxError> {
    let width = files.features;
    widths.iter().copied().find(|&w| w >= width).ok_or_else(|| {
        let hint = if req.problem == ProblemKind::HyperClean {
            format!("logreg and ridge take up to {} features", WIDTHS[WIDTHS.len() - 1])
        } else {
            "select or combine features (e.g. principal components) to fewer".to_string()
        };
        format!(
            "{} has {width} features; --problem {} supports at most {} ({hint})",
            files.train.file,
            req.problem.name(),
            widths[widths.len() - 1]
        )
        .into()
    })
}

fn tune_in<T: Real>(req: &TuneRequest) -> Result<TuneSummary, BoxError> {
    use ProblemKind::*;
    match req.problem {
        Logreg | LogregPerFeature | Ridge => {
            let target = if req.problem == Ridge {
                Target::Real
            } else {
                Target::Classes(2)
            };
            let files = read_user_files(req, target)?;
            match (width_for(req, &files, &WIDTHS)?, req.problem) {
                (8, Logreg) => regression::<T, 8, 1, 9>(req, &files),
                (8, LogregPerFeature) => regression::<T, 8, 8, 9>(req, &files),
                (8, _) => regression::<T, 8, 1, 9>(req, &files),
                (32, Logreg) => regression::<T, 32, 1, 33>(req, &files),
                (32, LogregPerFeature) => regression::<T, 32, 32, 33>(req, &files),
                (32, _) => regression::<T, 32, 1, 33>(req, &files),
                (64, Logreg) => regression::<T, 64, 1, 65>(req, &files),
                (64, LogregPerFeature) => regression::<T, 64, 64, 65>(req, &files),
                (64, _) => regression::<T, 64, 1, 65>(req, &files),
                (256, Logreg) => regression::<T, 256, 1, 257>(req, &files),
                (256, LogregPerFeature) => regression::<T, 256, 256, 257>(req, &files),
                (256, _) => regression::<T, 256, 1, 257>(req, &files),
                (_, Logreg) => regression::<T, 1024, 1, 1025>(req, &files),
                (_, LogregPerFeature) => regression::<T, 1024, 1024, 1025>(req, &files),
                (_, _) => regression::<T, 1024, 1, 1025>(req, &files),
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
        relative_lower_residual: d.relative_lower_residual,
        held_iterations: d.held_iterations,
        test,
        wall_time_s: d.seconds,
        features,
        trace: d.trace.clone(),
        extra: Vec::new(),
        notes: Vec::new(),
        data: Vec::new(),
        labels: Vec::new(),
        warnings: Vec::new(),
    }
}

fn precision_name<T: Real>() -> &'static str {
    if T::EPSILON.to_f64() > 1e-10 { "f32" } else { "f64" }
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
