//! Reading the training, validation and test files into fixed-width rows, and the data
//! figures the problems share.

use std::path::PathBuf;

use bilevel::problems::Samples;
use bilevel::scalar::Real;

use crate::data::{Dataset, Target};
use crate::labels::LabelMap;
use crate::run_files::DataFiles;

use super::*;

pub(super) fn required<'a>(p: &'a Option<PathBuf>, flag: &str, problem: ProblemKind) -> Result<&'a PathBuf, BoxError> {
    p.as_ref()
        .ok_or_else(|| format!("--problem {} needs {flag}", problem.name()).into())
}

/// Reads `--train`, `--val` and `--test` for a problem whose labels are `target`.
pub(super) fn read_user_files(req: &TuneRequest, target: Target) -> Result<DataFiles, BoxError> {
    let train = required(&req.train, "--train", req.problem)?;
    let validation = required(&req.validation, "--val", req.problem)?;
    Ok(DataFiles::read(
        train,
        validation,
        req.test.as_deref(),
        req.read,
        target,
    )?)
}

/// What was read: one line per file, the label mapping, and warnings about degenerate data
/// (one class only, constant features, fewer rows than features, a class the training set
/// lacks).
pub(super) fn describe(files: &DataFiles, s: &mut TuneSummary) {
    let classified = files.labels != LabelMap::Real;
    for (role, t) in files.tables() {
        s.data.push(FileReport {
            role,
            file: t.file.clone(),
            layout: t.layout.to_string(),
            rows: t.rows.len(),
            features: t.features,
            classes: classified.then(|| files.classes(t).len()),
        });
    }
    s.labels = files.labels.pairs();
    let train = &files.train;
    let present = files.classes(train);
    if classified && present.len() < 2 {
        s.warnings
            .push(format!("{}: one class only in the training labels", train.file));
    }
    let constant: Vec<String> = (0..train.features)
        .filter(|&j| train.rows.iter().all(|r| r[j] == train.rows[0][j]))
        .map(|j| (j + 1).to_string())
        .collect();
    if !constant.is_empty() {
        const SHOWN: usize = 8;
        let more = match constant.len() {
            n if n > SHOWN => format!(", … ({n} in all)"),
            _ => String::new(),
        };
        s.warnings.push(format!(
            "{}: constant feature column(s) {}{more} (their weights stay 0)",
            train.file,
            constant[..constant.len().min(SHOWN)].join(", ")
        ));
    }
    if train.rows.len() < train.features {
        s.warnings.push(format!(
            "{}: {} rows for {} features: more unknowns than rows",
            train.file,
            train.rows.len(),
            train.features
        ));
    }
    if classified {
        for (_, t) in files.tables().skip(1) {
            let missing: Vec<String> = files
                .classes(t)
                .difference(&present)
                .map(|&c| files.labels.name(c))
                .collect();
            if !missing.is_empty() {
                s.warnings.push(format!(
                    "{}: class(es) {} do not occur in {}",
                    t.file,
                    missing.join(", "),
                    train.file
                ));
            }
        }
    }
}

/// A data set in `T`.
pub(super) struct Converted<T, const W: usize> {
    pub(super) rows: Vec<[T; W]>,
    pub(super) targets: Vec<T>,
}

impl<T: Real, const W: usize> Converted<T, W> {
    pub(super) fn new(d: &Dataset<W>) -> Self {
        Converted {
            rows: d.rows.iter().map(|r| r.map(T::from_f64)).collect(),
            targets: d.targets.iter().map(|&v| T::from_f64(v)).collect(),
        }
    }

    pub(super) fn samples(&self) -> Result<Samples<'_, T, W>, bilevel::Error> {
        Samples::new(&self.rows, &self.targets)
    }
}

pub(super) fn sq(v: f64) -> f64 {
    v * v
}

/// `1 − Σ(t − ŷ)² / Σ(t − t̄)²` of the affine model `y = [w, b]` on `rows`.
pub(super) fn r2<T: Real, const W: usize>(rows: &[[T; W]], targets: &[T], y: &[T]) -> f64 {
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
