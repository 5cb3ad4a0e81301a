//! Step-size schedules shared by every outer (and stochastic inner) update.

use crate::error::{Error, ensure};
use crate::scalar::Real;

/// A step size as a function of the iteration counter `t = 0, 1, 2, …`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub enum Schedule<T> {
    /// The same step every iteration.
    Constant(T),
    /// `c / (t + 1)^exponent` (e.g. SOBA's `t^(−1/2)`, F2SA's `t^(−5/7)`).
    Decay {
        /// Initial step `c`.
        c: T,
        /// Decay exponent (≥ 0).
        exponent: T,
    },
}

impl<T: Real> Schedule<T> {
    /// Checks that the steps are finite and positive; `field` names the schedule in errors.
    pub fn validate(&self, field: &'static str) -> Result<(), Error> {
        match *self {
            Schedule::Constant(c) => ensure(c.is_finite() && c > T::ZERO, field, "finite and > 0"),
            Schedule::Decay { c, exponent } => {
                ensure(c.is_finite() && c > T::ZERO, field, "finite and > 0")?;
                ensure(
                    exponent.is_finite() && exponent >= T::ZERO,
                    field,
                    "a decay exponent ≥ 0",
                )
            }
        }
    }

    /// The step at iteration `t`.
    #[inline]
    pub fn at(&self, t: u32) -> T {
        match *self {
            Schedule::Constant(c) => c,
            Schedule::Decay { c, exponent } => c / T::from_u32(t).add_one().powf(exponent),
        }
    }

    /// This schedule with every step divided by `ratio` (two-timescale methods:
    /// outer step = inner step / outer_ratio).
    pub fn divided_by(self, ratio: T) -> Self {
        match self {
            Schedule::Constant(c) => Schedule::Constant(c / ratio),
            Schedule::Decay { c, exponent } => Schedule::Decay { c: c / ratio, exponent },
        }
    }
}

trait AddOne {
    fn add_one(self) -> Self;
}
impl<T: Real> AddOne for T {
    #[inline]
    fn add_one(self) -> Self {
        self + T::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_and_ratio() {
        let s = Schedule::Decay {
            c: 1.0f64,
            exponent: 0.5,
        };
        assert_eq!(s.at(0), 1.0);
        assert!((s.at(3) - 0.5).abs() < 1e-15);
        assert_eq!(s.divided_by(4.0).at(0), 0.25);
        assert!(Schedule::Constant(0.0f32).validate("step").is_err());
        assert!(Schedule::Constant(f32::NAN).validate("step").is_err());
        assert!(
            Schedule::Decay {
                c: 1.0f32,
                exponent: -1.0
            }
            .validate("step")
            .is_err()
        );
    }
}
