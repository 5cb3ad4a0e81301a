//! Data hyper-cleaning on real data: digits 8×8 with half of 300 training labels flipped,
//! one weight per training sample tuned by NSBO-SGD (see `bilevel_tests::cleaning`).
//!
//! ```text
//! cargo run --release -p bilevel-tests --example hyper_cleaning [iterations]
//! ```

fn main() {
    let iterations = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let r = bilevel_tests::cleaning::run(iterations, 7);
    let c = r.oracle_calls;
    println!(
        "digits 8×8: {} training rows ({} labels flipped), {} validation, {} test",
        300, r.flipped, 300, r.test_rows
    );
    println!(
        "NSBO-SGD, {} outer steps, minibatches of 32: {} ∇_y g, {} ∇f, {} ∇²_yy g·v, {} ∇²_xy g·v",
        r.iterations, c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross
    );
    println!(
        "test accuracy: uniform weights {:.1} %, tuned weights {:.1} %, clean rows only {:.1} %",
        100.0 * r.uniform_accuracy,
        100.0 * r.tuned_accuracy,
        100.0 * r.clean_only_accuracy
    );
    println!("flipped vs clean rows: AUC of the tuned weights {:.3}", r.auc);
}
