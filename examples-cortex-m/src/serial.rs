//! Samples over a serial line: the CMSDK APB UART0 of the mps2 boards (`0x4000_4000`),
//! without a PAC, and a [`SampleSource`] that reads minibatches from it.
//!
//! Wire format (little-endian): the magic `BLV1`, the number of samples as `u32`, then per
//! sample [`STREAM_FEATURES`] features and the target as `f32` (20 bytes). Under QEMU the
//! runner feeds a host file to the UART (`QEMU_SERIAL_INPUT`, see `qemu-run.sh`); the host
//! writes it with `cargo run --release -p bilevel-tests --example device_report --
//! stream-samples`.
//!
//! Only the mps2 boards have this UART; on the micro:bit [`CmsdkUart::take`] returns `None`.

use core::cell::Cell;

use cortex_m::interrupt::{self, Mutex};
use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;

use crate::scenario::{Failure, Row, STREAM_FEATURES, SampleSource};

/// The magic that starts a sample stream.
pub const MAGIC: [u8; 4] = *b"BLV1";

static TAKEN: Mutex<Cell<bool>> = Mutex::new(Cell::new(false));

const UART0: usize = 0x4000_4000;
const DATA: usize = UART0;
const STATE: usize = UART0 + 0x04;
const CTRL: usize = UART0 + 0x08;
const BAUDDIV: usize = UART0 + 0x10;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_RX_ENABLE: u32 = 1 << 1;

/// SysTick wraps (each 2²⁴ core cycles: 0.67 s at the mps2's 25 MHz) without a byte before
/// the stream counts as ended.
const TIMEOUT_WRAPS: u32 = 15;

fn read(address: usize) -> u32 {
    // SAFETY: only called with UART0's register addresses above (valid, aligned device
    // registers on mps2-an385/an386); `CmsdkUart` is their single owner.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn write(address: usize, value: u32) {
    // SAFETY: as in `read`; writes configure the UART that `CmsdkUart` owns.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

/// UART0 with its receiver enabled. At most one exists.
pub struct CmsdkUart {
    clock: SYST,
}

impl CmsdkUart {
    /// UART0 with the receiver enabled, timing its reads with `clock` (SysTick); `None` if
    /// already taken or not on this board.
    pub fn take(mut clock: SYST) -> Option<Self> {
        if cfg!(board = "microbit") {
            return None;
        }
        let first = interrupt::free(|cs| !TAKEN.borrow(cs).replace(true));
        if !first {
            return None;
        }
        write(BAUDDIV, 16);
        write(CTRL, CTRL_RX_ENABLE);
        clock.set_clock_source(SystClkSource::Core);
        clock.set_reload(0x00ff_ffff);
        clock.clear_current();
        clock.enable_counter();
        Some(CmsdkUart { clock })
    }

    /// The next received byte, or `None` when nothing arrives for about ten seconds (the end
    /// of the stream, or a line that is not connected). Timed by SysTick, not by a poll
    /// count: how fast a poll loop runs says nothing about when bytes arrive.
    pub fn read_byte(&mut self) -> Option<u8> {
        let _ = self.clock.has_wrapped();
        let mut wraps = 0;
        while wraps < TIMEOUT_WRAPS {
            if read(STATE) & STATE_RX_FULL != 0 {
                return Some((read(DATA) & 0xff) as u8);
            }
            if self.clock.has_wrapped() {
                wraps += 1;
            }
        }
        None
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], Failure> {
        let mut b = [0u8; N];
        for v in b.iter_mut() {
            *v = self.read_byte().ok_or(Failure::Check {
                what: "serial sample stream ended early",
            })?;
        }
        Ok(b)
    }
}

/// Minibatches read from the UART, in the wire format above.
pub struct UartSource {
    uart: CmsdkUart,
    remaining: u32,
}

impl UartSource {
    /// Reads and checks the stream's header.
    pub fn open(mut uart: CmsdkUart) -> Result<Self, Failure> {
        if uart.read_array::<4>()? != MAGIC {
            return Err(Failure::Check {
                what: "serial sample stream starts with BLV1",
            });
        }
        let remaining = u32::from_le_bytes(uart.read_array::<4>()?);
        Ok(UartSource { uart, remaining })
    }

    /// Samples announced but not read yet.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl SampleSource for UartSource {
    fn fill(&mut self, rows: &mut [Row], targets: &mut [f32]) -> Result<(), Failure> {
        for (row, t) in rows.iter_mut().zip(targets.iter_mut()) {
            if self.remaining == 0 {
                return Err(Failure::Check {
                    what: "serial sample stream holds enough samples",
                });
            }
            for v in row.iter_mut().take(STREAM_FEATURES) {
                *v = f32::from_le_bytes(self.uart.read_array::<4>()?);
            }
            row[STREAM_FEATURES] = 1.0;
            *t = f32::from_le_bytes(self.uart.read_array::<4>()?);
            self.remaining -= 1;
        }
        Ok(())
    }
}
