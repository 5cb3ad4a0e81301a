//! Tunes ridge regression's L2 strength on a stream of samples, one minibatch per outer
//! step, toggling the board LED (an `embedded_hal::digital::OutputPin`) once per step.
//! Prints the tuned `λ`, the evaluation losses and their bits, the pin edges read back,
//! static RAM and the stack high-water mark. Exit status 0 on success, non-zero on any
//! error or failed check.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::mem::size_of;

use bilevel::algo::nbo::Nbo;
use bilevel_cortex_m_examples::pin::{BoardLed, EdgeCounter};
use bilevel_cortex_m_examples::scenario::{self, Failure, LeastSquaresStats, MinibatchRidge, STREAM_DY, STREAM_STEPS};
use bilevel_cortex_m_examples::{HostOut, exit, stack, write_memory_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

fn report(out: &mut HostOut) -> Result<(), Failure> {
    let led = BoardLed::take().ok_or(Failure::Check { what: "LED taken once" })?;
    let mut pin = EdgeCounter::new(led);
    let (mut source, mut eval) = scenario::stream_sources();
    stack::repaint();
    let result = scenario::tune_stream(out, &mut source, &mut eval, |_, _| {
        pin.toggle();
        Ok(())
    });
    let used = stack::high_water();
    writeln!(
        out,
        "device: size_of Nbo<f32, 5> {} B",
        size_of::<Nbo<f32, STREAM_DY>>()
    )?;
    writeln!(
        out,
        "device: size_of MinibatchRidge {} B",
        size_of::<MinibatchRidge<'static>>()
    )?;
    writeln!(
        out,
        "device: size_of LeastSquaresStats {} B",
        size_of::<LeastSquaresStats>()
    )?;
    writeln!(
        out,
        "device: LED edges read back {} of {} steps",
        pin.edges, STREAM_STEPS
    )?;
    write_memory_report(out, used)?;
    if let Err(e) = &result {
        writeln!(out, "{e}")?;
    }
    result?;
    if pin.edges != STREAM_STEPS {
        return Err(Failure::Check {
            what: "one LED edge per outer step",
        });
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    let result = match HostOut::open() {
        Some(mut out) => report(&mut out),
        None => Err(Failure::Output),
    };
    exit(result)
}
