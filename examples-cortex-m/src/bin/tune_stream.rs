//! Tunes ridge regression's L2 strength on a stream of samples generated on the device, one
//! minibatch per outer step, toggling the board LED (an `embedded_hal::digital::OutputPin`)
//! once per step. Prints the tuned `λ`, the evaluation losses and their bits, the pin edges
//! read back, state sizes, static RAM and the stack high-water mark. Exit status 0 on
//! success, non-zero on any error or failed check.
#![no_std]
#![no_main]

use bilevel_cortex_m_examples::scenario::{self, Failure};
use bilevel_cortex_m_examples::{HostOut, exit, stream_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

#[entry]
fn main() -> ! {
    let (mut source, _) = scenario::stream_sources();
    let result = match HostOut::open() {
        Some(mut out) => stream_report(&mut out, &mut source),
        None => Err(Failure::Output),
    };
    exit(result)
}
