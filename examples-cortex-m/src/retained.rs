//! A NOR flash emulated in RAM that survives a reset: the checkpoint slots of `tune_resume`.
//!
//! QEMU does not emulate the flash controllers of these boards (the mps2 "flash" is RAM
//! loaded from the ELF, rewritten at every reset), so the slots live in a `NOLOAD` RAM
//! section (`.uninit`, which cortex-m-rt neither zeroes nor initializes, and which lies
//! below the painted stack). A system reset (`SCB::sys_reset`) restarts the core without
//! clearing RAM; the firmware shows that the section survives by finding its checkpoint after
//! the reset. Erase sets bytes to `0xFF` and writes only clear bits, as on NOR flash.
//!
//! A power cut can be armed: the write that reaches the armed byte count resets the core
//! in the middle of the write, leaving a torn record.

use core::cell::Cell;
use core::mem::MaybeUninit;

use cortex_m::interrupt::{self, Mutex};

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

use crate::scenario::CHECKPOINT_FLASH_BYTES;

/// The retained region: in `.uninit`, so neither the reset handler nor QEMU's loader
/// touches it.
#[unsafe(link_section = ".uninit.checkpoint_flash")]
static mut CELLS: MaybeUninit<[u8; CHECKPOINT_FLASH_BYTES]> = MaybeUninit::uninit();

static TAKEN: Mutex<Cell<bool>> = Mutex::new(Cell::new(false));

/// Out-of-range access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds;

impl NorFlashError for OutOfBounds {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::OutOfBounds
    }
}

/// The retained RAM region as NOR flash. At most one exists.
pub struct RetainedFlash {
    base: *mut u8,
    /// Bytes left before the armed power cut (`None`: no cut).
    cut_after: Option<usize>,
}

impl RetainedFlash {
    /// The region; `None` if already taken.
    pub fn take() -> Option<Self> {
        if interrupt::free(|cs| TAKEN.borrow(cs).replace(true)) {
            return None;
        }
        Some(RetainedFlash {
            base: (&raw mut CELLS).cast::<u8>(),
            cut_after: None,
        })
    }

    /// Resets the core (`SCB::sys_reset`) after `bytes` more bytes erased or written.
    pub fn cut_power_after(&mut self, bytes: usize) {
        self.cut_after = Some(bytes);
    }

    /// The address of the region (for the report).
    pub fn address(&self) -> usize {
        self.base as usize
    }

    fn check(offset: u32, len: usize) -> Result<usize, OutOfBounds> {
        let at = offset as usize;
        match at.checked_add(len) {
            Some(end) if end <= CHECKPOINT_FLASH_BYTES => Ok(at),
            _ => Err(OutOfBounds),
        }
    }

    fn touch(&mut self, at: usize, f: impl Fn(u8) -> u8) {
        match &mut self.cut_after {
            Some(0) => cortex_m::peripheral::SCB::sys_reset(),
            Some(n) => *n -= 1,
            None => {}
        }
        // SAFETY: `at < CHECKPOINT_FLASH_BYTES` (checked by the callers), so the address lies
        // inside `CELLS`, which only this (single) `RetainedFlash` accesses; volatile byte
        // accesses never form a reference to the possibly uninitialized bytes.
        unsafe {
            let p = self.base.add(at);
            p.write_volatile(f(p.read_volatile()));
        }
    }
}

impl ErrorType for RetainedFlash {
    type Error = OutOfBounds;
}

impl ReadNorFlash for RetainedFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), OutOfBounds> {
        let at = Self::check(offset, bytes.len())?;
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above); see `touch`.
            *b = unsafe { self.base.add(at + i).read_volatile() };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        CHECKPOINT_FLASH_BYTES
    }
}

impl NorFlash for RetainedFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 256;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), OutOfBounds> {
        let at = Self::check(from, to.saturating_sub(from) as usize)?;
        for i in at..at + (to - from) as usize {
            self.touch(i, |_| 0xFF);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let at = Self::check(offset, bytes.len())?;
        for (i, &b) in bytes.iter().enumerate() {
            self.touch(at + i, |old| old & b);
        }
        Ok(())
    }
}
