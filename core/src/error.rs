//! The one error type of the library. Nothing in the core panics: every failure is a value.

use core::fmt;

/// An oracle of a bilevel [`crate::problem::Problem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Oracle {
    /// ∇_y g, the lower-level gradient.
    LowerGrad,
    /// ∇_x f and ∇_y f, the upper-level gradient.
    UpperGrad,
    /// ∇²_yy g·v, the lower-level Hessian-vector product.
    LowerHvp,
    /// ∇²_xy g·v, the lower-level cross derivative times a vector.
    LowerCross,
    /// ∇_x g, the lower-level gradient in x.
    LowerGradX,
    /// g, the lower-level value.
    LowerValue,
    /// f, the upper-level value.
    UpperValue,
}

impl Oracle {
    /// A short, stable name (`lower_grad`, …), as used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Oracle::LowerGrad => "lower_grad",
            Oracle::UpperGrad => "upper_grad",
            Oracle::LowerHvp => "lower_hvp",
            Oracle::LowerCross => "lower_cross",
            Oracle::LowerGradX => "lower_grad_x",
            Oracle::LowerValue => "lower_value",
            Oracle::UpperValue => "upper_value",
        }
    }
}

/// Every way a call into the library can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// An oracle returned NaN or ±∞ (`oracle`), or a value computed from oracle outputs
    /// overflowed (`oracle` is `None`); `stage` names where.
    NonFinite {
        /// The oracle whose output was not finite, if any.
        oracle: Option<Oracle>,
        /// The step of the algorithm that saw it.
        stage: &'static str,
    },
    /// A configuration value is out of its valid range.
    InvalidConfig {
        /// The configuration field.
        field: &'static str,
        /// What it must satisfy.
        expected: &'static str,
    },
    /// An iterative method cannot continue: e.g. `pᵀHp ≤ 0` in conjugate gradient, or a
    /// line search that found no decrease.
    Breakdown {
        /// What broke down.
        stage: &'static str,
    },
    /// The iteration or oracle-call budget ran out before the stopping test held.
    Budget,
    /// The problem does not provide an oracle this solver needs.
    Unsupported {
        /// The missing oracle.
        oracle: Oracle,
    },
    /// A user-supplied oracle reported its own failure (e.g. a C callback returned non-zero).
    OracleFailed {
        /// The oracle that failed.
        oracle: Oracle,
        /// The code it returned.
        code: i32,
    },
    /// The data given to a problem is inconsistent (e.g. no rows, labels out of range).
    InvalidData {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A fixed-capacity buffer is too small for the requested configuration.
    Capacity {
        /// The buffer.
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// Non-volatile storage failed (a flash read, erase or write returned an error), or
    /// holds no valid checkpoint.
    Storage {
        /// What was being done.
        operation: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NonFinite { oracle: Some(o), stage } => {
                write!(f, "non-finite output of oracle {} in {}", o.name(), stage)
            }
            Error::NonFinite { oracle: None, stage } => write!(f, "non-finite value in {stage}"),
            Error::InvalidConfig { field, expected } => {
                write!(f, "invalid configuration: {field} must be {expected}")
            }
            Error::Breakdown { stage } => write!(f, "breakdown in {stage}"),
            Error::Budget => write!(f, "budget exhausted before convergence"),
            Error::Unsupported { oracle } => {
                write!(f, "the problem does not provide oracle {}", oracle.name())
            }
            Error::OracleFailed { oracle, code } => {
                write!(f, "oracle {} failed with code {}", oracle.name(), code)
            }
            Error::InvalidData { reason } => write!(f, "invalid data: {reason}"),
            Error::Capacity { what, capacity } => {
                write!(f, "capacity of {what} ({capacity}) exceeded")
            }
            Error::Storage { operation } => write!(f, "storage failure: {operation}"),
        }
    }
}

impl core::error::Error for Error {}

/// Checks a configuration value: `Ok` when `ok`, otherwise [`Error::InvalidConfig`].
#[inline]
pub fn ensure(ok: bool, field: &'static str, expected: &'static str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig { field, expected })
    }
}
