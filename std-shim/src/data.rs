//! Data sets on the host: fixed-size rows read from CSV and LIBSVM ([`crate::formats`]), seeded splits,
//! standardization with training statistics, and label noise for hyper-cleaning. Every
//! reading error names the file, line and column; nothing is skipped silently.

use std::fmt;
use std::path::Path;

use bilevel::rng::Rng128;

use crate::formats::{FormatChoice, HeaderChoice, ReadOptions, Table};
use crate::labels::LabelMap;

/// Rows of `D` features with one target each (a class index or a real value).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset<const D: usize> {
    /// Feature rows.
    pub rows: Vec<[f64; D]>,
    /// One target per row.
    pub targets: Vec<f64>,
}

/// What the last column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any finite real number (regression).
    Real,
    /// A class index `0..classes` (2 for binary 0/1 labels).
    Classes(usize),
}

/// What went wrong, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    /// The file (or a name for in-memory text).
    pub file: String,
    /// 1-based line (0 when the error concerns the whole file).
    pub line: usize,
    /// 1-based character column of the offending field (0 for the whole line or file).
    pub column: usize,
    /// The problem.
    pub kind: DataErrorKind,
}

/// The kinds of [`DataError`].
#[derive(Clone, Debug, PartialEq)]
pub enum DataErrorKind {
    /// The file could not be read.
    Io(String),
    /// The file has no header line.
    Empty,
    /// The file has a header but no data rows.
    NoRows,
    /// A row has the wrong number of fields.
    ColumnCount {
        /// Fields expected (features + target).
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A field is empty.
    Missing,
    /// A field is not a number.
    NotANumber(String),
    /// A field is NaN or infinite.
    NonFinite(String),
    /// A value beyond ±[`LARGEST`]: its square, summed for the standardization, would
    /// overflow.
    TooLarge(String),
    /// A CSV file has a single column (no features before the label).
    NoFeatures,
    /// More features than the problem is built for.
    TooManyFeatures {
        /// Features in the file.
        features: usize,
        /// The most the problem takes.
        limit: usize,
    },
    /// A label makes more distinct labels than the problem has classes.
    TooManyLabels {
        /// The label read.
        label: String,
        /// Every distinct label up to it, in class order.
        labels: Vec<String>,
        /// Number of classes.
        classes: usize,
    },
    /// A class label that is a fraction.
    NotAClass(String),
    /// A validation or test CSV file whose feature count is not the training file's.
    FeaturesDiffer {
        /// Features in this file.
        features: usize,
        /// The training file.
        train: String,
        /// Its features.
        train_features: usize,
    },
    /// A LIBSVM feature index is 0, not a number, or not increasing.
    BadIndex(String),
    /// A task file's header does not start with `task,part`.
    BadHeader(String),
    /// A task file's `part` is neither `support` nor `query`.
    BadPart(String),
    /// A task has no support rows or no query rows.
    IncompleteTask(String),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.column > 0 {
            write!(f, ":{}", self.column)?;
        }
        match &self.kind {
            DataErrorKind::Io(e) => write!(f, ": cannot read: {e}"),
            DataErrorKind::Empty => write!(f, ": empty file (expected a header line)"),
            DataErrorKind::NoRows => write!(f, ": no data rows after the header"),
            DataErrorKind::ColumnCount { expected, found } => {
                write!(
                    f,
                    ": expected {expected} fields (features, then the target), found {found}"
                )
            }
            DataErrorKind::Missing => write!(f, ": missing value (empty field)"),
            DataErrorKind::NotANumber(s) => write!(f, ": not a number: {s:?}"),
            DataErrorKind::NonFinite(s) => write!(f, ": not a finite number: {s:?}"),
            DataErrorKind::TooLarge(s) => write!(f, ": {s} is beyond ±{LARGEST:e} (rescale the column)"),
            DataErrorKind::NoFeatures => write!(f, ": one column only (expected features, then the label)"),
            DataErrorKind::TooManyFeatures { features, limit } => {
                write!(f, ": {features} features; at most {limit} here")
            }
            DataErrorKind::TooManyLabels { label, labels, classes } => write!(
                f,
                ": label {label:?} makes {} distinct labels ({}); the problem takes {classes} classes",
                labels.len(),
                labels.join(", ")
            ),
            DataErrorKind::NotAClass(s) => write!(f, ": label {s:?} is not a class (a whole number or a word)"),
            DataErrorKind::FeaturesDiffer {
                features,
                train,
                train_features,
            } => write!(f, ": {features} feature(s), but {train} has {train_features}"),
            DataErrorKind::BadIndex(s) => write!(
                f,
                ": bad feature index {s:?} (indices are whole numbers from 1, increasing along the line)"
            ),
            DataErrorKind::BadHeader(s) => {
                write!(f, ": header field {s:?} (expected task,part,features…,target)")
            }
            DataErrorKind::BadPart(s) => write!(f, ": part {s:?} is neither support nor query"),
            DataErrorKind::IncompleteTask(s) => {
                write!(f, ": task {s:?} needs at least one support row and one query row")
            }
        }
    }
}

