//! Reading the training, validation and test files into fixed-width rows, and the data
//! figures the problems share.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bilevel::problems::Samples;
use bilevel::scalar::Real;

use crate::data::{DataError, Dataset, Standardizer, Target};
use crate::formats::{LabelMap, Layout, Table};

use super::*;

/// The training, validation and optional test files of a run, read with their labels
/// mapped the same way in each.
pub(super) struct UserFiles {
    pub(super) train: Table,
    pub(super) validation: Table,
    pub(super) test: Option<Table>,
    pub(super) labels: LabelMap,
    /// Features per row: the files' (a LIBSVM file may use fewer).
    pub(super) features: usize,
}

/// Train, validation and optional test sets standardized with the training statistics.
pub(super) struct Files<const W: usize> {
    pub(super) train: Dataset<W>,
    pub(super) validation: Dataset<W>,
    pub(super) test: Option<Dataset<W>>,
}

pub(super) fn required<'a>(p: &'a Option<PathBuf>, flag: &str, problem: ProblemKind) -> Result<&'a PathBuf, BoxError> {
    p.as_ref()
        .ok_or_else(|| format!("--problem {} needs {flag}", problem.name()).into())
}

/// Reads `--train`, `--val` and `--test` for a problem whose labels are `target`.
pub(super) fn read_user_files(req: &TuneRequest, target: Target) -> Result<UserFiles, BoxError> {
    let read = |p: &Path| Table::read(p, req.read);
    let train = read(required(&req.train, "--train", req.problem)?)?;
    let validation = read(required(&req.validation, "--val", req.problem)?)?;
    let test = req.test.as_deref().map(read).transpose()?;
    let features = [Some(&train), Some(&validation), test.as_ref()]
        .into_iter()
        .flatten()
        .map(|t| t.features)
        .max()
        .unwrap_or(0);
    for t in [Some(&validation), test.as_ref()].into_iter().flatten() {
        if t.features != train.features && matches!(t.layout, Layout::Csv { .. }) {
            return Err(format!(
                "{}: {} feature(s), but {} has {}",
                t.file, t.features, train.file, train.features
            )
            .into());
        }
    }
    let tables: Vec<&Table> = [Some(&train), Some(&validation), test.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let labels = LabelMap::fit(&tables, target)?;
    Ok(UserFiles {
        train,
        validation,
        test,
        labels,
        features,
    })
}

impl UserFiles {
    fn tables(&self) -> impl Iterator<Item = (&'static str, &Table)> {
        [
            ("train", Some(&self.train)),
            ("validation", Some(&self.validation)),
            ("test", self.test.as_ref()),
        ]
        .into_iter()
        .filter_map(|(role, t)| t.map(|t| (role, t)))
    }

    /// The data padded to `W` columns and standardized with the training statistics.
    pub(super) fn standardized<const W: usize>(&self) -> Result<Files<W>, DataError> {
        let train = self.train.to_dataset::<W>(&self.labels)?;
        let s = Standardizer::fit(&train);
        Ok(Files {
            train: s.apply(&train),
            validation: s.apply(&self.validation.to_dataset::<W>(&self.labels)?),
            test: match &self.test {
                Some(t) => Some(s.apply(&t.to_dataset::<W>(&self.labels)?)),
                None => None,
            },
        })
    }

    /// The classes present in `table` (targets after the mapping).
    fn classes(&self, table: &Table) -> BTreeSet<usize> {
        table
            .labels
            .iter()
            .filter_map(|l| self.labels.target(&table.file, l).ok())
            .map(|v| v as usize)
            .collect()
    }

    /// What was read: one line per file, the label mapping, and warnings about degenerate
    /// data (one class only, constant features, fewer rows than features, a class the
    /// training set lacks).
    pub(super) fn describe(&self, s: &mut TuneSummary) {
        let classified = self.labels != LabelMap::Real;
        for (role, t) in self.tables() {
            s.data.push(FileReport {
                role,
                file: t.file.clone(),
                layout: t.layout.to_string(),
                rows: t.rows.len(),
                features: t.features,
                classes: classified.then(|| self.classes(t).len()),
            });
        }
        s.labels = self.labels.pairs();
        let train = &self.train;
        let present = self.classes(train);
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
            for (_, t) in self.tables().skip(1) {
                let missing: Vec<String> = self
                    .classes(t)
                    .difference(&present)
                    .map(|&c| self.labels.name(c))
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
