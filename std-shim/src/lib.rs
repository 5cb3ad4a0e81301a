//! Host side of `bilevel`: data files, splits and standardization, the bundled data sets,
//! export for firmware, and the `bilevel` command line. Re-exports the core so host code
//! and firmware call the same functions.

pub use bilevel;

#[cfg(feature = "cli")]
pub mod bench;
pub mod data;
pub mod datasets;
pub mod demo;
pub mod export;
pub mod formats;
pub mod labels;
#[cfg(feature = "cli")]
pub mod plot;
#[cfg(feature = "cli")]
pub mod progress;
pub mod run_files;
pub mod tasks;
#[cfg(feature = "cli")]
pub mod tune;