impl std::error::Error for DataError {}

pub(crate) fn error(file: &str, line: usize, column: usize, kind: DataErrorKind) -> DataError {
    DataError {
        file: file.to_string(),
        line,
        column,
        kind,
    }
}

/// The largest magnitude a data value may have: squares and their sums over a million rows
/// stay finite in `f64`.
pub const LARGEST: f64 = 1e150;

/// Parses one number; `column` locates it in errors.
pub(crate) fn number(file: &str, line: usize, column: usize, field: &str) -> Result<f64, DataError> {
    let text = field.trim();
    let fail = |kind| Err(error(file, line, column, kind));
    if text.is_empty() {
        return fail(DataErrorKind::Missing);
    }
    let Ok(v) = text.parse::<f64>() else {
        return fail(DataErrorKind::NotANumber(text.to_string()));
    };
    if !v.is_finite() {
        return fail(DataErrorKind::NonFinite(text.to_string()));
    }
    if v.abs() > LARGEST {
        return fail(DataErrorKind::TooLarge(text.to_string()));
    }
    Ok(v)
}

/// Parses CSV text of exactly `D` features and a label per row under one header line (see
/// [`Table`] for separators and labels). `file` names the source in errors.
pub fn parse_csv<const D: usize>(file: &str, text: &str, target: Target) -> Result<Dataset<D>, DataError> {
    let options = ReadOptions {
        format: FormatChoice::Csv,
        header: HeaderChoice::Present,
    };
    fixed_width(Table::parse(file, text, options)?, target)
}

/// Reads a CSV file (see [`parse_csv`]).
pub fn read_csv<const D: usize>(path: &Path, target: Target) -> Result<Dataset<D>, DataError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| error(&name, 0, 0, DataErrorKind::Io(e.to_string())))?;
    parse_csv(&name, &text, target)
}

/// Parses LIBSVM / SVMlight text: `target index:value ...` per line, indices 1-based and
/// increasing, at most `D`, absent features 0. A `#` starts a comment.
pub fn parse_libsvm<const D: usize>(file: &str, text: &str, target: Target) -> Result<Dataset<D>, DataError> {
    let options = ReadOptions {
        format: FormatChoice::Libsvm,
        header: HeaderChoice::Absent,
    };
    let table = Table::parse(file, text, options)?;
    table.to_dataset(&LabelMap::fit(&[&table], target)?)
}

/// A CSV table of exactly `D` features as a data set.
fn fixed_width<const D: usize>(table: Table, target: Target) -> Result<Dataset<D>, DataError> {
    if table.features != D {
        return Err(error(
            &table.file,
            1,
            0,
            DataErrorKind::ColumnCount {
                expected: D + 1,
                found: table.features + 1,
            },
        ));
    }
    table.to_dataset(&LabelMap::fit(&[&table], target)?)
}

