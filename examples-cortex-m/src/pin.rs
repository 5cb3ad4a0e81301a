//! A board LED as an `embedded_hal::digital::OutputPin`, without a PAC: one memory-mapped
//! register, read back for the pin state, behind a safe wrapper that can be taken once.
//!
//! - mps2-an385/an386 (`thumbv7m`, `thumbv7em`): the FPGA I/O block's `LED0` register at
//!   `0x4002_8000`, bit 0 (user LED 0). QEMU keeps the register's value, so reading it back
//!   shows what the firmware wrote.
//! - micro:bit (nRF51, `thumbv6m`): GPIO P0.13 (LED matrix row 1) through the `OUTSET` /
//!   `OUTCLR` registers at `0x5000_0508` / `0x5000_050C`, read back from `OUT`
//!   (`0x5000_0504`); `DIRSET` (`0x5000_0518`) makes it an output.
//!
//! The firmware toggles the pin once per outer step, so a logic analyser on real hardware
//! times the steps; under QEMU the firmware counts the edges it reads back.

use core::cell::Cell;
use core::convert::Infallible;

use cortex_m::interrupt::{self, Mutex};
use embedded_hal::digital::{ErrorType, OutputPin, StatefulOutputPin};

static TAKEN: Mutex<Cell<bool>> = Mutex::new(Cell::new(false));

#[cfg(not(board = "microbit"))]
mod regs {
    pub const OUT: usize = 0x4002_8000;
    pub const MASK: u32 = 1;
}

#[cfg(board = "microbit")]
mod regs {
    pub const OUT: usize = 0x5000_0504;
    pub const OUTSET: usize = 0x5000_0508;
    pub const OUTCLR: usize = 0x5000_050C;
    pub const DIRSET: usize = 0x5000_0518;
    pub const MASK: u32 = 1 << 13;
}

fn read(address: usize) -> u32 {
    // SAFETY: only called with the board's GPIO/LED register addresses above, which are
    // valid, aligned device registers; reading them has no side effects.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn write(address: usize, value: u32) {
    // SAFETY: only called with the board's GPIO/LED register addresses above; the one
    // `BoardLed` owns them (see `BoardLed::take`), so no other code writes them.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

/// The board's user LED. At most one exists (see [`BoardLed::take`]).
#[derive(Debug)]
pub struct BoardLed {
    _owned: (),
}

impl BoardLed {
    /// The LED, configured as an output and switched off; `None` if it was already taken.
    pub fn take() -> Option<Self> {
        let first = interrupt::free(|cs| !TAKEN.borrow(cs).replace(true));
        if !first {
            return None;
        }
        #[cfg(board = "microbit")]
        write(regs::DIRSET, regs::MASK);
        let mut led = BoardLed { _owned: () };
        let Ok(()) = led.set_low();
        Some(led)
    }
}

impl ErrorType for BoardLed {
    type Error = Infallible;
}

impl OutputPin for BoardLed {
    fn set_low(&mut self) -> Result<(), Infallible> {
        #[cfg(not(board = "microbit"))]
        write(regs::OUT, read(regs::OUT) & !regs::MASK);
        #[cfg(board = "microbit")]
        write(regs::OUTCLR, regs::MASK);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        #[cfg(not(board = "microbit"))]
        write(regs::OUT, read(regs::OUT) | regs::MASK);
        #[cfg(board = "microbit")]
        write(regs::OUTSET, regs::MASK);
        Ok(())
    }
}

impl StatefulOutputPin for BoardLed {
    fn is_set_high(&mut self) -> Result<bool, Infallible> {
        Ok(read(regs::OUT) & regs::MASK != 0)
    }

    fn is_set_low(&mut self) -> Result<bool, Infallible> {
        Ok(read(regs::OUT) & regs::MASK == 0)
    }
}

/// Counts the edges of a pin as read back after each toggle: proof under QEMU that the
/// writes reached the register.
#[derive(Debug)]
pub struct EdgeCounter<P> {
    pin: P,
    last: bool,
    /// Edges seen so far.
    pub edges: u32,
}

impl<P: StatefulOutputPin<Error = Infallible>> EdgeCounter<P> {
    /// Starts counting from the pin's current state.
    pub fn new(mut pin: P) -> Self {
        let Ok(last) = pin.is_set_high();
        EdgeCounter { pin, last, edges: 0 }
    }

    /// Toggles the pin and counts the edge if the register reads back the new state.
    pub fn toggle(&mut self) {
        let Ok(()) = self.pin.toggle();
        let Ok(now) = self.pin.is_set_high();
        if now != self.last {
            self.edges += 1;
        }
        self.last = now;
    }
}
