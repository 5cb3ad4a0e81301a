//! Prints the robustness table (`docs/robustness.md`; see `bilevel_tests::robustness`),
//! followed by the record of the longer fuzzing runs (`fuzz/RUNS.md`, kept by hand: the
//! runs take minutes and their counts are measurements, not generated).
//!
//! ```text
//! cargo run --release -p bilevel-tests --example robustness > docs/robustness.md
//! ```

fn main() {
    print!("{}", bilevel_tests::robustness::table());
    print!("\n{}", include_str!("../../fuzz/RUNS.md"));
}