impl<const D: usize> Dataset<D> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// `true` without rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset<D> {
        Dataset {
            rows: indices.iter().map(|&i| self.rows[i]).collect(),
            targets: indices.iter().map(|&i| self.targets[i]).collect(),
        }
    }

    /// Shuffles the rows with `seed` and cuts them into train, validation and test sets of
    /// `train` and `validation` rows and the rest.
    pub fn split(&self, train: usize, validation: usize, seed: u64) -> (Dataset<D>, Dataset<D>, Dataset<D>) {
        let [a, b, c] = split_indices(self.len(), train, validation, seed);
        (self.select(&a), self.select(&b), self.select(&c))
    }

    /// The data as CSV under `header` (shortest round-trip numbers: reading it back gives
    /// the same values bit for bit).
    pub fn to_csv(&self, header: &str) -> String {
        let mut s = String::with_capacity(self.len() * D * 8);
        s.push_str(header.trim_end());
        s.push('\n');
        for (row, t) in self.rows.iter().zip(&self.targets) {
            for v in row {
                s.push_str(&format!("{v:?},"));
            }
            s.push_str(&format!("{t:?}\n"));
        }
        s
    }

    /// The rows in `f32` (rounded), for the device.
    pub fn rows_f32(&self) -> Vec<[f32; D]> {
        self.rows.iter().map(|r| r.map(|v| v as f32)).collect()
    }

    /// The targets in `f32`.
    pub fn targets_f32(&self) -> Vec<f32> {
        self.targets.iter().map(|&t| t as f32).collect()
    }

    /// Replaces the labels of a `fraction` of the rows, chosen with `seed`, by a different
    /// class drawn uniformly; returns the flipped row indices (sorted).
    pub fn flip_labels(&mut self, fraction: f64, classes: usize, seed: u64) -> Vec<usize> {
        let mut rng = Rng128::new(seed);
        let count = ((self.len() as f64) * fraction).round() as usize;
        let order = shuffled(self.len(), &mut rng);
        let mut flipped: Vec<usize> = order[..count.min(order.len())].to_vec();
        flipped.sort_unstable();
        for &i in &flipped {
            let old = self.targets[i] as u32;
            let shift = 1 + rng.below(classes as u32 - 1);
            self.targets[i] = f64::from((old + shift) % classes as u32);
        }
        flipped
    }
}

/// `0..n` in the order of a Fisher–Yates shuffle drawn from `rng`.
fn shuffled(n: usize, rng: &mut Rng128) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u32 + 1) as usize);
    }
    order
}

/// The row indices of a seeded split of `n` rows into `train`, `validation` and the rest
/// (the split of [`Dataset::split`], for data of any width).
pub fn split_indices(n: usize, train: usize, validation: usize, seed: u64) -> [Vec<usize>; 3] {
    let order = shuffled(n, &mut Rng128::new(seed));
    let (a, rest) = order.split_at(train.min(n));
    let (b, c) = rest.split_at(validation.min(rest.len()));
    [a.to_vec(), b.to_vec(), c.to_vec()]
}

/// Per-feature affine map `(v − mean) / scale` fitted on training data, to apply unchanged
/// to validation and test data and on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer<const D: usize> {
    /// Training means.
    pub mean: [f64; D],
    /// Training standard deviations (1 for a constant feature).
    pub scale: [f64; D],
}

