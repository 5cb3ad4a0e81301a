//! Tunes the `f32` quadratic with NBO-GD (and AID-CG for comparison) on the device and
//! prints `x`, `F`, iterations, oracle calls, their `to_bits`, the solver state sizes, static
//! RAM and the stack high-water mark over semihosting. Exit status 0 on success, non-zero
//! on any error or failed check (see `bilevel_cortex_m_examples::exit_code`).
#![no_std]
#![no_main]

use core::fmt::Write;
use core::mem::size_of;

use bilevel::problem::Counted;
use bilevel_cortex_m_examples::scenario::{self, Failure, QuadraticAid, QuadraticNbo, TunedQuadratic};
use bilevel_cortex_m_examples::{HostOut, run_on_host, stack, write_memory_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

fn report(out: &mut HostOut) -> Result<(), Failure> {
    stack::repaint();
    let result = scenario::tune_quadratic(out);
    let used = stack::high_water();
    // Device figures first: they are worth having even when the run failed.
    writeln!(
        out,
        "device: size_of Quadratic<f32, 4, 6> {} B",
        size_of::<TunedQuadratic>()
    )?;
    writeln!(
        out,
        "device: size_of Counted<&Quadratic> {} B",
        size_of::<Counted<&TunedQuadratic>>()
    )?;
    writeln!(out, "device: size_of Nbo<f32, 6> {} B", size_of::<QuadraticNbo>())?;
    writeln!(out, "device: size_of Aid<f32, 6> {} B", size_of::<QuadraticAid>())?;
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
