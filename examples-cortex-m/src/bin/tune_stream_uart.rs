//! `tune_stream` with its training samples read from the serial line (UART0 of the mps2
//! boards) instead of generated on the device: under QEMU the runner feeds a host file to
//! the UART (`QEMU_SERIAL_INPUT`). The host writes that file from the same generator, so the
//! report equals `tune_stream`'s bit for bit. Fails if the stream holds too few samples,
//! or more than the run consumed.
#![no_std]
#![no_main]

use core::fmt::Write;

use bilevel_cortex_m_examples::scenario::Failure;
use bilevel_cortex_m_examples::serial::{CmsdkUart, UartSource};
use bilevel_cortex_m_examples::{HostOut, exit, stream_report};
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
    let result = match HostOut::open() {
        Some(mut out) => {
            let result = run(&mut out);
            if let Err(e) = &result {
                let _ = writeln!(out, "{e}");
            }
            result
        }
        None => Err(Failure::Output),
    };
    exit(result)
}
