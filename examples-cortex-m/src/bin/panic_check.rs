#![no_std]
#![no_main]
use cortex_m_rt::entry;
bilevel_cortex_m_examples::semihosting_panic_handler!();
#[entry]
fn main() -> ! {
    bilevel_cortex_m_examples::exit(Ok(()))
}
