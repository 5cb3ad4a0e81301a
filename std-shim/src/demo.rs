//! `bilevel demo`: tunes the L2 strength of logistic regression on the bundled breast-cancer
//! data — the zero-argument tour of the library.

use std::ops::ControlFlow;

use bilevel::Problem;
use bilevel::problem::{Counted, OracleCounts};
use bilevel::problems::{Logistic, Samples};
use bilevel::reference::{ReferenceConfig, reference_value};
use bilevel::registry::{Method, Settings, Start, Visit};
use bilevel::run::{Adaptive, Budget, Driver, Outcome, RunReport, Solver, Stopping};

use crate::data::{Dataset, Standardizer};
use crate::datasets;

/// Features of the breast-cancer data.
pub const FEATURES: usize = 30;
/// Weights and bias.
pub const DY: usize = FEATURES + 1;

/// Train / validation / test rows of the demo's split (60 / 20 / 20 %).
pub const SPLIT: (usize, usize) = (341, 114);
/// The demo's split seed.
pub const SEED: u64 = 2026;

/// The three parts of a split, standardized with the training statistics.
#[derive(Clone, Debug)]
pub struct Split<const D: usize> {
    /// Lower-level data.
    pub train: Dataset<D>,
    /// Upper-level data.
    pub validation: Dataset<D>,
    /// Held out.
    pub test: Dataset<D>,
    /// The transform (fitted on `train`).
    pub standardizer: Standardizer<D>,
}

/// The breast-cancer data split with `seed` and standardized.
pub fn breast_cancer_split(seed: u64) -> Result<Split<FEATURES>, Box<dyn std::error::Error>> {
    let data = datasets::breast_cancer()?;
    let (train, validation, test) = data.split(SPLIT.0, SPLIT.1, seed);
    let standardizer = Standardizer::fit(&train);
    Ok(Split {
        train: standardizer.apply(&train),
        validation: standardizer.apply(&validation),
        test: standardizer.apply(&test),
        standardizer,
    })
}

/// The result of tuning.
#[derive(Clone, Debug)]
pub struct Tuned {
    /// `ln λ`.
    pub ln_lambda: f64,
    /// The trained model `[w, b]` at that λ.
    pub model: [f64; DY],
    /// Validation loss `F(ln λ)`.
    pub validation_loss: f64,
    /// Test loss and accuracy of the model.
    pub test_loss: f64,
    /// Fraction of test rows classified right.
    pub test_accuracy: f64,
    /// Outer iterations, holds included.
    pub iterations: u32,
    /// The iterations that moved `ln λ` (the others held it while the lower level caught up).
    pub moves: u32,
    /// Why the run ended.
    pub outcome: Outcome,
    /// Oracle calls.
    pub oracle_calls: OracleCounts,
}

fn samples<const D: usize>(d: &Dataset<D>) -> Samples<'_, f64, D> {
    Samples {
        features: &d.rows,
        targets: &d.targets,
    }
}

/// The logistic problem of a split (one L2 strength).
pub fn problem(split: &Split<FEATURES>) -> Result<Logistic<'_, f64, FEATURES, 1, DY>, bilevel::Error> {
    Logistic::new(
        Samples::new(&split.train.rows, &split.train.targets)?,
        Samples::new(&split.validation.rows, &split.validation.targets)?,
    )
}

/// Validation loss at `ln λ` with the lower level solved to tolerance.
pub fn validation_loss(split: &Split<FEATURES>, ln_lambda: f64) -> Result<f64, bilevel::Error> {
    Ok(reference_value(&problem(split)?, &[ln_lambda], &[0.0; DY], &ReferenceConfig::default())?.0)
}

/// The demo's method: qNBO with dense BFGS, no Hessian-vector product.
pub const METHOD: Method = Method::QnboBfgs;

/// Tunes `ln λ` from `ln λ = 0` with [`METHOD`] and the library's defaults ([`tune_with`]).
pub fn tune(split: &Split<FEATURES>) -> Result<Tuned, bilevel::Error> {
    tune_with(split, METHOD)
}

/// Tunes `ln λ` from `ln λ = 0` with `method` and the library's defaults, as `bilevel tune`
/// runs it: settings from the data (steps `1/L`), the scale-free outer step, inner tracking,
/// the relative tolerance 1e-6 and a cap of 5000 iterations.
pub fn tune_with(split: &Split<FEATURES>, method: Method) -> Result<Tuned, bilevel::Error> {
    let p = problem(split)?;
    let settings = Settings::new(method, p.lower_smoothness(&[0.0]));
    let start = Start::new([0.0; DY], p.samples(), 1);
    let run = method.build(&settings, &start, Defaults(&p, method))??;
    let model = run.model;
    let validation_loss = Logistic::<f64, FEATURES, 1, DY>::loss(&samples(&split.validation), &model)?;
    let test = samples(&split.test);
    Ok(Tuned {
        ln_lambda: run.x[0],
        model,
        validation_loss,
        test_loss: Logistic::<f64, FEATURES, 1, DY>::loss(&test, &model)?,
        test_accuracy: Logistic::<f64, FEATURES, 1, DY>::accuracy(&test, &model),
        iterations: run.report.iterations,
        moves: run.report.iterations - run.held,
        outcome: run.report.outcome,
        oracle_calls: run.report.oracle_calls,
    })
}

/// A finished run of the demo.
struct Run {
    x: [f64; 1],
    model: [f64; DY],
    report: RunReport<f64>,
    held: u32,
}

/// Runs the solver it is handed with the defaults of its method's estimates.
struct Defaults<'a, P>(&'a P, Method);

impl<P: Problem<f64, 1, DY>> Visit<f64, 1, DY> for Defaults<'_, P> {
    type Output = Result<Run, bilevel::Error>;

    fn visit<S: Solver<f64, 1, DY>>(self, mut solver: S) -> Self::Output {
        let estimates = self.1.info().estimates;
        let theta = estimates.default_tracking();
        let mut driver = Driver::adaptive(
            Adaptive::for_estimates(estimates, theta, 1.0),
            Some((-12.0, 12.0)),
            Budget::iterations(5000),
            Stopping::relative(1e-6),
        )?
        .tracking(theta)?;
        let (mut x, mut held) = ([0.0], 0);
        let report = driver.run(&mut solver, &Counted::new(self.0), &mut x, |r, _, _| {
            held += u32::from(r.held);
            ControlFlow::Continue(())
        })?;
        Ok(Run {
            x,
            model: *solver.lower(),
            report,
            held,
        })
    }
}
