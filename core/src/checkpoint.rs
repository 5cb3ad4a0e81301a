//! Checkpoint and resume: the complete state of a run (outer iteration, `x`, the solver with
//! its warm starts and memories) serialized with `postcard` into a buffer whose maximum size
//! is a compile-time constant, and stored in two alternating flash slots so that a power loss
//! during a write never loses the previous checkpoint.
//!
//! Resuming from a checkpoint continues bit for bit as if the run had not stopped: every
//! value is stored with its exact bits.
//!
//! ```
//! use bilevel::algo::nbo::{Nbo, NboConfig};
//! use bilevel::checkpoint::{Checkpoint, MaxSize, decode, encode};
//!
//! type Saved = Checkpoint<Nbo<f32, 4>, f32, 2>;
//! let mut buf = [0u8; <Saved as MaxSize>::POSTCARD_MAX_SIZE];
//! let state = Checkpoint { iteration: 7, x: [0.5, -1.0], solver: Nbo::new(NboConfig::default(), [0.0; 4]) };
//! let bytes = encode(&state, &mut buf).unwrap();
//! let back: Saved = decode(bytes).unwrap();
//! assert_eq!(back, state);
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use postcard::experimental::max_size::MaxSize;

use crate::error::Error;

mod slots;
pub use slots::{SLOT_HEADER_BYTES, Slots};

/// A resumable run: the next outer iteration, the hyperparameters and the solver state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[serde(bound(
    serialize = "S: Serialize, T: Serialize",
    deserialize = "S: Deserialize<'de>, T: Deserialize<'de> + Copy + Default"
))]
pub struct Checkpoint<S, T, const DX: usize> {
    /// The outer iteration to run next (the step-size schedule's counter).
    pub iteration: u32,
    /// The hyperparameters `x`.
    #[serde(with = "array")]
    pub x: [T; DX],
    /// The solver state.
    pub solver: S,
}

/// Serializes `value` into `buf`, returning the bytes written. A buffer of
/// `T::POSTCARD_MAX_SIZE` bytes always suffices.
pub fn encode<'b, V: Serialize>(value: &V, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
    let capacity = buf.len();
    postcard::to_slice(value, buf).map_err(|_| Error::Capacity {
        what: "checkpoint buffer",
        capacity,
    })
}

/// Deserializes a value written by [`encode`]; truncated or malformed bytes give
/// [`Error::InvalidData`].
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, Error> {
    postcard::from_bytes(bytes).map_err(|_| Error::InvalidData {
        reason: "malformed checkpoint",
    })
}

/// Serde for `[T; N]` of any `N` (serde's own impls stop at 32), as a fixed-length tuple:
/// postcard writes exactly the `N` elements, no length.
pub mod array {
    use core::fmt;
    use core::marker::PhantomData;

    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes the array as an `N`-tuple.
    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(a: &[T; N], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(N)?;
        for v in a {
            t.serialize_element(v)?;
        }
        t.end()
    }

    struct ArrayVisitor<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Copy + Default, const N: usize> Visitor<'de> for ArrayVisitor<T, N> {
        type Value = [T; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of {N} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[T; N], A::Error> {
            let mut out = [T::default(); N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    /// Deserializes an `N`-tuple into the array.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de> + Copy + Default, const N: usize>(
        d: D,
    ) -> Result<[T; N], D::Error> {
        d.deserialize_tuple(N, ArrayVisitor::<T, N>(PhantomData))
    }
}

/// Serde for `[[T; C]; R]` of any size, row by row as one flat `R·C`-tuple.
pub mod matrix {
    use core::fmt;
    use core::marker::PhantomData;

    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes the matrix as an `R·C`-tuple, row-major.
    pub fn serialize<S: Serializer, T: Serialize, const C: usize, const R: usize>(
        m: &[[T; C]; R],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(R * C)?;
        for row in m {
            for v in row {
                t.serialize_element(v)?;
            }
        }
        t.end()
    }

    struct MatrixVisitor<T, const C: usize, const R: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Copy + Default, const C: usize, const R: usize> Visitor<'de>
        for MatrixVisitor<T, C, R>
    {
        type Value = [[T; C]; R];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a {R}×{C} matrix")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[[T; C]; R], A::Error> {
            let mut out = [[T::default(); C]; R];
            let mut i = 0;
            for row in out.iter_mut() {
                for slot in row.iter_mut() {
                    *slot = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
                    i += 1;
                }
            }
            Ok(out)
        }
    }

    /// Deserializes an `R·C`-tuple into the matrix.
    pub fn deserialize<'de, D, T, const C: usize, const R: usize>(d: D) -> Result<[[T; C]; R], D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Copy + Default,
    {
        d.deserialize_tuple(R * C, MatrixVisitor::<T, C, R>(PhantomData))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize, MaxSize)]
    struct Big {
        #[serde(with = "array")]
        v: [f32; 40],
        #[serde(with = "matrix")]
        m: [[f64; 3]; 35],
    }

    #[test]
    fn arrays_beyond_32_round_trip_at_their_exact_size() {
        let mut b = Big {
            v: [0.0; 40],
            m: [[0.0; 3]; 35],
        };
        for (i, v) in b.v.iter_mut().enumerate() {
            *v = i as f32 * 0.1 - 1.0;
        }
        b.m[34] = [f64::MIN_POSITIVE, -0.0, 1e300];
        let mut buf = [0u8; Big::POSTCARD_MAX_SIZE];
        let n = encode(&b, &mut buf).unwrap().len();
        assert_eq!(n, 40 * 4 + 105 * 8, "no length prefixes");
        let back: Big = decode(&buf[..n]).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.m[34][1].to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn short_buffers_and_truncated_bytes_are_errors() {
        let b = Big {
            v: [1.0; 40],
            m: [[2.0; 3]; 35],
        };
        let mut small = [0u8; 100];
        assert_eq!(
            encode(&b, &mut small).unwrap_err(),
            Error::Capacity {
                what: "checkpoint buffer",
                capacity: 100
            }
        );
        let mut buf = [0u8; Big::POSTCARD_MAX_SIZE];
        let n = encode(&b, &mut buf).unwrap().len();
        assert!(matches!(decode::<Big>(&buf[..n - 1]), Err(Error::InvalidData { .. })));
    }
}
