//! The data-file commands: `data` (a bundled set, or your own file split with a seed) and
//! `export` (data as Rust or C source for firmware).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bilevel_std::data::{Dataset, Standardizer, Target, split_indices};
use bilevel_std::datasets;
use bilevel_std::demo;
use bilevel_std::export::{self, Part};
use bilevel_std::formats::{ReadOptions, Table};
use bilevel_std::run_files::{DataFiles, Standardized};
use bilevel_std::tune;

use crate::{AnyBundled, Format, ProblemArg};

/// Row width of the C library's built-in problems (`BL_LOGREG_FEATURES`).
const C_COLUMNS: usize = 31;
/// The widest user data `export` takes: the widest compiled problem of `tune`.
const EXPORT_WIDTH: usize = tune::WIDTHS[tune::WIDTHS.len() - 1];

/// Your own files for `export`.
pub(crate) struct UserExport<'a> {
    pub(crate) train: &'a Path,
    pub(crate) val: &'a Path,
    pub(crate) test: Option<&'a Path>,
    pub(crate) problem: ProblemArg,
    pub(crate) read: ReadOptions,
}

pub(crate) fn run_export(
    format: Format,
    out: &PathBuf,
    columns: Option<usize>,
    seed: u64,
    user: Option<UserExport<'_>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (header, data) = match user {
        None => {
            let split = demo::breast_cancer_split(seed)?;
            let header = format!(
                "Breast cancer (Wisconsin diagnostic), split with seed {seed} ({} / {} / {} rows), standardized with \
                 the training statistics; label 1 = malignant.",
                split.train.len(),
                split.validation.len(),
                split.test.len()
            );
            let pad = |d: &Dataset<{ demo::FEATURES }>| Dataset::<EXPORT_WIDTH> {
                rows: d
                    .rows
                    .iter()
                    .map(|r| std::array::from_fn(|j| r.get(j).copied().unwrap_or(0.0)))
                    .collect(),
                targets: d.targets.clone(),
            };
            let s = &split.standardizer;
            let standardizer = Standardizer::<EXPORT_WIDTH> {
                mean: std::array::from_fn(|j| s.mean.get(j).copied().unwrap_or(0.0)),
                scale: std::array::from_fn(|j| s.scale.get(j).copied().unwrap_or(1.0)),
            };
            let data = Standardized {
                train: pad(&split.train),
                validation: pad(&split.validation),
                test: Some(pad(&split.test)),
                standardizer,
            };
            (header, (data, demo::FEATURES))
        }
        Some(u) => {
            let target = match u.problem {
                ProblemArg::Ridge => Target::Real,
                ProblemArg::Hyperclean => Target::Classes(10),
                _ => Target::Classes(2),
            };
            let files = DataFiles::read(u.train, u.val, u.test, u.read, target)?;
            let data = files.standardized::<EXPORT_WIDTH>()?;
            let sizes: Vec<String> = files.tables().map(|(_, t)| t.rows.len().to_string()).collect();
            let names: Vec<String> = files.tables().map(|(_, t)| t.file.clone()).collect();
            let pairs: Vec<String> = files.labels.pairs().iter().map(|(l, c)| format!("{l} = {c}")).collect();
            let labels = if pairs.is_empty() {
                String::new()
            } else {
                format!("; labels {}", pairs.join(", "))
            };
            let header = format!(
                "{} ({} rows, {} features), standardized with the training statistics{labels}.",
                names.join(", "),
                sizes.join(" / "),
                files.features
            );
            (header, (data, files.features))
        }
    };
    let (data, features) = data;
    let columns = columns.unwrap_or(match format {
        Format::Rust => features,
        Format::C => C_COLUMNS.max(features),
    });
    if columns < features {
        return Err(format!("--columns {columns} is fewer than the data's {features} features").into());
    }
    let mut parts = vec![
        Part {
            name: "train",
            data: &data.train,
        },
        Part {
            name: "validation",
            data: &data.validation,
        },
    ];
    if let Some(test) = &data.test {
        parts.push(Part {
            name: "test",
            data: test,
        });
    }
    let text = match format {
        Format::Rust => export::rust_module(&header, &parts, columns, &data.standardizer),
        Format::C => export::c_header(&header, "BILEVEL_DATA_H", &parts, columns, &data.standardizer),
    };
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    out!("wrote {} ({} columns)", out.display(), columns);
    Ok(())
}

