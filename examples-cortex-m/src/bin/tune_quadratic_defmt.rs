//! `tune_quadratic` with defmt logging instead of `core::fmt` text: the same NBO-GD and
//! AID-CG runs, logged as defmt frames over semihosting and decoded on the host by
//! `defmt-print` (the QEMU runner pipes them through it). No float formatting on the
//! device, so the binary is a fraction of the text version's size.
//!
//! `cargo run --release --features defmt --bin tune_quadratic_defmt`
#![no_std]
#![no_main]

use bilevel::registry::Method;
use bilevel_cortex_m_examples::scenario::{self, Failure, QuadraticResult};
use bilevel_cortex_m_examples::{exit, exit_code, stack};
use cortex_m as _; // links the critical-section implementation defmt needs
use cortex_m_rt::entry;
use defmt_semihosting as _; // global logger: defmt frames on semihosting stdout

#[defmt::panic_handler]
fn defmt_panic() -> ! {
    semihosting::process::exit(101)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("{}", defmt::Display2Format(info));
    semihosting::process::exit(101)
}

fn log(name: &str, r: &QuadraticResult) {
    defmt::info!(
        "{=str}: {} after {=u32} iterations, |h| = {=f32}",
        name,
        r.report.outcome,
        r.report.iterations,
        r.report.hypergradient_norm
    );
    defmt::info!("{=str}: oracle calls {}", name, r.report.oracle_calls);
    defmt::info!("{=str}: x = {}, F = {=f32}", name, r.x, r.value);
    let b = r.x.map(f32::to_bits);
    defmt::info!(
        "bits {=str} x: {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x}",
        name,
        b[0],
        b[1],
        b[2],
        b[3]
    );
    defmt::info!("bits {=str} F: {=u32:08x}", name, r.value.to_bits());
}

fn run() -> Result<(), Failure> {
    stack::repaint();
    let q = scenario::quadratic();
    let nbo = scenario::tune_nbo(&q)?;
    log(Method::NboGd.name(), &nbo);
    let aid = scenario::tune_aid(&q)?;
    log(Method::AidCg.name(), &aid);
    defmt::info!("device: stack high-water mark {=usize} B", stack::high_water());
    scenario::check_quadratic(&nbo)?;
    scenario::check_quadratic(&aid)
}

#[entry]
fn main() -> ! {
    let result = run();
    if let Err(f) = &result {
        defmt::error!("failed with exit status {=i32}", exit_code(f));
    }
    exit(result)
}
