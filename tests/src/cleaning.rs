//! Data hyper-cleaning on the bundled digits (8×8, 10 classes): half of the training labels
//! flipped, one weight `σ(x_i)` per training sample tuned by NSBO-SGD on minibatches against
//! a clean validation set. Shared by the `hyper_cleaning` example and its test.

use bilevel::algo::nsbo::{Nsbo, NsboConfig};
use bilevel::problem::Counted;
use bilevel::problem::OracleCounts;
use bilevel::problems::{HyperCleaning, Samples};
use bilevel::reference::{ReferenceConfig, solve_lower};
use bilevel::run::{Outer, step};
use bilevel::sample::{Minibatches, Order};
use bilevel::schedule::Schedule;
use bilevel_std::data::{Dataset, Standardizer};
use bilevel_std::datasets;

/// Pixels per image.
pub const D: usize = 64;
/// Classes.
pub const C: usize = 10;
/// Training rows (one weight each).
pub const N: usize = 300;
/// Model size: weights and a bias per class.
pub const DY: usize = (D + 1) * C;
/// Validation rows (clean labels).
pub const VALIDATION: usize = 300;

/// What the run measured.
#[derive(Clone, Debug)]
pub struct CleaningReport {
    /// Test accuracy of the model trained with uniform weights on the noisy labels.
    pub uniform_accuracy: f64,
    /// Test accuracy with the tuned weights.
    pub tuned_accuracy: f64,
    /// Test accuracy trained on the clean rows only.
    pub clean_only_accuracy: f64,
    /// Probability that a clean row gets a larger weight than a flipped one (AUC).
    pub auc: f64,
    /// Flipped training rows.
    pub flipped: usize,
    /// Outer iterations.
    pub iterations: u32,
    /// Oracle calls.
    pub oracle_calls: OracleCounts,
    /// Test rows.
    pub test_rows: usize,
}

fn samples(d: &Dataset<D>) -> Samples<'_, f64, D> {
    Samples {
        features: &d.rows,
        targets: &d.targets,
    }
}

/// Test accuracy of the model trained (to tolerance) with sample weights `σ(x)`.
fn accuracy_at(problem: &HyperCleaning<'_, f64, D, C, N, DY>, x: &[f64; N], test: &Dataset<D>) -> f64 {
    let (y, _, _) = solve_lower(problem, x, &[0.0; DY], &ReferenceConfig::default()).unwrap();
    HyperCleaning::<f64, D, C, N, DY>::accuracy(&samples(test), &y)
}

/// Flips half the training labels with `seed`, tunes the weights for `iterations` NSBO-SGD
/// steps and measures the three models.
pub fn run(iterations: u32, seed: u64) -> CleaningReport {
    let digits = datasets::digits().unwrap();
    let (train, validation, test) = digits.split(N, VALIDATION, seed);
    let standardizer = Standardizer::fit(&train);
    let (mut train, validation, test) = (
        standardizer.apply(&train),
        standardizer.apply(&validation),
        standardizer.apply(&test),
    );
    let flipped = train.flip_labels(0.5, C, seed + 1);
    let problem: HyperCleaning<'_, f64, D, C, N, DY> =
        HyperCleaning::new(samples(&train), samples(&validation)).unwrap();

    // Hand-set steps: the inner one from the largest single row's smoothness (about 27
    // times smaller than the default at batch 32, so the constant outer step sees little
    // sampling noise).
    let beta = 1.0 / problem.lower_smoothness().row;
    let [lower, upper] = Minibatches::for_levels((N, VALIDATION), 32, Order::Shuffled, seed).unwrap();
    let mut solver = Nsbo::new(NsboConfig::constant(beta, 3), [0.0; DY], lower, upper);
    let outer = Outer {
        schedule: Schedule::Constant(2000.0),
        bounds: Some((-8.0, 8.0)),
    };
    let counted = Counted::new(&problem);
    let mut x = [0.0; N];
    for t in 0..iterations {
        step(&mut solver, &counted, &mut x, &outer, t).unwrap();
    }

    let clean: Vec<usize> = (0..N).filter(|i| !flipped.contains(i)).collect();
    let mut clean_only = [-8.0; N];
    clean.iter().for_each(|&i| clean_only[i] = 8.0);
    // AUC: pairs (clean, flipped) ordered right, ties counting half.
    let mut ordered = 0.0;
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
    CleaningReport {
        uniform_accuracy: accuracy_at(&problem, &[0.0; N], &test),
        tuned_accuracy: accuracy_at(&problem, &x, &test),
        clean_only_accuracy: accuracy_at(&problem, &clean_only, &test),
        auc: ordered / (clean.len() * flipped.len()) as f64,
        flipped: flipped.len(),
        iterations,
        oracle_calls: counted.counts(),
        test_rows: test.len(),
    }
}
