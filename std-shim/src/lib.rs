//! Host side of `bilevel`: data files, splits and standardization, the `bilevel` command
//! line. Re-exports the core so host code and firmware call the same functions.

pub use bilevel;
