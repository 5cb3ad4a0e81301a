//! `bilevel tune`: any method on logistic regression read from CSV files, with a JSON
//! summary and a per-step CSV trace.
//!
//! Feature dimensions are compile-time constants in the core: a file with `d` features is
//! zero-padded to the next supported width ([`WIDTHS`]). Zero columns change nothing: their
//! weights stay 0 and so do their hypergradient entries.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::itd::{ItdConfig, ItdReverse};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::algo::nsbo::{Nsbo, NsboConfig};
use bilevel::algo::qnbo::{QnboBfgs, QnboConfig, QnboLbfgs, QnboSr1};
use bilevel::algo::shine::{Shine, ShineConfig};
use bilevel::algo::soba::{Soba, SobaConfig};
use bilevel::algo::stocbio::{StocBio, StocBioConfig};
use bilevel::problem::{Counted, OracleCounts};
use bilevel::problems::{Logistic, Samples};
use bilevel::reference::{ReferenceConfig, ReferenceSolver, reference_value};
use bilevel::run::{Budget, Outcome, Outer, Solver, StepReport, run};
use bilevel::sample::{Minibatches, Order};
use bilevel::schedule::Schedule;

use crate::data::{DataError, DataErrorKind, Dataset, Standardizer, Target, parse_csv};

/// Feature widths the command line is compiled for; data is zero-padded to the next one.
pub const WIDTHS: [usize; 3] = [8, 32, 64];

/// Every method name `--method` accepts.
pub const METHODS: [&str; 14] = [
    "reference",
    "qnbo-bfgs",
    "qnbo-sr1",
    "qnbo-lbfgs",
    "shine",
    "nbo-gd",
    "nbo-cg",
    "nsbo-sgd",
    "aid-cg",
    "aid-neumann",
    "itd",
    "amigo-gd",
    "amigo-cg",
    "soba",
];

/// Also accepted, stochastic: `stocbio`.
const MORE_METHODS: [&str; 1] = ["stocbio"];

/// The problem to tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// One L2 strength.
    Logreg,
    /// One L2 strength per feature.
    LogregPerFeature,
}

impl ProblemKind {
    /// The stable command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Logreg => "logreg",
            ProblemKind::LogregPerFeature => "logreg-per-feature",
        }
    }
}

/// What `bilevel tune` was asked to do.
#[derive(Clone, Debug)]
pub struct TuneRequest {
    /// The problem.
    pub problem: ProblemKind,
    /// Training CSV (lower level).
    pub train: PathBuf,
    /// Validation CSV (upper level).
    pub validation: PathBuf,
    /// Optional test CSV.
    pub test: Option<PathBuf>,
    /// Method name (one of [`METHODS`]).
    pub method: String,
    /// Outer iterations at most.
    pub iterations: u32,
    /// Seed of stochastic methods.
    pub seed: u64,
    /// Outer step on `ln λ`.
    pub step: f64,
    /// Starting `ln λ`.
    pub x0: f64,
}

/// One row of the trace.
#[derive(Clone, Debug)]
pub struct TraceRow {
    /// Outer iteration.
    pub iteration: u32,
    /// `‖h‖` of the estimate used.
    pub hypergradient_norm: f64,
    /// Oracle calls so far (all kinds).
    pub oracle_calls: u64,
    /// Seconds since the start.
    pub seconds: f64,
}

/// The result, as printed and written to JSON.
#[derive(Clone, Debug)]
pub struct TuneSummary {
    /// Problem name.
    pub problem: &'static str,
    /// Method name.
    pub method: String,
    /// How the run ended.
    pub status: &'static str,
    /// Outer iterations.
    pub iterations: u32,
    /// Oracle calls by kind.
    pub oracle_calls: OracleCounts,
    /// Tuned hyperparameters (`ln λ`, one per feature of the file for the per-feature problem).
    pub x: Vec<f64>,
    /// Validation loss at `x` with the lower level solved to tolerance.
    pub upper_value: f64,
    /// Norm of the last hypergradient estimate.
    pub hypergradient_norm: f64,
    /// Test loss and accuracy when a test file was given.
    pub test: Option<(f64, f64)>,
    /// Wall time of the run.
    pub wall_time_s: f64,
    /// Features in the files and the compiled width used.
    pub features: (usize, usize),
    /// One row per outer step.
    pub trace: Vec<TraceRow>,
}

/// Reads a CSV of any width (binary labels) into rows padded to `W` columns.
fn read_padded<const W: usize>(path: &PathBuf, width: usize) -> Result<Dataset<W>, DataError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DataError {
        file: name.clone(),
        line: 0,
        column: 0,
        kind: DataErrorKind::Io(e.to_string()),
    })?;
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
    parse_csv::<W>(&name, &padded, Target::Classes(2)).map_err(|mut e| {
        // Columns beyond the padding point keep their positions in the original line.
        if let DataErrorKind::ColumnCount { expected, found } = e.kind {
            e.kind = DataErrorKind::ColumnCount {
                expected: expected - (W - width),
                found: found - (W - width),
            };
        }
        e
    })
}

