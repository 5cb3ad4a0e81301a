//! Two alternating flash slots for checkpoints. Each slot holds one record: a header
//! (magic, sequence number, length, CRC-32) and the payload. A save erases and writes the
//! slot that does *not* hold the newest valid record, payload first and header last, so a
//! power loss at any byte leaves the previous record intact; a torn record fails its CRC and
//! is ignored on load.

use embedded_storage::nor_flash::NorFlash;

use crate::error::Error;

/// Bytes of a record header: magic, sequence number, payload length, CRC-32, each `u32`
/// little-endian.
pub const SLOT_HEADER_BYTES: usize = 16;

const MAGIC: u32 = 0x4C56_4C42; // "BLVL"
/// Largest flash write granularity supported (the tail of a payload is padded on the stack).
const MAX_WRITE_SIZE: usize = 32;

/// CRC-32 (IEEE 802.3, reflected), bitwise: small code, no table in flash.
fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A valid record found in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    slot: u32,
    sequence: u32,
    len: usize,
}

/// Two checkpoint slots of `slot_size` bytes each, starting at `base` in `flash`.
#[derive(Debug)]
pub struct Slots<F> {
    flash: F,
    base: u32,
    slot_size: u32,
}

impl<F: NorFlash> Slots<F> {
    /// Uses `[base, base + 2·slot_size)` of `flash`. Both must be multiples of the erase
    /// size, the region must fit, and the write size must be at most 32 bytes and divide
    /// the header size.
    pub fn new(flash: F, base: u32, slot_size: u32) -> Result<Self, Error> {
        let erase = F::ERASE_SIZE as u32;
        let fits = u64::from(base) + 2 * u64::from(slot_size) <= flash.capacity() as u64;
        let aligned = erase > 0 && base.is_multiple_of(erase) && slot_size.is_multiple_of(erase);
        let writable = F::WRITE_SIZE <= MAX_WRITE_SIZE && SLOT_HEADER_BYTES.is_multiple_of(F::WRITE_SIZE.max(1));
        if !(fits && aligned && writable && slot_size as usize > SLOT_HEADER_BYTES) {
            return Err(Error::InvalidConfig {
                field: "checkpoint slots",
                expected: "erase-aligned, inside the flash, write size ≤ 32 dividing 16",
            });
        }
        Ok(Slots { flash, base, slot_size })
    }

    /// The largest payload a slot holds.
    pub fn capacity(&self) -> usize {
        self.slot_size as usize - SLOT_HEADER_BYTES
    }

