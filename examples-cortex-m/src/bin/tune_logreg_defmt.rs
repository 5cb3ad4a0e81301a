//! `tune_logreg` with defmt logging instead of `core::fmt` text: the same qNBO run on the
//! breast-cancer data in flash, logged as defmt frames over semihosting and decoded on the
//! host by `defmt-print`. Without float formatting on the device the code is a fraction of
//! the text version's (the data in flash is the same).
//!
//! `cargo run --release --features defmt --bin tune_logreg_defmt`
#![no_std]
#![no_main]

use bilevel_cortex_m_examples::scenario::{self, Failure};
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

fn run() -> Result<(), Failure> {
    stack::repaint();
    let r = scenario::logreg_run()?;
    let report = r.report;
    defmt::info!(
        "qnbo-bfgs: {} after {=u32} iterations, |h| = {=f32}",
        report.outcome,
        report.iterations,
        report.hypergradient_norm
    );
    defmt::info!("qnbo-bfgs: oracle calls {}", report.oracle_calls);
    defmt::info!(
        "qnbo-bfgs: ln lambda = {=f32}, validation loss = {=f32}, test accuracy = {=f32}",
        r.ln_lambda,
        r.validation_loss,
        r.test_accuracy
    );
    defmt::info!(
        "bits qnbo-bfgs x loss accuracy: {=u32:08x} {=u32:08x} {=u32:08x}",
        r.ln_lambda.to_bits(),
        r.validation_loss.to_bits(),
        r.test_accuracy.to_bits()
    );
    defmt::info!("device: stack high-water mark {=usize} B", stack::high_water());
    if r.test_accuracy.is_nan() || r.test_accuracy <= 0.9 {
        return Err(Failure::Check {
            what: "test accuracy above 0.9",
        });
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    let result = run();
    if let Err(f) = &result {
        defmt::error!("failed with exit status {=i32}", exit_code(f));
    }
    exit(result)
}
