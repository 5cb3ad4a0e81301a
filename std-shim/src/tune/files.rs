//! Reading the training, validation and test files into fixed-width rows, and the data
//! figures the problems share.

use std::path::{Path, PathBuf};

use bilevel::problems::Samples;
use bilevel::scalar::Real;

use crate::data::{DataError, DataErrorKind, Dataset, Standardizer, Target, parse_csv};

use super::*;

pub(super) fn io_error(path: &Path, e: std::io::Error) -> DataError {
    DataError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        kind: DataErrorKind::Io(e.to_string()),
    }
}

/// Reads a CSV of `width` features into rows padded to `W` columns.
pub(super) fn read_padded<const W: usize>(path: &Path, width: usize, target: Target) -> Result<Dataset<W>, DataError> {
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
pub(super) fn width_of(path: &Path) -> Result<usize, DataError> {
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
pub(super) struct Files<const W: usize> {
    pub(super) train: Dataset<W>,
    pub(super) validation: Dataset<W>,
    pub(super) test: Option<Dataset<W>>,
}

pub(super) fn required<'a>(p: &'a Option<PathBuf>, flag: &str, problem: ProblemKind) -> Result<&'a PathBuf, BoxError> {
    p.as_ref()
        .ok_or_else(|| format!("--problem {} needs {flag}", problem.name()).into())
}

pub(super) fn read_files<const W: usize>(
    req: &TuneRequest,
    width: usize,
    target: Target,
) -> Result<Files<W>, BoxError> {
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
