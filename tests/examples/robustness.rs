//! Prints the robustness table (`docs/robustness.md`); see `bilevel_tests::robustness`.
//!
//! ```text
//! cargo run --release -p bilevel-tests --example robustness > docs/robustness.md
//! ```

fn main() {
    print!("{}", bilevel_tests::robustness::table());
}
