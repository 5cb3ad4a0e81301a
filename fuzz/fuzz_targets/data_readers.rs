//! Arbitrary text through the CSV and LIBSVM readers: never a panic; a file that reads has
//! one target per row, all values finite, labels in range.
#![no_main]

use bilevel_std::data::{Target, parse_csv, parse_libsvm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for target in [Target::Real, Target::Classes(3)] {
        if let Ok(d) = parse_csv::<3>("fuzz.csv", text, target) {
            assert_eq!(d.rows.len(), d.targets.len());
            assert!(d.rows.iter().flatten().chain(&d.targets).all(|v| v.is_finite()));
            if target == Target::Classes(3) {
                assert!(d.targets.iter().all(|&t| t == 0.0 || t == 1.0 || t == 2.0));
            }
        }
        if let Ok(d) = parse_libsvm::<3>("fuzz.svm", text, target) {
            assert_eq!(d.rows.len(), d.targets.len());
            assert!(d.rows.iter().flatten().chain(&d.targets).all(|v| v.is_finite()));
        }
    }
});
