//! Status codes: every entry point returns one, `BL_OK` (0) on success.

use bilevel::Error;

/// Success.
pub const BL_OK: u32 = 0;
/// A required pointer was null.
pub const BL_ERR_NULL: u32 = 1;
/// A dimension, buffer size or alignment is out of range.
pub const BL_ERR_SIZE: u32 = 2;
/// The solver memory does not hold an initialized solver.
pub const BL_ERR_STATE: u32 = 3;
/// A configuration value is out of range (e.g. a zero, negative or non-finite step).
pub const BL_ERR_CONFIG: u32 = 4;
/// A callback or built-in oracle produced NaN or ±∞.
pub const BL_ERR_NON_FINITE: u32 = 5;
/// A callback returned a non-zero code.
pub const BL_ERR_CALLBACK: u32 = 6;
/// An iterative method broke down (e.g. negative curvature).
pub const BL_ERR_BREAKDOWN: u32 = 7;
/// The data is invalid (no rows, non-finite values, labels other than 0/1).
pub const BL_ERR_DATA: u32 = 8;
/// The problem lacks an oracle the method needs.
pub const BL_ERR_UNSUPPORTED: u32 = 9;
/// A fixed capacity was exceeded.
pub const BL_ERR_CAPACITY: u32 = 10;
/// The iteration budget ran out before the tolerance was met (`bl_run`; the state is
/// valid and the run can continue).
pub const BL_ERR_BUDGET: u32 = 11;
/// Unknown method or problem kind.
pub const BL_ERR_KIND: u32 = 12;
/// Any other library failure.
pub const BL_ERR_OTHER: u32 = 13;

/// The status code of a library error.
pub(crate) fn code(e: &Error) -> u32 {
    match e {
        Error::NonFinite { .. } => BL_ERR_NON_FINITE,
        Error::InvalidConfig { .. } => BL_ERR_CONFIG,
        Error::Breakdown { .. } => BL_ERR_BREAKDOWN,
        Error::Budget => BL_ERR_BUDGET,
        Error::Unsupported { .. } => BL_ERR_UNSUPPORTED,
        Error::OracleFailed { .. } => BL_ERR_CALLBACK,
        Error::InvalidData { .. } => BL_ERR_DATA,
        Error::Capacity { .. } => BL_ERR_CAPACITY,
        _ => BL_ERR_OTHER,
    }
}

/// The name of a status code, as a NUL-terminated static string.
pub(crate) fn name(status: u32) -> &'static [u8] {
    match status {
        BL_OK => b"ok\0",
        BL_ERR_NULL => b"null pointer\0",
        BL_ERR_SIZE => b"dimension, size or alignment out of range\0",
        BL_ERR_STATE => b"solver memory not initialized\0",
        BL_ERR_CONFIG => b"invalid configuration value\0",
        BL_ERR_NON_FINITE => b"non-finite oracle output\0",
        BL_ERR_CALLBACK => b"callback returned an error\0",
        BL_ERR_BREAKDOWN => b"iterative method broke down\0",
        BL_ERR_DATA => b"invalid data\0",
        BL_ERR_UNSUPPORTED => b"oracle not provided\0",
        BL_ERR_CAPACITY => b"capacity exceeded\0",
        BL_ERR_BUDGET => b"budget exhausted before the tolerance\0",
        BL_ERR_KIND => b"unknown method or problem kind\0",
        BL_ERR_OTHER => b"library error\0",
        _ => b"unknown status\0",
    }
}
