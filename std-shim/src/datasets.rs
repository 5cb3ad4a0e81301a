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

/// A synthetic regression set: `rows` rows of `features` standard Gaussian features and the
/// target `w·a + 1 + 0.5·ε` with `w_j = (−1)^j (j + 1) / features` and `ε` standard Gaussian,
/// all drawn from `seed` (header `a1,…,y`).
pub fn synthetic_regression(rows: usize, features: usize, seed: u64) -> String {
    let mut rng = bilevel::rng::Rng128::new(seed);
    let mut s: String = (1..=features).map(|j| format!("a{j},")).collect();
    s.push_str("y\n");
    for _ in 0..rows {
        let mut t = 1.0;
        for j in 0..features {
            let a: f64 = rng.gaussian();
            let w = if j % 2 == 0 { 1.0 } else { -1.0 } * (j + 1) as f64 / features as f64;
            t += w * a;
            s.push_str(&format!("{a:?},"));
        }
        let e: f64 = rng.gaussian();
        s.push_str(&format!("{:?}\n", t + 0.5 * e));
    }
    s
}

/// A synthetic few-shot task file: `tasks` linear regression tasks in `features` Gaussian
/// features, task `i` with weights `w + 0.3·δᵢ` and bias `2 + 0.3·δ'ᵢ` around the shared
/// `w_j = (−1)^j`, `support` and `query` rows each, targets with noise `0.1·ε`; all drawn
/// from `seed` (header `task,part,a1,…,y`).
pub fn synthetic_tasks(tasks: usize, support: usize, query: usize, features: usize, seed: u64) -> String {
    let mut rng = bilevel::rng::Rng128::new(seed);
    let mut s = String::from("task,part,");
    s.extend((1..=features).map(|j| format!("a{j},")));
    s.push_str("y\n");
    for i in 0..tasks {
        let w: Vec<f64> = (0..features)
            .map(|j| if j % 2 == 0 { 1.0 } else { -1.0 } + 0.3 * rng.gaussian::<f64>())
            .collect();
        let b = 2.0 + 0.3 * rng.gaussian::<f64>();
        for (part, rows) in [("support", support), ("query", query)] {
            for _ in 0..rows {
                s.push_str(&format!("t{i},{part},"));
                let mut t = b;
                for wj in &w {
                    let a: f64 = rng.gaussian();
                    t += wj * a;
                    s.push_str(&format!("{a:?},"));
                }
                let e: f64 = rng.gaussian();
                s.push_str(&format!("{:?}\n", t + 0.1 * e));
            }
        }
    }
    s
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

    #[test]
    fn the_synthetic_sets_read_back() {
        let r = crate::data::parse_csv::<3>(
            "r.csv",
            &super::synthetic_regression(20, 3, 1),
            crate::data::Target::Real,
        )
        .unwrap();
        assert_eq!(r.len(), 20);
        let t = crate::tasks::parse_tasks("t.csv", &super::synthetic_tasks(4, 5, 10, 2, 1)).unwrap();
        assert_eq!((t.features, t.tasks.len()), (2, 4));
        assert!(t.tasks.iter().all(|k| k.support.1.len() == 5 && k.query.1.len() == 10));
    }
}