/// Features of a CSV file: the header's field count minus the label.
fn width_of(path: &PathBuf) -> Result<usize, DataError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DataError {
        file: name.clone(),
        line: 0,
        column: 0,
        kind: DataErrorKind::Io(e.to_string()),
    })?;
    let header = text.lines().find(|l| !l.trim().is_empty()).ok_or(DataError {
        file: name,
        line: 0,
        column: 0,
        kind: DataErrorKind::Empty,
    })?;
    Ok(header.split(',').count().saturating_sub(1).max(1))
}

/// Runs the request.
pub fn tune(req: &TuneRequest) -> Result<TuneSummary, Box<dyn std::error::Error>> {
    if !METHODS.contains(&req.method.as_str()) && !MORE_METHODS.contains(&req.method.as_str()) {
        return Err(format!("unknown method {:?}; one of: {}", req.method, METHODS.join(", ")).into());
    }
    let width = width_of(&req.train)?;
    let Some(&w) = WIDTHS.iter().find(|&&w| w >= width) else {
        return Err(format!(
            "{} has {width} features; at most {} are supported",
            req.train.display(),
            WIDTHS[2]
        )
        .into());
    };
    match (w, req.problem) {
        (8, ProblemKind::Logreg) => sized::<8, 1, 9>(req, width),
        (8, ProblemKind::LogregPerFeature) => sized::<8, 8, 9>(req, width),
        (32, ProblemKind::Logreg) => sized::<32, 1, 33>(req, width),
        (32, ProblemKind::LogregPerFeature) => sized::<32, 32, 33>(req, width),
        (_, ProblemKind::Logreg) => sized::<64, 1, 65>(req, width),
        (_, ProblemKind::LogregPerFeature) => sized::<64, 64, 65>(req, width),
    }
}

fn samples<const W: usize>(d: &Dataset<W>) -> Samples<'_, f64, W> {
    Samples {
        features: &d.rows,
        targets: &d.targets,
    }
}

fn sized<const W: usize, const DX: usize, const DY: usize>(
    req: &TuneRequest,
    width: usize,
) -> Result<TuneSummary, Box<dyn std::error::Error>> {
    let train = read_padded::<W>(&req.train, width)?;
    let validation = read_padded::<W>(&req.validation, width)?;
    let test = req.test.as_ref().map(|t| read_padded::<W>(t, width)).transpose()?;
    let standardizer = Standardizer::fit(&train);
    let (train, validation) = (standardizer.apply(&train), standardizer.apply(&validation));
    let test = test.map(|t| standardizer.apply(&t));
    let problem: Logistic<'_, f64, W, DX, DY> =
        Logistic::new(Samples::new(&train.rows, &train.targets)?, samples(&validation))?;
    let x0 = [req.x0; DX];
    let beta = 1.0 / problem.lower_lipschitz(&x0);
    let y0 = [0.0; DY];
    let [lower, upper] = Minibatches::for_levels((train.len(), validation.len()), 32, Order::Shuffled, req.seed)?;
    let qnbo = QnboConfig {
        warmup_step: beta,
        ..QnboConfig::default()
    };
    let outcome = match req.method.as_str() {
        "reference" => go(req, &problem, ReferenceSolver::new(ReferenceConfig::default(), y0), x0),
        "qnbo-bfgs" => go(req, &problem, QnboBfgs::new(qnbo, y0), x0),
        "qnbo-sr1" => go(req, &problem, QnboSr1::<f64, DY, 34>::new(qnbo, y0), x0),
        "qnbo-lbfgs" => go(req, &problem, QnboLbfgs::<f64, DY, 8>::new(qnbo, y0), x0),
        "shine" => go(req, &problem, Shine::<f64, DY, 8>::new(ShineConfig::default(), y0), x0),
        "nbo-gd" => go(req, &problem, Nbo::new(NboConfig::gradient_descent(beta, 1), y0), x0),
        "nbo-cg" => go(req, &problem, Nbo::new(NboConfig::conjugate_gradient(5), y0), x0),
        "nsbo-sgd" => go(
            req,
            &problem,
            Nsbo::new(NsboConfig::constant(beta, 1), y0, lower.clone(), upper.clone()),
            x0,
        ),
        "aid-cg" => go(
            req,
            &problem,
            Aid::new(AidConfig::conjugate_gradient(beta, 10, 10), y0),
            x0,
        ),
        "aid-neumann" => go(req, &problem, Aid::new(AidConfig::neumann(beta, 10, beta, 50), y0), x0),
        "itd" => go(
            req,
            &problem,
            ItdReverse::<f64, DY, 50>::new(
                ItdConfig {
                    lower_step: beta,
                    lower_steps: 50,
                },
                y0,
            ),
            x0,
        ),
        "amigo-gd" => go(req, &problem, Aid::new(AidConfig::amigo_gd(beta, 10, 10), y0), x0),
        "amigo-cg" => go(req, &problem, Aid::new(AidConfig::amigo_cg(beta, 10, 10), y0), x0),
        "soba" => {
            let cfg = SobaConfig::soba(Schedule::Constant(beta));
            go(req, &problem, Soba::new(cfg, y0, lower.clone(), upper.clone()), x0)
        }
        _ => {
            let cfg = StocBioConfig {
                lower_step: Schedule::Constant(beta),
                neumann_step: beta,
                ..StocBioConfig::default()
            };
            go(req, &problem, StocBio::new(cfg, y0, lower.clone(), upper.clone()), x0)
        }
    }?;
    let (value, model) = reference_value(&problem, &outcome.x, &[0.0; DY], &ReferenceConfig::default())?;
    let test = match &test {
        Some(t) => Some((
            Logistic::<f64, W, DX, DY>::loss(&samples(t), &model)?,
            Logistic::<f64, W, DX, DY>::accuracy(&samples(t), &model),
        )),
        None => None,
    };
    let used = if DX == 1 { 1 } else { width };
    Ok(TuneSummary {
        problem: req.problem.name(),
        method: req.method.clone(),
        status: match outcome.report_outcome {
            Outcome::Converged => "converged",
            Outcome::IterationBudget => "iteration budget",
            Outcome::OracleBudget => "oracle budget",
            Outcome::Stopped => "stopped",
        },
        iterations: outcome.iterations,
        oracle_calls: outcome.calls,
        x: outcome.x[..used].to_vec(),
        upper_value: value,
        hypergradient_norm: outcome.hypergradient_norm,
        test,
        wall_time_s: outcome.seconds,
        features: (width, W),
        trace: outcome.trace,
    })
}

