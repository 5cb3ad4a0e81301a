//! Picks the memory map per target and adds the linker scripts. The sources are not named
//! `memory.x`: a file of that name in this folder would shadow the generated one (the linker
//! searches the working directory first).

use std::{env, error::Error, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let target = env::var("TARGET")?;
    let memory: &[u8] = if target == "thumbv6m-none-eabi" {
        include_bytes!("memory-microbit.x")
    } else {
        include_bytes!("memory-mps2.x")
    };
    fs::write(out.join("memory.x"), memory)?;
    // The board each target runs on under QEMU: selects the LED register in `src/pin.rs`.
    println!("cargo::rustc-check-cfg=cfg(board, values(\"mps2\", \"microbit\"))");
    let board = if target == "thumbv6m-none-eabi" {
        "microbit"
    } else {
        "mps2"
    };
    println!("cargo:rustc-cfg=board=\"{board}\"");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-mps2.x");
    println!("cargo:rerun-if-changed=memory-microbit.x");
    if target.starts_with("thumb") {
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
            println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        }
    }
    Ok(())
}
