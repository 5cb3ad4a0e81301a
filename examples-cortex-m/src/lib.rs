//! Shared firmware code for the `bilevel` examples under QEMU: report output over
//! semihosting, stack painting with a high-water mark, static RAM figures, exit codes, and a
//! timing pin behind `embedded_hal::digital::OutputPin`.
//!
//! The computations themselves live in [`scenario`], which uses only `bilevel` and `core`
//! so the host can run the very same code and compare the bits.
#![no_std]

pub mod pin;
pub mod retained;
pub mod scenario;
pub mod serial;
pub mod stack;

use core::fmt;

use core::fmt::Write as _;
use core::mem::size_of;

use bilevel::Error;
use pin::{BoardLed, EdgeCounter};
use scenario::{Failure, LeastSquaresStats, STREAM_STEPS, SampleSource, StreamMemory, StreamNsbo, StreamTuner};
use semihosting::io::Write as _;

/// The host's standard output over semihosting, as a `core::fmt::Write`.
pub struct HostOut(semihosting::io::Stdout);

impl HostOut {
    /// Opens the host's standard output; `None` when the debugger (or QEMU) does not
    /// support semihosting.
    pub fn open() -> Option<Self> {
        semihosting::io::stdout().ok().map(HostOut)
    }
}

impl fmt::Write for HostOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Process exit status for a [`Failure`]: 2 for a failed check, 3 for failed output, and
/// `10 + k` for the library's error kinds (19 for kinds newer than this table), so a CI log
/// tells them apart.
pub fn exit_code(failure: &Failure) -> i32 {
    match failure {
        Failure::Check { .. } => 2,
        Failure::Output => 3,
        Failure::Library(e) => match e {
            Error::NonFinite { .. } => 10,
            Error::InvalidConfig { .. } => 11,
            Error::Breakdown { .. } => 12,
            Error::Budget => 13,
            Error::Unsupported { .. } => 14,
            Error::OracleFailed { .. } => 15,
            Error::InvalidData { .. } => 16,
            Error::Capacity { .. } => 17,
            // Kinds added to the library later share one status until they get their own.
            #[allow(unreachable_patterns)]
            _ => 19,
        },
    }
}

/// Ends the program under QEMU (semihosting `SYS_EXIT_EXTENDED`): status 0 on success,
/// [`exit_code`] on failure.
pub fn exit(result: Result<(), Failure>) -> ! {
    match result {
        Ok(()) => semihosting::process::exit(0),
        Err(f) => semihosting::process::exit(exit_code(&f)),
    }
}

/// The body of every firmware `main`: runs `report` on the host's output (writing its
/// error there too), then exits with its status.
pub fn run_on_host(report: impl FnOnce(&mut HostOut) -> Result<(), Failure>) -> ! {
    let result = match HostOut::open() {
        Some(mut out) => {
            let result = report(&mut out);
            if let Err(e) = &result {
                let _ = writeln!(out, "{e}");
            }
            result
        }
        None => Err(Failure::Output),
    };
    exit(result)
}

/// Writes the device-only figures of a run: static RAM, the stack high-water mark and the
/// stack's size. Every line starts with `device:`, so host comparisons can drop them.
pub fn write_memory_report<W: fmt::Write>(out: &mut W, stack_used: usize) -> fmt::Result {
    let ram = stack::static_ram();
    writeln!(
        out,
        "device: static RAM {} B (.data {} B, .bss {} B)",
        ram.data + ram.bss,
        ram.data,
        ram.bss
    )?;
    writeln!(
        out,
        "device: stack high-water mark {} B of {} B",
        stack_used,
        stack::stack_size()
    )
}

/// The streaming firmware's work: tune on minibatches from `source` (evaluation sets from
/// the on-device generator), toggle the board LED once per outer step and count the edges
/// read back, then print the device figures. Shared by `tune_stream` (samples generated on
/// the device) and `tune_stream_uart` (samples from the serial line).
pub fn stream_report<S: SampleSource>(out: &mut HostOut, source: &mut S) -> Result<(), Failure> {
    let led = BoardLed::take().ok_or(Failure::Check { what: "LED taken once" })?;
    let mut pin = EdgeCounter::new(led);
    let (_, mut eval) = scenario::stream_sources();
    stack::repaint();
    let result = scenario::tune_stream(out, source, &mut eval, |_, _| {
        pin.toggle();
        Ok(())
    });
    let used = stack::high_water();
    writeln!(
        out,
        "device: size_of Nsbo<f32, 1, 5, Ring> {} B",
        size_of::<StreamNsbo>()
    )?;
    writeln!(out, "device: size_of StreamTuner {} B", size_of::<StreamTuner>())?;
    writeln!(out, "device: size_of StreamMemory {} B", size_of::<StreamMemory>())?;
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

/// Defines a `#[panic_handler]` that prints the panic message on the host's standard error
/// and exits with status 101. A macro rather than an item of this library, so a bin
/// (`panic_check`) can bring its own handler.
#[macro_export]
macro_rules! semihosting_panic_handler {
    () => {
        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo) -> ! {
            semihosting::eprintln!("{}", info);
            semihosting::process::exit(101)
        }
    };
}
