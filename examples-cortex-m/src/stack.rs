//! Stack use on stable Rust: cortex-m-rt (feature `paint-stack`) fills the stack region
//! `[_stack_end, _stack_start)` with [`cortex_m_rt::STACK_PAINT_VALUE`] at reset; the
//! lowest word that no longer holds the paint is the deepest the stack has been.

use cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    /// Top of the stack (cortex-m-rt: end of RAM).
    static _stack_start: u32;
    /// Lowest stack address (after `.data`, `.bss` and `.uninit`).
    static _stack_end: u32;
    /// Start of `.data` in RAM.
    static __sdata: u32;
    /// End of `.data`.
    static __edata: u32;
    /// Start of `.bss`.
    static __sbss: u32;
    /// End of `.bss`.
    static __ebss: u32;
}

fn addr(symbol: *const u32) -> usize {
    symbol as usize
}

/// Bytes between the stack's top and its lowest address.
pub fn stack_size() -> usize {
    addr(&raw const _stack_start) - addr(&raw const _stack_end)
}

/// The high-water mark: bytes of stack used since reset or the last [`repaint`].
pub fn high_water() -> usize {
    let (lo, hi) = (addr(&raw const _stack_end), addr(&raw const _stack_start));
    let mut p = lo;
    // SAFETY: `[lo, hi)` is the stack region from the linker script, word-aligned, and
    // readable RAM; volatile reads of it have no side effects.
    while p < hi && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT_VALUE {
        p += 4;
    }
    hi - p
}

/// Repaints the unused part of the stack (below the current stack pointer, minus a
/// margin for this function's own frame), so the next [`high_water`] measures only what
/// runs after this call.
pub fn repaint() {
    let lo = addr(&raw const _stack_end);
    let hi = cortex_m::register::msp::read() as usize - 64;
    let mut p = lo;
    while p < hi {
        // SAFETY: `[lo, sp − 64)` lies inside the stack region and below every live frame,
        // so no live data is overwritten; the addresses are word-aligned RAM.
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT_VALUE) };
        p += 4;
    }
}

/// Statically allocated RAM, from the linker's section symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticRam {
    /// Initialized statics (`.data`), bytes.
    pub data: usize,
    /// Zero-initialized statics (`.bss`), bytes.
    pub bss: usize,
}

/// The sizes of `.data` and `.bss`.
pub fn static_ram() -> StaticRam {
    StaticRam {
        data: addr(&raw const __edata) - addr(&raw const __sdata),
        bss: addr(&raw const __ebss) - addr(&raw const __sbss),
    }
}