impl<const D: usize> Standardizer<D> {
    /// Fits means and standard deviations on `train`.
    pub fn fit(train: &Dataset<D>) -> Self {
        let n = train.len().max(1) as f64;
        let mut mean = [0.0; D];
        for r in &train.rows {
            for j in 0..D {
                mean[j] += r[j];
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = [0.0; D];
        for r in &train.rows {
            for j in 0..D {
                var[j] += (r[j] - mean[j]) * (r[j] - mean[j]);
            }
        }
        let scale = var.map(|v| {
            let s = libm::sqrt(v / n);
            if s > 0.0 { s } else { 1.0 }
        });
        Standardizer { mean, scale }
    }

    /// The standardized copy of `data`.
    pub fn apply(&self, data: &Dataset<D>) -> Dataset<D> {
        let rows = data
            .rows
            .iter()
            .map(|r| core::array::from_fn(|j| (r[j] - self.mean[j]) / self.scale[j]))
            .collect();
        Dataset {
            rows,
            targets: data.targets.clone(),
        }
    }

    /// Two CSV lines, `mean,…` and `scale,…` (shortest round-trip formatting), to save the
    /// transform next to an exported data set.
    pub fn to_csv(&self) -> String {
        let line = |name: &str, v: &[f64; D]| {
            let cells: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            format!("{name},{}\n", cells.join(","))
        };
        line("mean", &self.mean) + &line("scale", &self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<const D: usize>(text: &str, target: Target) -> (usize, usize, DataErrorKind) {
        let e = parse_csv::<D>("t.csv", text, target).unwrap_err();
        (e.line, e.column, e.kind)
    }

    #[test]
    fn good_csv_reads_exactly() {
        let values = [0.1, -2.5e-7, 123456.789, f64::MIN_POSITIVE, 1.0 / 3.0];
        let text = format!(
            "a,b,y\n{:?},{:?},1\n{:?},{:?},0\n",
            values[0], values[1], values[2], values[4]
        );
        let d = parse_csv::<2>("t.csv", &text, Target::Classes(2)).unwrap();
        assert_eq!(d.rows, vec![[values[0], values[1]], [values[2], values[4]]]);
        assert_eq!(d.targets, vec![1.0, 0.0]);
    }

    #[test]
    fn csv_output_reads_back_exactly() {
        let d = Dataset {
            rows: vec![[0.1, -2.5e-7], [1.0 / 3.0, 5.0]],
            targets: vec![1.0, 0.0],
        };
        assert_eq!(
            parse_csv::<2>("t.csv", &d.to_csv("a,b,y"), Target::Classes(2)).unwrap(),
            d
        );
    }

    #[test]
    fn every_malformed_csv_names_its_position() {
        assert_eq!(kind::<2>("", Target::Real).2, DataErrorKind::Empty);
        assert_eq!(kind::<2>("a,b,y\n", Target::Real).2, DataErrorKind::NoRows);
        assert_eq!(
            kind::<2>("a,y\n1,2\n", Target::Real),
            (1, 0, DataErrorKind::ColumnCount { expected: 3, found: 2 })
        );
        assert_eq!(
            kind::<2>("a,b,y\n1,2,3\n1,2\n", Target::Real),
            (3, 0, DataErrorKind::ColumnCount { expected: 3, found: 2 })
        );
        assert_eq!(
            kind::<2>("a,b,y\n1,2,3,4\n", Target::Real),
            (2, 0, DataErrorKind::ColumnCount { expected: 3, found: 4 })
        );
        assert_eq!(
            kind::<2>("a,b,y\n1.5,x1,0\n", Target::Real),
            (2, 5, DataErrorKind::NotANumber("x1".into()))
        );
        assert_eq!(
            kind::<2>("a,b,y\n1,NaN,0\n", Target::Real),
            (2, 3, DataErrorKind::NonFinite("NaN".into()))
        );
        assert_eq!(
            kind::<2>("a,b,y\n1,inf,0\n", Target::Real),
            (2, 3, DataErrorKind::NonFinite("inf".into()))
        );
        assert_eq!(
            kind::<2>("a,b,y\n1,2,0\n1,2,2\n1,2,1\n", Target::Classes(2)),
            (
                4,
                5,
                DataErrorKind::TooManyLabels {
                    label: "1".into(),
                    labels: vec!["0".into(), "1".into(), "2".into()],
                    classes: 2
                }
            )
        );
        assert_eq!(
            kind::<2>("a,b,y\n1,2,0.5\n", Target::Classes(3)),
            (2, 5, DataErrorKind::NotAClass("0.5".into()))
        );
        let e = parse_csv::<2>("data/x.csv", "a,b,y\n1,2,zz\n", Target::Real).unwrap_err();
        assert_eq!(e.to_string(), "data/x.csv:2:5: not a number: \"zz\"");
    }

    #[test]
    fn libsvm_reads_sparse_rows_and_rejects_bad_indices() {
        let d = parse_libsvm::<3>("t.svm", "1 1:0.5 3:-2 # comment\n0 2:1e-3\n", Target::Classes(2)).unwrap();
        assert_eq!(d.rows, vec![[0.5, 0.0, -2.0], [0.0, 1e-3, 0.0]]);
        assert_eq!(d.targets, vec![1.0, 0.0]);
        let e = parse_libsvm::<3>("t.svm", "1 2:1 2:3\n", Target::Real).unwrap_err();
        assert_eq!(
            (e.line, e.column, e.kind),
            (1, 7, DataErrorKind::BadIndex("2:3".into()))
        );
        let e = parse_libsvm::<3>("t.svm", "1 4:1\n", Target::Real).unwrap_err();
        assert_eq!(e.kind, DataErrorKind::TooManyFeatures { features: 4, limit: 3 });
        let e = parse_libsvm::<3>("t.svm", "1 1:x\n", Target::Real).unwrap_err();
        assert_eq!((e.column, e.kind), (5, DataErrorKind::NotANumber("x".into())));
        let e = parse_libsvm::<3>("t.svm", "\n\n", Target::Real).unwrap_err();
        assert_eq!(e.kind, DataErrorKind::NoRows);
    }

    #[test]
    fn splits_partition_the_rows_and_depend_on_the_seed() {
        let d = Dataset {
            rows: (0..10).map(|i| [i as f64]).collect(),
            targets: vec![0.0; 10],
        };
        let (a, b, c) = d.split(5, 3, 1);
        let mut all: Vec<f64> = a.rows.iter().chain(&b.rows).chain(&c.rows).map(|r| r[0]).collect();
        assert_eq!((a.len(), b.len(), c.len()), (5, 3, 2));
        all.sort_by(f64::total_cmp);
        assert_eq!(all, (0..10).map(f64::from).collect::<Vec<_>>());
        assert_ne!(d.split(5, 3, 2).0, a);
        assert_eq!(d.split(5, 3, 1).0, a);
    }

    #[test]
    fn standardization_uses_training_statistics() {
        let train = Dataset {
            rows: vec![[1.0, 5.0], [3.0, 5.0]],
            targets: vec![0.0, 1.0],
        };
        let s = Standardizer::fit(&train);
        assert_eq!((s.mean, s.scale), ([2.0, 5.0], [1.0, 1.0]));
        let test = Dataset {
            rows: vec![[4.0, 7.0]],
            targets: vec![1.0],
        };
        assert_eq!(s.apply(&test).rows, vec![[2.0, 2.0]]);
        assert_eq!(s.to_csv(), "mean,2.0,5.0\nscale,1.0,1.0\n");
    }

    #[test]
    fn label_noise_changes_exactly_the_recorded_rows() {
        let clean = Dataset {
            rows: vec![[0.0]; 20],
            targets: (0..20).map(|i| f64::from(i % 10)).collect(),
        };
        let mut noisy = clean.clone();
        let flipped = noisy.flip_labels(0.5, 10, 3);
        assert_eq!(flipped.len(), 10);
        for i in 0..20 {
            assert_eq!(noisy.targets[i] != clean.targets[i], flipped.contains(&i), "row {i}");
            assert!(noisy.targets[i] < 10.0);
        }
    }
}
