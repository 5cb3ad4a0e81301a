//! C ABI over `bilevel` (static library `libbilevel_capi.a`).
#![cfg_attr(not(test), no_std)]

/// Nothing may unwind through C: a panic (none is reachable; see the `panic-never` link
/// check) stops here.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

// Host only: x86_64's prebuilt libcore references `rust_eh_personality` from `.eh_frame`.
#[cfg(all(not(test), not(target_os = "none")))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
