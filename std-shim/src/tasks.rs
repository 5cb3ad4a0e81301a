//! Few-shot task files for meta-learning: delimited text (`,`, `;` or tab, as
//! [`crate::formats`] reads it) with the header `task,part,features…,target`, one row per
//! sample, `part` either `support` (the task model's fit) or `query` (its score). Tasks are
//! numbered in order of first appearance. Every error names the file, line and column, as
//! the other readers do.

use std::path::Path;

use crate::data::{DataError, DataErrorKind, Dataset, error};
use crate::formats;

/// One task's rows, any width (the file's).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRows {
    /// The label in the `task` column.
    pub name: String,
    /// Support rows (features) and targets.
    pub support: (Vec<Vec<f64>>, Vec<f64>),
    /// Query rows and targets.
    pub query: (Vec<Vec<f64>>, Vec<f64>),
}

/// A task file: its feature count and its tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFile {
    /// Features per row.
    pub features: usize,
    /// Tasks in order of first appearance.
    pub tasks: Vec<TaskRows>,
}

/// One task as fixed-width data sets (zero-padded to `W` columns).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskData<const W: usize> {
    /// Support set.
    pub support: Dataset<W>,
    /// Query set.
    pub query: Dataset<W>,
}

fn padded<const W: usize>(rows: &(Vec<Vec<f64>>, Vec<f64>)) -> Dataset<W> {
    Dataset {
        rows: rows
            .0
            .iter()
            .map(|r| core::array::from_fn(|j| r.get(j).copied().unwrap_or(0.0)))
            .collect(),
        targets: rows.1.clone(),
    }
}

impl TaskFile {
    /// The tasks with rows zero-padded to `W ≥ features` columns.
    pub fn padded<const W: usize>(&self) -> Vec<TaskData<W>> {
        self.tasks
            .iter()
            .map(|t| TaskData {
                support: padded(&t.support),
                query: padded(&t.query),
            })
            .collect()
    }
}

/// Parses a task file's text; `file` names it in errors. The header is required (it names
/// the `task` and `part` columns); separators, quotes, a decimal comma and a BOM are read as
/// in every other data file ([`crate::formats`]).
pub fn parse_tasks(file: &str, text: &str) -> Result<TaskFile, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate();
    let Some((h, header)) = lines.find(|(_, l)| !l.trim().is_empty()) else {
        return Err(error(file, 0, 0, DataErrorKind::Empty));
    };
    let separator = formats::separator_of(header);
    let names = formats::fields(header, separator);
    for (k, expected) in ["task", "part"].iter().enumerate() {
        match names.get(k) {
            Some((n, _)) if n.eq_ignore_ascii_case(expected) => {}
            Some((n, column)) => return Err(error(file, h + 1, *column, DataErrorKind::BadHeader(n.clone()))),
            None => {
                return Err(error(
                    file,
                    h + 1,
                    0,
                    DataErrorKind::BadHeader(header.trim().to_string()),
                ));
            }
        }
    }
    let width = names.len();
    if width < 4 {
        return Err(error(
            file,
            h + 1,
            0,
            DataErrorKind::ColumnCount {
                expected: 4,
                found: width,
            },
        ));
    }
    let mut tasks: Vec<TaskRows> = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells = formats::fields(line, separator);
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
        // `width ≥ 4`: a task, a part, at least one feature and the target.
        let (name, part, values) = (&cells[0], &cells[1], &cells[2..]);
        let numbers = values
            .iter()
            .map(|cell| formats::cell_number(file, n, cell, separator))
            .collect::<Result<Vec<f64>, _>>()?;
        let (row, target) = numbers.split_at(numbers.len() - 1);
        let index = match tasks.iter().position(|t| t.name == name.0) {
            Some(k) => k,
            None => {
                tasks.push(TaskRows {
                    name: name.0.clone(),
                    support: (Vec::new(), Vec::new()),
                    query: (Vec::new(), Vec::new()),
                });
                tasks.len() - 1
            }
        };
        let rows = match part.0.as_str() {
            "support" => &mut tasks[index].support,
            "query" => &mut tasks[index].query,
            other => return Err(error(file, n, part.1, DataErrorKind::BadPart(other.to_string()))),
        };
        rows.0.push(row.to_vec());
        rows.1.push(target[0]);
    }
    if tasks.is_empty() {
        return Err(error(file, 0, 0, DataErrorKind::NoRows));
    }
    if let Some(t) = tasks.iter().find(|t| t.support.1.is_empty() || t.query.1.is_empty()) {
        return Err(error(file, 0, 0, DataErrorKind::IncompleteTask(t.name.clone())));
    }
    Ok(TaskFile {
        features: width - 3,
        tasks,
    })
}