/// What one run produced.
struct Driven<const DX: usize, const DY: usize> {
    x: [f64; DX],
    iterations: u32,
    report_outcome: Outcome,
    calls: OracleCounts,
    hypergradient_norm: f64,
    seconds: f64,
    trace: Vec<TraceRow>,
}

fn go<P, S, const DX: usize, const DY: usize>(
    req: &TuneRequest,
    problem: &P,
    mut solver: S,
    x0: [f64; DX],
) -> Result<Driven<DX, DY>, bilevel::Error>
where
    P: bilevel::Problem<f64, DX, DY>,
    S: Solver<f64, DX, DY>,
{
    let counted = Counted::new(problem);
    let mut x = x0;
    let outer = Outer {
        schedule: Schedule::Constant(req.step),
        bounds: Some((-12.0, 12.0)),
    };
    let start = Instant::now();
    let mut trace = Vec::new();
    let report = run(
        &mut solver,
        &counted,
        &mut x,
        &outer,
        Budget::iterations(req.iterations),
        1e-9,
        |s: &StepReport<f64>, _| {
            trace.push(TraceRow {
                iteration: s.iteration,
                hypergradient_norm: s.hypergradient_norm,
                oracle_calls: s.oracle_calls.total(),
                seconds: start.elapsed().as_secs_f64(),
            });
            ControlFlow::Continue(())
        },
    )?;
    Ok(Driven {
        x,
        iterations: report.iterations,
        report_outcome: report.outcome,
        calls: report.oracle_calls,
        hypergradient_norm: report.hypergradient_norm,
        seconds: start.elapsed().as_secs_f64(),
        trace,
    })
}

impl TuneSummary {
    /// The machine-readable summary.
    pub fn to_json(&self) -> String {
        let c = &self.oracle_calls;
        let x: Vec<String> = self.x.iter().map(|v| format!("{v:?}")).collect();
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"problem\": \"{}\",", self.problem);
        let _ = writeln!(s, "  \"method\": \"{}\",", self.method);
        let _ = writeln!(s, "  \"status\": \"{}\",", self.status);
        let _ = writeln!(s, "  \"iterations\": {},", self.iterations);
        let _ = writeln!(
            s,
            "  \"oracle_calls\": {{\"lower_grad\": {}, \"upper_grad\": {}, \"lower_hvp\": {}, \"lower_cross\": {}, \"lower_grad_x\": {}, \"lower_value\": {}, \"upper_value\": {}}},",
            c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross, c.lower_grad_x, c.lower_value, c.upper_value
        );
        let _ = writeln!(s, "  \"x\": [{}],", x.join(", "));
        let _ = writeln!(s, "  \"upper_value\": {:?},", self.upper_value);
        let _ = writeln!(s, "  \"hypergradient_norm\": {:?},", self.hypergradient_norm);
        if let Some((loss, accuracy)) = self.test {
            let _ = writeln!(s, "  \"test\": {{\"loss\": {loss:?}, \"accuracy\": {accuracy:?}}},");
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
        let mut s = String::from("iteration,hypergradient_norm,oracle_calls,seconds\n");
        for r in &self.trace {
            let _ = writeln!(
                s,
                "{},{:?},{},{:?}",
                r.iteration, r.hypergradient_norm, r.oracle_calls, r.seconds
            );
        }
        s
    }
}
