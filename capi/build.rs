//! Generates `include/bilevel.h` from the exported items (the header is committed; CI checks
//! that it is up to date).
use std::{env, error::Error};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = env::var("CARGO_MANIFEST_DIR")?;
    let config = cbindgen::Config::from_file("cbindgen.toml")?;
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()?
        .write_to_file("include/bilevel.h");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    Ok(())
}
