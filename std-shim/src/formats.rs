//! Users' data files as they come: CSV with or without a header, separated by `,`, `;` or
//! tabs (quoted fields, a decimal comma where the separator is not a comma), and
//! LIBSVM/svmlight. Labels are kept as written until [`LabelMap`] has seen every file. What
//! is detected is reported ([`Layout`]) so that no guess is silent, and every rejection names
//! the file, line and column.
//!
//! Hand-written rather than on the `csv` crate: errors must give the character column of
//! the offending field.

use std::fmt;
use std::path::Path;

use crate::data::{DataError, DataErrorKind, Dataset, error, number};
use crate::labels::LabelMap;

/// How to read a file: detect, or as stated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FormatChoice {
    /// LIBSVM by the extension (`.svm`, `.libsvm`, `.svmlight`) or by the first line
    /// (`label index:value …`); CSV otherwise.
    #[default]
    Detect,
    /// Delimited text.
    Csv,
    /// LIBSVM / svmlight.
    Libsvm,
}

/// Whether a CSV file's first line names the columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderChoice {
    /// A header when a feature field of the first line is not a number (or only its label
    /// is a word and the next line's is a number).
    #[default]
    Detect,
    /// The first line is a header.
    Present,
    /// Every line is data.
    Absent,
}

/// The choices for reading one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// CSV or LIBSVM.
    pub format: FormatChoice,
    /// Header line of a CSV file.
    pub header: HeaderChoice,
}

/// What a file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Delimited text.
    Csv {
        /// The field separator.
        separator: char,
        /// The first line named the columns.
        header: bool,
    },
    /// `label index:value …` per line.
    Libsvm,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::Csv { separator, header } => {
                let sep = if *separator == '\t' {
                    "tab".to_string()
                } else {
                    format!("'{separator}'")
                };
                write!(
                    f,
                    "CSV, {sep}-separated, {}",
                    if *header { "header" } else { "no header" }
                )
            }
            Layout::Libsvm => write!(f, "LIBSVM"),
        }
    }
}

/// A label as read, with its place in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// The field's text (trimmed, unquoted).
    pub text: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based character column.
    pub column: usize,
}

/// One file's rows: features parsed, labels kept as read until every file of a run is in
/// (a label's class depends on all of them).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file's name, for errors and reports.
    pub file: String,
    /// What the file turned out to be.
    pub layout: Layout,
    /// Feature rows, each `features` long.
    pub rows: Vec<Vec<f64>>,
    /// One label per row.
    pub labels: Vec<Label>,
    /// Features per row (LIBSVM: the largest index used).
    pub features: usize,
    /// The header's column names (features, then the label), when the file has one.
    pub names: Option<Vec<String>>,
}

/// The largest feature index a LIBSVM file may use: far beyond any compiled problem, and a
/// bound on the row a bad index would make the reader allocate.
pub const MAX_FEATURES: usize = 1 << 16;

const LIBSVM_EXTENSIONS: [&str; 3] = ["svm", "libsvm", "svmlight"];

impl Table {
    /// Reads `path`.
    pub fn read(path: &Path, options: ReadOptions) -> Result<Table, DataError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| error(&name, 0, 0, DataErrorKind::Io(e.to_string())))?;
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let options = match (options.format, extension.as_deref()) {
            (FormatChoice::Detect, Some(e)) if LIBSVM_EXTENSIONS.contains(&e) => ReadOptions {
                format: FormatChoice::Libsvm,
                ..options
            },
            _ => options,
        };
        Table::parse(&name, &text, options)
    }

    /// Parses `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str, options: ReadOptions) -> Result<Table, DataError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let libsvm = match options.format {
            FormatChoice::Csv => false,
            FormatChoice::Libsvm => true,
            FormatChoice::Detect => looks_like_libsvm(text),
        };
        if libsvm {
            parse_libsvm(file, text)
        } else {
            parse_csv(file, text, options.header)
        }
    }

    /// The rows at `indices`, in that order, as comma-separated text under the file's header
    /// (or `x1,…,xd,label`): values written back exactly (shortest round trip), labels as
    /// the file had them.
    pub fn to_csv(&self, indices: &[usize]) -> String {
        let quote = |t: &str| {
            if t.contains([',', '"']) {
                format!("\"{}\"", t.replace('"', "\"\""))
            } else {
                t.to_string()
            }
        };
        let header: Vec<String> = match &self.names {
            Some(names) => names.iter().map(|n| quote(n)).collect(),
            None => (1..=self.features)
                .map(|j| format!("x{j}"))
                .chain(["label".to_string()])
                .collect(),
        };
        let mut s = header.join(",") + "\n";
        for &i in indices {
            for v in &self.rows[i] {
                s += &format!("{v:?},");
            }
            s += &quote(&self.labels[i].text);
            s.push('\n');
        }
        s
    }

    /// The rows zero-padded to `W` columns, their labels mapped by `labels`.
    pub fn to_dataset<const W: usize>(&self, labels: &LabelMap) -> Result<Dataset<W>, DataError> {
        if self.features > W {
            return Err(error(
                &self.file,
                0,
                0,
                DataErrorKind::TooManyFeatures {
                    features: self.features,
                    limit: W,
                },
            ));
        }
        let targets = self
            .labels
            .iter()
            .map(|l| labels.target(&self.file, l))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self
            .rows
            .iter()
            .map(|r| core::array::from_fn(|j| r.get(j).copied().unwrap_or(0.0)))
            .collect();
        Ok(Dataset { rows, targets })
    }
}

