//! Labels to targets: real values, class indices as written, or the distinct labels of all
//! the files of a run (±1, 2/4, words) numbered in increasing order, so that a label means
//! the same class in each file.

use std::collections::BTreeSet;

use crate::data::{DataError, DataErrorKind, Target, error, number};
use crate::formats::{Label, Table};

/// How labels become targets, fitted on every file of a run at once so that a label means
/// the same class in each.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelMap {
    /// Real targets (regression).
    Real,
    /// Whole-number labels `0..classes`, used as they are.
    Indices {
        /// Classes the problem takes.
        classes: usize,
    },
    /// Whole numbers outside `0..classes` (±1, 1…10, 2/4): the class is the rank.
    Ranked(Vec<i64>),
    /// Words (or a mix of words and numbers): the class is the rank in byte order.
    Named(Vec<String>),
}

impl LabelMap {
    /// The mapping for `target` of the labels of `tables`. Class labels are used as they are
    /// when they are whole numbers in `0..k`; otherwise distinct labels, at most `k`, are
    /// numbered in increasing order (numerically when all are whole numbers).
    pub fn fit(tables: &[&Table], target: Target) -> Result<LabelMap, DataError> {
        let cells = || {
            tables
                .iter()
                .flat_map(|t| t.labels.iter().map(move |l| (t.file.as_str(), l)))
        };
        let classes = match target {
            Target::Real => {
                for (file, l) in cells() {
                    number(file, l.line, l.column, &l.text)?;
                }
                return Ok(LabelMap::Real);
            }
            Target::Classes(k) => k,
        };
        let whole = |text: &str| text.parse::<f64>().ok().filter(|v| v.fract() == 0.0 && v.abs() < 1e15);
        if cells().all(|(_, l)| whole(&l.text).is_some()) {
            if cells().all(|(_, l)| whole(&l.text).is_some_and(|v| v >= 0.0 && v < classes as f64)) {
                return Ok(LabelMap::Indices { classes });
            }
            let mut seen = BTreeSet::new();
            for (file, l) in cells() {
                seen.insert(whole(&l.text).unwrap_or(0.0) as i64);
                too_many(file, l, seen.len(), classes, || {
                    seen.iter().map(i64::to_string).collect()
                })?;
            }
            return Ok(LabelMap::Ranked(seen.into_iter().collect()));
        }
        if let Some((file, l)) = cells()
            .find(|(_, l)| l.text.parse::<f64>().is_ok_and(|v| v.is_finite() && v.fract() != 0.0) || l.text.is_empty())
        {
            let kind = if l.text.is_empty() {
                DataErrorKind::Missing
            } else {
                DataErrorKind::NotAClass(l.text.clone())
            };
            return Err(error(file, l.line, l.column, kind));
        }
        let mut seen = BTreeSet::new();
        for (file, l) in cells() {
            seen.insert(l.text.as_str());
            too_many(file, l, seen.len(), classes, || {
                seen.iter().map(|s| s.to_string()).collect()
            })?;
        }
        Ok(LabelMap::Named(seen.into_iter().map(str::to_string).collect()))
    }

    /// The target of one label of `file`.
    pub fn target(&self, file: &str, label: &Label) -> Result<f64, DataError> {
        let missing = || {
            error(
                file,
                label.line,
                label.column,
                DataErrorKind::NotAClass(label.text.clone()),
            )
        };
        match self {
            LabelMap::Real => number(file, label.line, label.column, &label.text),
            LabelMap::Indices { .. } => label.text.parse::<f64>().map_err(|_| missing()),
            LabelMap::Ranked(values) => {
                let v = label.text.parse::<f64>().map_err(|_| missing())?;
                values
                    .iter()
                    .position(|&c| c as f64 == v)
                    .map(|p| p as f64)
                    .ok_or_else(missing)
            }
            LabelMap::Named(names) => names
                .iter()
                .position(|n| *n == label.text)
                .map(|p| p as f64)
                .ok_or_else(missing),
        }
    }

