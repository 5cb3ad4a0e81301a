//! Arbitrary flash contents: loading never panics, and a loaded payload is one whose CRC
//! held; saving over arbitrary contents then loading returns exactly what was saved.
#![no_main]

use bilevel::checkpoint::Slots;
use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use libfuzzer_sys::fuzz_target;

struct RamFlash([u8; 256]);

#[derive(Debug)]
struct Never;
impl NorFlashError for Never {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}
impl ErrorType for RamFlash {
    type Error = Never;
}
impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Never> {
        let o = offset as usize;
        bytes.copy_from_slice(&self.0[o..o + bytes.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.0.len()
    }
}
impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 32;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Never> {
        self.0[from as usize..to as usize].fill(0xFF);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Never> {
        for (i, b) in bytes.iter().enumerate() {
            self.0[offset as usize + i] &= b;
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut mem = [0xFFu8; 256];
    let n = data.len().min(256);
    mem[..n].copy_from_slice(&data[..n]);
    let payload = data.get(256..).unwrap_or(&[]);
    let mut slots = Slots::new(RamFlash(mem), 0, 128).expect("valid geometry");
    let mut buf = [0u8; 128];
    let _ = slots.load(&mut buf);
    if payload.len() <= slots.capacity() {
        let seq = slots.save(payload, &mut buf).expect("save succeeds on working flash");
        let (s, got) = slots
            .load(&mut buf)
            .expect("load succeeds")
            .expect("a checkpoint exists");
        assert_eq!((s, got), (seq, payload));
    }
});