/// `data --from`: splits a user's file with a seed into train/val/test CSV files.
pub(crate) fn run_split(
    from: &Path,
    out: &Path,
    split: &[f64],
    seed: u64,
    read: ReadOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let (train, validation) = match split {
        &[t, v] if t > 0.0 && v > 0.0 && t + v <= 1.0 => (t, v),
        _ => return Err(format!("--split {split:?}: two positive fractions that add up to at most 1").into()),
    };
    let table = Table::read(from, read)?;
    let n = table.rows.len();
    let train = ((n as f64 * train).round() as usize).min(n);
    let validation = ((n as f64 * validation).round() as usize).min(n - train);
    let parts = split_indices(n, train, validation, seed);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for (name, rows) in ["train.csv", "val.csv", "test.csv"].iter().zip(&parts) {
        let path = out.join(name);
        std::fs::write(&path, table.to_csv(rows)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    out!(
        "wrote {}/{{train,val,test}}.csv ({} / {} / {} rows, split seed {seed}) from {} ({}, {} features)",
        out.display(),
        parts[0].len(),
        parts[1].len(),
        parts[2].len(),
        from.display(),
        table.layout,
        table.features
    );
    Ok(())
}

pub(crate) fn run_data(dataset: AnyBundled, out: &PathBuf, seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, text: String| -> Result<(), Box<dyn std::error::Error>> {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    };
    let (sizes, parts) = match dataset {
        AnyBundled::BreastCancer => {
            let (a, b, c) = datasets::breast_cancer()?.split(demo::SPLIT.0, demo::SPLIT.1, seed);
            let h = datasets::breast_cancer_header();
            ((a.len(), b.len(), c.len()), [a.to_csv(h), b.to_csv(h), c.to_csv(h)])
        }
        AnyBundled::Digits => {
            let (a, b, c) = datasets::digits()?.split(DIGITS_SPLIT.0, DIGITS_SPLIT.1, seed);
            let h = datasets::digits_header();
            ((a.len(), b.len(), c.len()), [a.to_csv(h), b.to_csv(h), c.to_csv(h)])
        }
        AnyBundled::Regression => (
            (50, 200, 200),
            [
                datasets::synthetic_regression(50, 5, seed),
                datasets::synthetic_regression(200, 5, seed + 1),
                datasets::synthetic_regression(200, 5, seed + 2),
            ],
        ),
        AnyBundled::Tasks => {
            write("tasks.csv", datasets::synthetic_tasks(16, 5, 15, 3, seed))?;
            write("test-tasks.csv", datasets::synthetic_tasks(4, 5, 15, 3, seed + 1))?;
            out!(
                "wrote {}/{{tasks,test-tasks}}.csv (16 / 4 tasks of 5 support and 15 query rows, seed {seed})",
                out.display()
            );
            return Ok(());
        }
    };
    let [train, val, test] = parts;
    write("train.csv", train)?;
    write("val.csv", val)?;
    write("test.csv", test)?;
    out!(
        "wrote {}/{{train,val,test}}.csv ({} / {} / {} rows, {} {seed})",
        out.display(),
        sizes.0,
        sizes.1,
        sizes.2,
        if matches!(dataset, AnyBundled::Regression) {
            "generated with seed"
        } else {
            "split seed"
        }
    );
    Ok(())
}

/// Train and validation rows of the digits split of `bilevel data` (the rest is the test set).
const DIGITS_SPLIT: (usize, usize) = (300, 300);