    /// The label of class `c` as the files write it.
    pub fn name(&self, c: usize) -> String {
        match self {
            LabelMap::Ranked(values) => values.get(c).map_or_else(|| c.to_string(), i64::to_string),
            LabelMap::Named(names) => names.get(c).cloned().unwrap_or_else(|| c.to_string()),
            LabelMap::Real | LabelMap::Indices { .. } => c.to_string(),
        }
    }

    /// `label → class` pairs when the labels are not the class indices themselves.
    pub fn pairs(&self) -> Vec<(String, usize)> {
        match self {
            LabelMap::Real | LabelMap::Indices { .. } => Vec::new(),
            LabelMap::Ranked(values) => values.iter().enumerate().map(|(i, v)| (v.to_string(), i)).collect(),
            LabelMap::Named(names) => names.iter().cloned().enumerate().map(|(i, n)| (n, i)).collect(),
        }
    }
}

/// The error when the label at `l` makes `count` distinct labels, more than `classes`.
fn too_many(
    file: &str,
    l: &Label,
    count: usize,
    classes: usize,
    seen: impl FnOnce() -> Vec<String>,
) -> Result<(), DataError> {
    if count <= classes {
        return Ok(());
    }
    Err(error(
        file,
        l.line,
        l.column,
        DataErrorKind::TooManyLabels {
            label: l.text.clone(),
            labels: seen(),
            classes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ReadOptions;

    fn csv(text: &str) -> Table {
        Table::parse("t.csv", text, ReadOptions::default()).unwrap()
    }

    fn fails(text: &str, target: Target) -> (usize, usize, DataErrorKind) {
        let e = LabelMap::fit(&[&csv(text)], target).unwrap_err();
        (e.line, e.column, e.kind)
    }

    #[test]
    fn labels_map_to_classes_the_same_way_in_every_file() {
        let train = csv("a,y\n1,yes\n2,no\n3,yes\n");
        let val = csv("a,y\n1,no\n");
        let map = LabelMap::fit(&[&train, &val], Target::Classes(2)).unwrap();
        assert_eq!(map.pairs(), [("no".into(), 0), ("yes".into(), 1)]);
        assert_eq!(train.to_dataset::<1>(&map).unwrap().targets, [1.0, 0.0, 1.0]);
        assert_eq!(val.to_dataset::<1>(&map).unwrap().targets, [0.0]);
        for (text, targets) in [
            ("a,y\n1,-1\n2,+1\n3,1.0\n", [0.0, 1.0, 1.0]),
            ("a,y\n1,0\n2,1\n3,1\n", [0.0, 1.0, 1.0]),
            ("a,y\n1,2\n2,4\n3,4\n", [0.0, 1.0, 1.0]),
        ] {
            let t = csv(text);
            let map = LabelMap::fit(&[&t], Target::Classes(2)).unwrap();
            assert_eq!(t.to_dataset::<1>(&map).unwrap().targets, targets, "{text:?}");
        }
        let digits = csv("a,y\n1,9\n2,0\n");
        assert_eq!(
            LabelMap::fit(&[&digits], Target::Classes(10)).unwrap(),
            LabelMap::Indices { classes: 10 }
        );
        assert_eq!(
            fails("a,y\n1,0\n2,1\n3,2\n", Target::Classes(2)),
            (
                4,
                3,
                DataErrorKind::TooManyLabels {
                    label: "2".into(),
                    labels: vec!["0".into(), "1".into(), "2".into()],
                    classes: 2
                }
            )
        );
        assert_eq!(
            fails("a,y\n1,0.5\n2,1\n", Target::Classes(2)),
            (2, 3, DataErrorKind::NotAClass("0.5".into()))
        );
        assert_eq!(
            fails("a,y\n1,\n2,1\n", Target::Classes(2)),
            (2, 3, DataErrorKind::Missing)
        );
        assert_eq!(
            fails("a,y\n1,zz\n", Target::Real),
            (2, 3, DataErrorKind::NotANumber("zz".into()))
        );
    }
}
