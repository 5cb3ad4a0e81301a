//! Tunes the L2 strength of logistic regression on the breast-cancer data (compiled into
//! flash by `bilevel export`) with qNBO-BFGS in `f32`, and prints `ln λ`, the validation loss,
//! the test accuracy, the iterations and oracle calls, their `to_bits`, the solver state
//! size, static RAM and the stack high-water mark over semihosting. Exit status 0 on
//! success, non-zero on any error or failed check.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::mem::size_of;

use bilevel_cortex_m_examples::scenario::{self, Failure, LogregQnbo, TunedLogistic, breast_cancer};
use bilevel_cortex_m_examples::{HostOut, run_on_host, stack, write_memory_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

fn report(out: &mut HostOut) -> Result<(), Failure> {
    stack::repaint();
    let result = scenario::tune_logreg(out);
    let used = stack::high_water();
    writeln!(
        out,
        "device: size_of QnboLbfgs<f32, 31, 4> {} B",
        size_of::<LogregQnbo>()
    )?;
    writeln!(
        out,
        "device: size_of Logistic<f32, 30, 1, 31> {} B",
        size_of::<TunedLogistic<'static>>()
    )?;
    let data = size_of::<[[f32; breast_cancer::COLUMNS]; breast_cancer::TRAIN_ROWS]>()
        + size_of::<[[f32; breast_cancer::COLUMNS]; breast_cancer::VALIDATION_ROWS]>()
        + size_of::<[[f32; breast_cancer::COLUMNS]; breast_cancer::TEST_ROWS]>()
        + 4 * (breast_cancer::TRAIN_ROWS + breast_cancer::VALIDATION_ROWS + breast_cancer::TEST_ROWS);
    writeln!(out, "device: data in flash {data} B")?;
    write_memory_report(out, used)?;
    if let Err(e) = &result {
        writeln!(out, "{e}")?;
    }
    result.map(|_| ())
}

#[entry]
fn main() -> ! {
    run_on_host(report)
}