/// Reads a task file (see [`parse_tasks`]).
pub fn read_tasks(path: &Path) -> Result<TaskFile, DataError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| error(&name, 0, 0, DataErrorKind::Io(e.to_string())))?;
    parse_tasks(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(text: &str) -> (usize, usize, DataErrorKind) {
        let e = parse_tasks("t.csv", text).unwrap_err();
        (e.line, e.column, e.kind)
    }

    #[test]
    fn a_good_task_file_reads_exactly() {
        let v = [0.1, -2.5e-7, 1.0 / 3.0, 123456.789, f64::MIN_POSITIVE];
        let text = format!(
            "task,part,a,b,y\nt0,support,{:?},{:?},{:?}\nt1,query,1,2,3\nt0,query,{:?},0,{:?}\nt1,support,-1,-2,-3\n",
            v[0], v[1], v[2], v[3], v[4]
        );
        let f = parse_tasks("t.csv", &text).unwrap();
        assert_eq!(f.features, 2);
        assert_eq!(f.tasks.len(), 2);
        assert_eq!(f.tasks[0].name, "t0");
        assert_eq!(f.tasks[0].support, (vec![vec![v[0], v[1]]], vec![v[2]]));
        assert_eq!(f.tasks[0].query, (vec![vec![v[3], 0.0]], vec![v[4]]));
        assert_eq!(f.tasks[1].support, (vec![vec![-1.0, -2.0]], vec![-3.0]));
        assert_eq!(f.tasks[1].query, (vec![vec![1.0, 2.0]], vec![3.0]));
        let p = f.padded::<4>();
        assert_eq!(p[0].support.rows, vec![[v[0], v[1], 0.0, 0.0]]);
        assert_eq!(p[1].query.targets, vec![3.0]);
    }

    #[test]
    fn task_files_in_any_common_layout_read_the_same() {
        let commas = "task,part,a,b,y\nt0,support,0.5,-1,2\nt0,query,1.25,0,3\nt1,support,2,1,-1\nt1,query,0,0,0.75\n";
        let want = parse_tasks("t.csv", commas).unwrap();
        let semicolons = commas.replace(',', ";").replace('.', ",");
        let tabs = format!("\u{feff}{}", commas.replace(',', "\t"));
        let quoted = commas.replace("t0,", "\"t0\",").replace("support", "\"support\"");
        for text in [semicolons, tabs, quoted] {
            assert_eq!(parse_tasks("t.csv", &text).unwrap(), want, "{text}");
        }
        // A bad number is named as written, at its column.
        let e = parse_tasks("t.csv", "task;part;a;y\nt;support;1,5x;2\n").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.kind),
            (2, 11, DataErrorKind::NotANumber("1,5x".into()))
        );
    }

    #[test]
    fn every_malformed_task_file_names_its_position() {
        assert_eq!(fails("").2, DataErrorKind::Empty);
        assert_eq!(fails("task,part,a,y\n").2, DataErrorKind::NoRows);
        assert_eq!(fails("id,part,a,y\n"), (1, 1, DataErrorKind::BadHeader("id".into())));
        assert_eq!(
            fails("task,side,a,y\n"),
            (1, 6, DataErrorKind::BadHeader("side".into()))
        );
        assert_eq!(
            fails("task,part,y\n"),
            (1, 0, DataErrorKind::ColumnCount { expected: 4, found: 3 })
        );
        assert_eq!(
            fails("task,part,a,y\nt,support,1,2\nt,query,1\n"),
            (3, 0, DataErrorKind::ColumnCount { expected: 4, found: 3 })
        );
        assert_eq!(
            fails("task,part,a,b,y\nt,support,1,2,3,4\n"),
            (2, 0, DataErrorKind::ColumnCount { expected: 5, found: 6 })
        );
        assert_eq!(
            fails("task,part,a,b,y\nt,support,1.5,x1,0\n"),
            (2, 15, DataErrorKind::NotANumber("x1".into()))
        );
        assert_eq!(
            fails("task,part,a,b,y\nt,support,1,2,NaN\n"),
            (2, 15, DataErrorKind::NonFinite("NaN".into()))
        );
        assert_eq!(
            fails("task,part,a,y\nt,support,1,2\nt,train,1,2\n"),
            (3, 3, DataErrorKind::BadPart("train".into()))
        );
        assert_eq!(
            fails("task,part,a,y\nt,support,1,2\nu,query,1,2\nt,query,1,2\n"),
            (0, 0, DataErrorKind::IncompleteTask("u".into()))
        );
        let e = parse_tasks("d/tasks.csv", "task,part,a,y\nt,support,zz,1\n").unwrap_err();
        assert_eq!(e.to_string(), "d/tasks.csv:2:11: not a number: \"zz\"");
    }
}