/// The first data line reads as `label index:value …`.
fn looks_like_libsvm(text: &str) -> bool {
    let Some(line) = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find(|l| !l.trim().is_empty())
    else {
        return false;
    };
    let mut tokens = line.split_whitespace();
    let second = tokens.nth(1);
    !line.contains([',', ';'])
        && second.is_some_and(|t| t.split_once(':').is_some_and(|(i, _)| i.parse::<usize>().is_ok()))
}

/// The separator of the first line: a tab if it has one, else `;` if it has one, else `,`.
pub(crate) fn separator_of(line: &str) -> char {
    if line.contains('\t') {
        '\t'
    } else if line.contains(';') {
        ';'
    } else {
        ','
    }
}

/// The fields of a line and the 1-based character column where each starts. A field in
/// double quotes may hold the separator; `""` inside quotes is one quote.
pub(crate) fn fields(line: &str, separator: char) -> Vec<(String, usize)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let (mut field, mut start, mut quoted, mut i) = (String::new(), 1, false, 0);
    while let Some(&c) = chars.get(i) {
        if c == '"' {
            if quoted && chars.get(i + 1) == Some(&'"') {
                field.push('"');
                i += 1;
            } else {
                quoted = !quoted;
            }
        } else if c == separator && !quoted {
            out.push((field.trim().to_string(), start));
            field.clear();
            start = i + 2;
        } else {
            field.push(c);
        }
        i += 1;
    }
    out.push((field.trim().to_string(), start));
    out
}

/// A field as a number: with a decimal comma where the separator is not a comma.
fn numeric(field: &str, separator: char) -> String {
    if separator != ',' && field.contains(',') && !field.contains('.') {
        field.replacen(',', ".", 1)
    } else {
        field.to_string()
    }
}

/// A field (text and column, from [`fields`]) of line `line` as a number; an error names the
/// field as written.
pub(crate) fn cell_number(
    file: &str,
    line: usize,
    (text, column): &(String, usize),
    separator: char,
) -> Result<f64, DataError> {
    number(file, line, *column, &numeric(text, separator)).map_err(|e| original(e, text))
}

fn is_number(field: &str, separator: char) -> bool {
    numeric(field, separator).parse::<f64>().is_ok()
}

fn parse_csv(file: &str, text: &str, header: HeaderChoice) -> Result<Table, DataError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let Some(&(_, first)) = lines.peek() else {
        return Err(error(file, 0, 0, DataErrorKind::Empty));
    };
    let separator = separator_of(first);
    let first_fields = fields(first, separator);
    let width = first_fields.len();
    if width < 2 {
        return Err(error(file, 1, 0, DataErrorKind::NoFeatures));
    }
    let has_header = match header {
        HeaderChoice::Present => true,
        HeaderChoice::Absent => false,
        HeaderChoice::Detect => {
            let (features, label) = first_fields.split_at(width - 1);
            let word = |f: &[(String, usize)]| f.iter().any(|(t, _)| !is_number(t, separator));
            word(features)
                || (word(label)
                    && lines.clone().nth(1).is_some_and(|(_, next)| {
                        fields(next, separator)
                            .last()
                            .is_some_and(|(t, _)| is_number(t, separator))
                    }))
        }
    };
    let names = has_header.then(|| first_fields.iter().map(|(t, _)| t.clone()).collect());
    if has_header {
        lines.next();
    }
    let mut table = Table {
        file: file.to_string(),
        layout: Layout::Csv {
            separator,
            header: has_header,
        },
        rows: Vec::new(),
        labels: Vec::new(),
        features: width - 1,
        names,
    };
    for (i, line) in lines {
        let n = i + 1;
        let cells = fields(line, separator);
        if cells.len() != width {
            return Err(error(
                file,
                n,
                0,
                DataErrorKind::ColumnCount {
                    expected: width,
                    found: cells.len(),
                },
            ));
        }
        let (features, label) = cells.split_at(width - 1);
        let row = features
            .iter()
            .map(|cell| cell_number(file, n, cell, separator))
            .collect::<Result<Vec<_>, _>>()?;
        table.rows.push(row);
        let (text, column) = &label[0];
        table.labels.push(Label {
            text: numeric(text, separator),
            line: n,
            column: *column,
        });
    }
    if table.rows.is_empty() {
        return Err(error(file, 0, 0, DataErrorKind::NoRows));
    }
    Ok(table)
}