    /// The flash, back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    fn offset(&self, slot: u32) -> u32 {
        self.base + slot * self.slot_size
    }

    /// Reads slot `slot` into `buf` and returns its record when the header and CRC are valid.
    fn read_record(&mut self, slot: u32, buf: &mut [u8]) -> Result<Option<Record>, Error> {
        let at = self.offset(slot);
        let mut header = [0u8; SLOT_HEADER_BYTES];
        self.flash.read(at, &mut header).map_err(|_| Error::Storage {
            operation: "read checkpoint header",
        })?;
        let word =
            |i: usize| u32::from_le_bytes([header[4 * i], header[4 * i + 1], header[4 * i + 2], header[4 * i + 3]]);
        let (magic, sequence, len, crc) = (word(0), word(1), word(2) as usize, word(3));
        if magic != MAGIC || len > self.capacity() {
            return Ok(None);
        }
        let capacity = buf.len();
        let payload = buf.get_mut(..len).ok_or(Error::Capacity {
            what: "checkpoint read buffer",
            capacity,
        })?;
        self.flash
            .read(at + SLOT_HEADER_BYTES as u32, payload)
            .map_err(|_| Error::Storage {
                operation: "read checkpoint",
            })?;
        let computed = crc32(crc32(0, &header[4..12]), payload);
        Ok((computed == crc).then_some(Record { slot, sequence, len }))
    }

    /// The newest valid record of both slots. Sequence numbers compare in serial-number
    /// arithmetic (RFC 1982), so the record after `u32::MAX` (sequence 0) is the newer one.
    fn newest(&mut self, buf: &mut [u8]) -> Result<Option<Record>, Error> {
        let a = self.read_record(0, buf)?;
        let b = self.read_record(1, buf)?;
        Ok(match (a, b) {
            (Some(a), Some(b)) => {
                let b_is_newer = (b.sequence.wrapping_sub(a.sequence) as i32) > 0;
                Some(if b_is_newer { b } else { a })
            }
            (a, b) => a.or(b),
        })
    }

    /// Loads the newest valid checkpoint into `buf`, returning its sequence number and
    /// payload; `None` when neither slot holds one.
    pub fn load<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<(u32, &'b [u8])>, Error> {
        match self.newest(buf)? {
            None => Ok(None),
            Some(r) => {
                // `buf` holds the last slot read; read the newest one again.
                let again = self.read_record(r.slot, buf)?;
                if again != Some(r) {
                    return Err(Error::Storage {
                        operation: "checkpoint changed while loading",
                    });
                }
                Ok(buf.get(..r.len).map(|p| (r.sequence, p)))
            }
        }
    }

    /// Saves `payload` as the next checkpoint, into the slot not holding the newest one,
    /// and returns its sequence number. `scratch` (at least as long as the payload) is used
    /// to validate the existing slots.
    pub fn save(&mut self, payload: &[u8], scratch: &mut [u8]) -> Result<u32, Error> {
        if payload.len() > self.capacity() {
            return Err(Error::Capacity {
                what: "checkpoint slot",
                capacity: self.capacity(),
            });
        }
        let (slot, sequence) = match self.newest(scratch)? {
            Some(r) => (1 - r.slot, r.sequence.wrapping_add(1)),
            None => (0, 1),
        };
        let at = self.offset(slot);
        self.flash.erase(at, at + self.slot_size).map_err(|_| Error::Storage {
            operation: "erase checkpoint slot",
        })?;

        // Payload first: whole write units straight from `payload`, the tail padded.
        let unit = F::WRITE_SIZE.max(1);
        let whole = payload.len() - payload.len() % unit;
        let start = at + SLOT_HEADER_BYTES as u32;
        let write_err = |_| Error::Storage {
            operation: "write checkpoint",
        };
        let (body, tail) = payload.split_at(whole);
        if !body.is_empty() {
            self.flash.write(start, body).map_err(write_err)?;
        }
        if !tail.is_empty() {
            let mut padded = [0xFFu8; MAX_WRITE_SIZE];
            padded[..tail.len()].copy_from_slice(tail);
            self.flash
                .write(start + whole as u32, &padded[..unit])
                .map_err(write_err)?;
        }

        // Header last: until it is complete the record is invalid.
        let mut header = [0u8; SLOT_HEADER_BYTES];
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&sequence.to_le_bytes());
        header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = crc32(crc32(0, &header[4..12]), payload);
        header[12..16].copy_from_slice(&crc.to_le_bytes());
        self.flash.write(at, &header).map_err(write_err)?;
        Ok(sequence)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
    }

    /// NOR flash in RAM (writes can only clear bits) that loses power after `budget` more
    /// bytes have been erased or written: later bytes are left as they were and every
    /// operation fails from then on.
    #[derive(Clone)]
    struct CutFlash {
        mem: Vec<u8>,
        budget: usize,
    }

    #[derive(Debug)]
    struct PowerLost;
    impl NorFlashError for PowerLost {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::Other
        }
    }
    impl ErrorType for CutFlash {
        type Error = PowerLost;
    }
    impl ReadNorFlash for CutFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PowerLost> {
            let o = offset as usize;
            bytes.copy_from_slice(&self.mem[o..o + bytes.len()]);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.mem.len()
        }
    }
    impl CutFlash {
        fn touch(&mut self, at: usize, value: impl Fn(u8) -> u8) -> Result<(), PowerLost> {
            if self.budget == 0 {
                return Err(PowerLost);
            }
            self.budget -= 1;
            self.mem[at] = value(self.mem[at]);
            Ok(())
        }
    }
    impl NorFlash for CutFlash {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 64;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), PowerLost> {
            assert!(from.is_multiple_of(64) && to.is_multiple_of(64), "erase alignment");
            for a in from..to {
                self.touch(a as usize, |_| 0xFF)?;
            }
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PowerLost> {
            assert!(
                offset.is_multiple_of(4) && bytes.len().is_multiple_of(4),
                "write alignment"
            );
            for (i, b) in bytes.iter().enumerate() {
                self.touch(offset as usize + i, |old| old & b)?;
            }
            Ok(())
        }
    }

    fn flash() -> CutFlash {
        CutFlash {
            mem: vec![0u8; 512],
            budget: usize::MAX,
        }
    }

    fn payload(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)).collect()
    }

    #[test]
    fn empty_flash_has_no_checkpoint_and_saves_alternate() {
        let mut s = Slots::new(flash(), 64, 192).unwrap();
        let mut buf = [0u8; 176];
        assert_eq!(s.load(&mut buf).unwrap(), None);
        for k in 1..=5u8 {
            let p = payload(k, 37 + k as usize);
            assert_eq!(s.save(&p, &mut buf).unwrap(), k as u32);
            let (seq, got) = s.load(&mut buf).unwrap().unwrap();
            assert_eq!((seq, got), (k as u32, &p[..]));
        }
    }

    #[test]
    fn a_power_cut_at_any_byte_keeps_the_last_checkpoint() {
        let mut s = Slots::new(flash(), 0, 128).unwrap();
        let mut buf = [0u8; 112];
        let (old, new) = (payload(1, 50), payload(2, 61));
        s.save(&payload(0, 90), &mut buf).unwrap();
        s.save(&old, &mut buf).unwrap();
        let before = s.into_inner();

        // Bytes one full save touches: the erase of a slot plus the padded payload and header.
        let full = 128 + 64 + SLOT_HEADER_BYTES;
        for cut in 0..=full {
            let mut f = before.clone();
            f.budget = cut;
            let mut s = Slots::new(f, 0, 128).unwrap();
            let saved = s.save(&new, &mut buf);
            let mut f = s.into_inner();
            f.budget = usize::MAX; // power is back
            let mut s = Slots::new(f, 0, 128).unwrap();
            let (seq, got) = s.load(&mut buf).unwrap().expect("a checkpoint survives every cut");
            if saved.is_ok() {
                assert_eq!((seq, got), (3, &new[..]), "cut at {cut}");
            } else {
                assert_eq!((seq, got), (2, &old[..]), "cut at {cut}");
            }
        }
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let mut s = Slots::new(flash(), 0, 128).unwrap();
        let mut buf = [0u8; 112];
        s.save(&payload(1, 8), &mut buf).unwrap();
        let mut f = s.into_inner();
        // Rewrite slot 0's record as sequence u32::MAX (header and CRC).
        let mut rec = f.mem[..SLOT_HEADER_BYTES + 8].to_vec();
        rec[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32(crc32(0, &rec[4..12]), &rec[SLOT_HEADER_BYTES..]);
        rec[12..16].copy_from_slice(&crc.to_le_bytes());
        f.mem[..rec.len()].copy_from_slice(&rec);
        let mut s = Slots::new(f, 0, 128).unwrap();
        assert_eq!(s.save(&payload(2, 8), &mut buf).unwrap(), 0);
        let (seq, got) = s.load(&mut buf).unwrap().unwrap();
        assert_eq!((seq, got), (0, &payload(2, 8)[..]));
    }

    #[test]
    fn bad_geometry_and_oversized_payloads_are_errors() {
        assert!(matches!(Slots::new(flash(), 32, 128), Err(Error::InvalidConfig { .. })));
        assert!(matches!(Slots::new(flash(), 0, 320), Err(Error::InvalidConfig { .. })));
        let mut s = Slots::new(flash(), 0, 64).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            s.save(&[0u8; 49], &mut buf).unwrap_err(),
            Error::Capacity {
                what: "checkpoint slot",
                capacity: 48
            }
        );
    }

    #[test]
    fn a_corrupted_newest_record_falls_back_to_the_other() {
        let mut s = Slots::new(flash(), 0, 128).unwrap();
        let mut buf = [0u8; 112];
        s.save(&payload(1, 20), &mut buf).unwrap();
        s.save(&payload(2, 20), &mut buf).unwrap();
        let mut f = s.into_inner();
        f.mem[128 + SLOT_HEADER_BYTES + 3] ^= 0x10; // flip a bit of the newest payload
        let mut s = Slots::new(f, 0, 128).unwrap();
        let (seq, got) = s.load(&mut buf).unwrap().unwrap();
        assert_eq!((seq, got), (1, &payload(1, 20)[..]));
    }
}
