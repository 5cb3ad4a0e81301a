//! The real data sets shipped with the library (see `std-shim/data/README.md` for their
//! origin and licence), compiled into the binary.

use crate::data::{DataError, Dataset, Target, parse_csv};

/// The header line of the bundled breast-cancer CSV.
pub fn breast_cancer_header() -> &'static str {
    include_str!("../data/breast_cancer.csv").lines().next().unwrap_or("")
}

/// The header line of the bundled digits CSV.
pub fn digits_header() -> &'static str {
    include_str!("../data/digits.csv").lines().next().unwrap_or("")
}

/// Breast Cancer Wisconsin (Diagnostic): 569 rows, 30 features, label 1 = malignant.
pub fn breast_cancer() -> Result<Dataset<30>, DataError> {
    parse_csv(
        "std-shim/data/breast_cancer.csv",
        include_str!("../data/breast_cancer.csv"),
        Target::Classes(2),
    )
}

/// Handwritten digits 8×8: 1797 rows, 64 pixel intensities (0–16), label the digit 0–9.
pub fn digits() -> Result<Dataset<64>, DataError> {
    parse_csv(
        "std-shim/data/digits.csv",
        include_str!("../data/digits.csv"),
        Target::Classes(10),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_data_sets_have_their_documented_shapes() {
        let b = super::breast_cancer().unwrap();
        assert_eq!((b.len(), b.targets.iter().filter(|&&t| t == 1.0).count()), (569, 212));
        let d = super::digits().unwrap();
        assert_eq!(d.len(), 1797);
        assert!(d.rows.iter().flatten().all(|&v| (0.0..=16.0).contains(&v)));
        assert_eq!(d.targets.iter().filter(|&&t| t == 0.0).count(), 178);
    }
}