/// An error about a field names the field as written (before a decimal comma became a point).
fn original(mut e: DataError, written: &str) -> DataError {
    match &mut e.kind {
        DataErrorKind::NotANumber(s) | DataErrorKind::NonFinite(s) | DataErrorKind::TooLarge(s) => {
            *s = written.to_string();
        }
        _ => {}
    }
    e
}

fn parse_libsvm(file: &str, text: &str) -> Result<Table, DataError> {
    let mut table = Table {
        file: file.to_string(),
        layout: Layout::Libsvm,
        rows: Vec::new(),
        labels: Vec::new(),
        features: 0,
        names: None,
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        let mut row = Vec::new();
        let mut offset = 0usize;
        for (k, token) in line.split_whitespace().enumerate() {
            let at = raw[offset..].find(token).map_or(offset, |p| offset + p);
            offset = at + token.len();
            let column = raw[..at].chars().count() + 1;
            if k == 0 {
                table.labels.push(Label {
                    text: token.to_string(),
                    line: n,
                    column,
                });
                continue;
            }
            let bad = || error(file, n, column, DataErrorKind::BadIndex(token.to_string()));
            let (index, value) = token.split_once(':').ok_or_else(bad)?;
            let index: usize = index.parse().map_err(|_| bad())?;
            if index == 0 || index <= row.len() {
                return Err(bad());
            }
            if index > MAX_FEATURES {
                let kind = DataErrorKind::TooManyFeatures {
                    features: index,
                    limit: MAX_FEATURES,
                };
                return Err(error(file, n, column, kind));
            }
            row.resize(index, 0.0);
            row[index - 1] = number(file, n, column + index.to_string().len() + 1, value)?;
        }
        table.features = table.features.max(row.len());
        table.rows.push(row);
    }
    if table.rows.is_empty() {
        return Err(error(file, 0, 0, DataErrorKind::NoRows));
    }
    for row in &mut table.rows {
        row.resize(table.features, 0.0);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Target;

    fn csv(text: &str) -> Table {
        Table::parse("t.csv", text, ReadOptions::default()).unwrap()
    }

    fn fails(text: &str, target: Target) -> (usize, usize, DataErrorKind) {
        let e = Table::parse("t.csv", text, ReadOptions::default())
            .and_then(|t| LabelMap::fit(&[&t], target).map(|_| ()))
            .unwrap_err();
        (e.line, e.column, e.kind)
    }

    fn dataset(t: &Table, target: Target) -> Dataset<3> {
        t.to_dataset::<3>(&LabelMap::fit(&[t], target).unwrap()).unwrap()
    }

    #[test]
    fn separators_header_and_decimal_commas_give_the_same_rows() {
        let reference = csv("a,b,y\n0.5,-1,1\n2,3e-3,0\n");
        assert_eq!(
            reference.layout,
            Layout::Csv {
                separator: ',',
                header: true
            }
        );
        for text in [
            "0.5,-1,1\n2,3e-3,0\n",
            "a;b;y\n0,5;-1;1\n2;3e-3;0\n",
            "a\tb\ty\n0.5\t-1\t1\n2\t0,003\t0\r\n",
            "\u{feff}\"a\",\"b\",\"y\"\n\"0.5\",-1,1\n\n2,3e-3,0\n",
            "1,2,label\n0.5,-1,1\n2,3e-3,0\n",
        ] {
            let t = csv(text);
            assert_eq!((&t.rows, t.features), (&reference.rows, 2), "{text:?}");
            let labels: Vec<&str> = t.labels.iter().map(|l| l.text.as_str()).collect();
            assert_eq!(labels, ["1", "0"], "{text:?}");
        }
        assert!(matches!(csv("0.5,-1,1\n").layout, Layout::Csv { header: false, .. }));
        let forced = Table::parse(
            "t.csv",
            "1,2,3\n4,5,6\n",
            ReadOptions {
                header: HeaderChoice::Present,
                ..ReadOptions::default()
            },
        )
        .unwrap();
        assert_eq!(forced.rows, vec![vec![4.0, 5.0]]);
        assert_eq!(
            fields("\"x,1\",\"a\"\"b\",c", ','),
            [("x,1".into(), 1), ("a\"b".into(), 7), ("c".into(), 14)]
        );
    }

    #[test]
    fn libsvm_is_detected_and_reads_sparse_rows() {
        let t = csv("+1 1:0.5 3:-2 # comment\n-1 2:1e-3\n");
        assert_eq!(t.layout, Layout::Libsvm);
        assert_eq!(t.rows, vec![vec![0.5, 0.0, -2.0], vec![0.0, 1e-3, 0.0]]);
        let d = dataset(&t, Target::Classes(2));
        assert_eq!(d.targets, vec![1.0, 0.0]);
        assert_eq!(
            fails("1 2:1 2:3\n", Target::Real),
            (1, 7, DataErrorKind::BadIndex("2:3".into()))
        );
        assert_eq!(
            fails("1 0:1\n", Target::Real),
            (1, 3, DataErrorKind::BadIndex("0:1".into()))
        );
        assert_eq!(
            fails("1 1:x\n", Target::Real),
            (1, 5, DataErrorKind::NotANumber("x".into()))
        );
        assert_eq!(
            fails("1 12:1e200\n", Target::Real),
            (1, 6, DataErrorKind::TooLarge("1e200".into()))
        );
        // A huge index is refused before a row that long exists (found by fuzzing).
        let libsvm = ReadOptions {
            format: FormatChoice::Libsvm,
            ..ReadOptions::default()
        };
        let e = Table::parse("t.svm", "f~\t\u{c}33333333333333:=3:=,", libsvm).unwrap_err();
        assert_eq!(
            (e.line, e.column, e.kind),
            (
                1,
                5,
                DataErrorKind::TooManyFeatures {
                    features: 33_333_333_333_333,
                    limit: MAX_FEATURES
                }
            )
        );
    }

    #[test]
    fn every_malformed_csv_names_its_position() {
        assert_eq!(fails("", Target::Real).2, DataErrorKind::Empty);
        assert_eq!(fails("\n \n", Target::Real).2, DataErrorKind::Empty);
        assert_eq!(fails("a,b,y\n", Target::Real).2, DataErrorKind::NoRows);
        assert_eq!(fails("y\n1\n", Target::Real), (1, 0, DataErrorKind::NoFeatures));
        assert_eq!(
            fails("a,b,y\n1,2,3\n1,2\n", Target::Real),
            (3, 0, DataErrorKind::ColumnCount { expected: 3, found: 2 })
        );
        assert_eq!(
            fails("a,b,y\n1.5,x1,0\n", Target::Real),
            (2, 5, DataErrorKind::NotANumber("x1".into()))
        );
        assert_eq!(fails("a,b,y\n1,,0\n", Target::Real), (2, 3, DataErrorKind::Missing));
        assert_eq!(
            fails("a,b,y\n1,NaN,0\n", Target::Real),
            (2, 3, DataErrorKind::NonFinite("NaN".into()))
        );
        assert_eq!(
            fails("a;b;y\n1;1,5e200;0\n", Target::Real),
            (2, 3, DataErrorKind::TooLarge("1,5e200".into()))
        );
        assert_eq!(
            fails("a,b,y\n1,-1e308,0\n", Target::Real),
            (2, 3, DataErrorKind::TooLarge("-1e308".into()))
        );
        assert_eq!(
            fails("a,b,y\n1,2,1e151\n", Target::Real),
            (2, 5, DataErrorKind::TooLarge("1e151".into()))
        );
        let t = csv("a,b,y\n1,2,0\n1,2,1\n");
        assert_eq!(
            t.to_dataset::<1>(&LabelMap::Real).unwrap_err().kind,
            DataErrorKind::TooManyFeatures { features: 2, limit: 1 }
        );
    }
}
