//! The training, validation and test files of a run: read, checked against each other,
//! their labels mapped, and standardized with the training statistics.

use std::collections::BTreeSet;
use std::path::Path;

use crate::data::{DataError, DataErrorKind, Dataset, Standardizer, Target, error};
use crate::formats::{Layout, ReadOptions, Table};
use crate::labels::LabelMap;

/// The training, validation and optional test files of a run, read with their labels mapped
/// the same way in each.
#[derive(Clone, Debug, PartialEq)]
pub struct DataFiles {
    /// The training set (the lower level).
    pub train: Table,
    /// The validation set (the upper level).
    pub validation: Table,
    /// The test set.
    pub test: Option<Table>,
    /// The labels of all three.
    pub labels: LabelMap,
    /// Features per row: the files' (a LIBSVM file may use fewer).
    pub features: usize,
}

/// Train, validation and optional test sets standardized with the training statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardized<const W: usize> {
    /// Training rows.
    pub train: Dataset<W>,
    /// Validation rows.
    pub validation: Dataset<W>,
    /// Test rows.
    pub test: Option<Dataset<W>>,
    /// The map applied (fitted on the training rows; padding columns: mean 0, scale 1).
    pub standardizer: Standardizer<W>,
}

impl DataFiles {
    /// Reads the files of a problem whose labels are `target`. The CSV files must have the
    /// training file's feature count.
    pub fn read(
        train: &Path,
        validation: &Path,
        test: Option<&Path>,
        options: ReadOptions,
        target: Target,
    ) -> Result<DataFiles, DataError> {
        let train = Table::read(train, options)?;
        let validation = Table::read(validation, options)?;
        let test = test.map(|p| Table::read(p, options)).transpose()?;
        let features = [Some(&train), Some(&validation), test.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.features)
            .max()
            .unwrap_or(0);
        for t in [Some(&validation), test.as_ref()].into_iter().flatten() {
            if t.features != train.features && matches!(t.layout, Layout::Csv { .. }) {
                return Err(error(
                    &t.file,
                    0,
                    0,
                    DataErrorKind::FeaturesDiffer {
                        features: t.features,
                        train: train.file.clone(),
                        train_features: train.features,
                    },
                ));
            }
        }
        let tables: Vec<&Table> = [Some(&train), Some(&validation), test.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let labels = LabelMap::fit(&tables, target)?;
        Ok(DataFiles {
            train,
            validation,
            test,
            labels,
            features,
        })
    }

    /// The files with their roles: `train`, `validation`, then `test` if given.
    pub fn tables(&self) -> impl Iterator<Item = (&'static str, &Table)> {
        [
            ("train", Some(&self.train)),
            ("validation", Some(&self.validation)),
            ("test", self.test.as_ref()),
        ]
        .into_iter()
        .filter_map(|(role, t)| t.map(|t| (role, t)))
    }

    /// The data padded to `W` columns and standardized with the training statistics.
    pub fn standardized<const W: usize>(&self) -> Result<Standardized<W>, DataError> {
        let train = self.train.to_dataset::<W>(&self.labels)?;
        let s = Standardizer::fit(&train);
        Ok(Standardized {
            train: s.apply(&train),
            validation: s.apply(&self.validation.to_dataset::<W>(&self.labels)?),
            test: match &self.test {
                Some(t) => Some(s.apply(&t.to_dataset::<W>(&self.labels)?)),
                None => None,
            },
            standardizer: s,
        })
    }

    /// The classes present in `table` (targets after the mapping).
    pub fn classes(&self, table: &Table) -> BTreeSet<usize> {
        table
            .labels
            .iter()
            .filter_map(|l| self.labels.target(&table.file, l).ok())
            .map(|v| v as usize)
            .collect()
    }
}
