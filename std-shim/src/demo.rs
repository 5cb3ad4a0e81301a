//! `bilevel demo`: tunes the L2 strength of logistic regression on the bundled breast-cancer
//! data — the zero-argument tour of the library.

use std::ops::ControlFlow;

use bilevel::algo::qnbo::{QnboBfgs, QnboConfig};
use bilevel::problem::{Counted, OracleCounts};
use bilevel::problems::{Logistic, Samples};
use bilevel::reference::{ReferenceConfig, reference_value};
use bilevel::run::{Budget, Outcome, Outer, run};
use bilevel::schedule::Schedule;

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
    /// Outer iterations and why they stopped.
    pub iterations: u32,
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

/// Tunes `ln λ` from `ln λ = 0` by steps of 20 on qNBO-BFGS's hypergradient (default
/// configuration, warm-up steps of 0.5) until `|h| ≤ 1e-10`.
pub fn tune(split: &Split<FEATURES>) -> Result<Tuned, bilevel::Error> {
    let p = Counted::new(problem(split)?);
    let config = QnboConfig {
        warmup_step: 0.5,
        ..QnboConfig::default()
    };
    let mut solver = QnboBfgs::<f64, DY>::new(config, [0.0; DY]);
    let mut x = [0.0];
    let outer = Outer {
        schedule: Schedule::Constant(20.0),
        bounds: Some((-12.0, 12.0)),
    };
    let report = run(
        &mut solver,
        &p,
        &mut x,
        &outer,
        Budget::iterations(3000),
        1e-10,
        |_, _| ControlFlow::Continue(()),
    )?;
    let model = *solver.lower();
    let validation_loss = Logistic::<f64, FEATURES, 1, DY>::loss(&samples(&split.validation), &model)?;
    let test = samples(&split.test);
    Ok(Tuned {
        ln_lambda: x[0],
        model,
        validation_loss,
        test_loss: Logistic::<f64, FEATURES, 1, DY>::loss(&test, &model)?,
        test_accuracy: Logistic::<f64, FEATURES, 1, DY>::accuracy(&test, &model),
        iterations: report.iterations,
        outcome: report.outcome,
        oracle_calls: report.oracle_calls,
    })
}
