//! `tune_stream` with its training samples read from the serial line (UART0 of the mps2
//! boards) instead of generated on the device: under QEMU the runner feeds a host file to
//! the UART (`QEMU_SERIAL_INPUT`). The host writes that file from the same generator, so the
//! report equals `tune_stream`'s bit for bit. Fails if the stream holds too few samples,
//! or more than the run consumed.
#![no_std]
#![no_main]

use bilevel_cortex_m_examples::scenario::Failure;
use bilevel_cortex_m_examples::serial::{CmsdkUart, UartSource};
use bilevel_cortex_m_examples::{HostOut, run_on_host, stream_report};
use cortex_m_rt::entry;

bilevel_cortex_m_examples::semihosting_panic_handler!();

fn run(out: &mut HostOut) -> Result<(), Failure> {
    let core = cortex_m::Peripherals::take().ok_or(Failure::Check {
        what: "core peripherals taken once",
    })?;
    let uart = CmsdkUart::take(core.SYST).ok_or(Failure::Check {
        what: "a CMSDK UART on this board",
    })?;
    let mut source = UartSource::open(uart)?;
    stream_report(out, &mut source)?;
    if source.remaining() != 0 {
        return Err(Failure::Check {
            what: "serial sample stream fully consumed",
        });
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    run_on_host(run)
}
