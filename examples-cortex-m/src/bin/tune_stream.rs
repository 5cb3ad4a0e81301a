//! Tunes ridge regression's L2 strength on a stream of samples generated on the device, one
//! minibatch per outer step, toggling the board LED (an `embedded_hal::digital::OutputPin`)
//! once per step. Prints the tuned `λ`, the evaluation losses and their bits, the pin edges
//! read back, state sizes, static RAM and the stack high-water mark. Exit status 0 on
//! success, non-zero on any error or failed check.
#![no_std]
#![no_main]

use bilevel_cortex_m_examples::scenario;
use bilevel_cortex_m_examples::{run_on_host, stream_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

#[entry]
fn main() -> ! {
    let (mut source, _) = scenario::stream_sources();
    run_on_host(|out| stream_report(out, &mut source))
}
