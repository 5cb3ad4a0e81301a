//! Few-shot task files for meta-learning: CSV with the header `task,part,features…,target`,
//! one row per sample, `part` either `support` (the task model's fit) or `query` (its
//! score). Tasks are numbered in order of first appearance. Every error names the file, line
//! and column, as the other readers do.

use std::path::Path;

use crate::data::{DataError, DataErrorKind, Dataset, error, number};

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

/// Parses a task file's text; `file` names it in errors.
pub fn parse_tasks(file: &str, text: &str) -> Result<TaskFile, DataError> {
    let mut lines = text.lines().enumerate();
    let Some((h, header)) = lines.find(|(_, l)| !l.trim().is_empty()) else {
        return Err(error(file, 0, 0, DataErrorKind::Empty));
    };
    let names: Vec<&str> = header.split(',').collect();
    let mut column = 1;
    for (k, expected) in ["task", "part"].iter().enumerate() {
        match names.get(k) {
            Some(n) if n.trim().eq_ignore_ascii_case(expected) => column += n.chars().count() + 1,
            Some(n) => {
                return Err(error(
                    file,
                    h + 1,
                    column,
                    DataErrorKind::BadHeader(n.trim().to_string()),
                ));
            }
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
    let fields = names.len();
    if fields < 4 {
        return Err(error(
            file,
            h + 1,
            0,
            DataErrorKind::ColumnCount {
                expected: 4,
                found: fields,
            },
        ));
    }
    let features = fields - 3;
    let mut tasks: Vec<TaskRows> = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != fields {
            return Err(error(
                file,
                n,
                0,
                DataErrorKind::ColumnCount {
                    expected: fields,
                    found: cells.len(),
                },
            ));
        }
        let name = cells[0].trim();
        let part_column = cells[0].chars().count() + 2;
        let mut column = part_column + cells[1].chars().count() + 1;
        let mut row = Vec::with_capacity(features);
        for cell in &cells[2..2 + features] {
            row.push(number(file, n, column, cell)?);
            column += cell.chars().count() + 1;
        }
        let target = number(file, n, column, cells[fields - 1])?;
        let index = match tasks.iter().position(|t| t.name == name) {
            Some(k) => k,
            None => {
                tasks.push(TaskRows {
                    name: name.to_string(),
                    support: (Vec::new(), Vec::new()),
                    query: (Vec::new(), Vec::new()),
                });
                tasks.len() - 1
            }
        };
        let part = match cells[1].trim() {
            "support" => &mut tasks[index].support,
            "query" => &mut tasks[index].query,
            other => return Err(error(file, n, part_column, DataErrorKind::BadPart(other.to_string()))),
        };
        part.0.push(row);
        part.1.push(target);
    }
    if tasks.is_empty() {
        return Err(error(file, 0, 0, DataErrorKind::NoRows));
    }
    if let Some(t) = tasks.iter().find(|t| t.support.1.is_empty() || t.query.1.is_empty()) {
        return Err(error(file, 0, 0, DataErrorKind::IncompleteTask(t.name.clone())));
    }
    Ok(TaskFile { features, tasks })
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
