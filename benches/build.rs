//! Builds the plain C logistic gradient that `benches/oracles.rs` compares the library with,
//! optimized as a C programmer would for the machine at hand.
fn main() {
    println!("cargo::rerun-if-changed=c/logistic.c");
    cc::Build::new()
        .file("c/logistic.c")
        .opt_level(3)
        .flag("-march=native")
        .compile("logistic_c");
    println!("cargo::rustc-link-lib=m");
}
