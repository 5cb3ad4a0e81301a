//! Ready-made bilevel problems over borrowed data. Each knows its exact hypergradient where
//! a closed form exists, for tests.

mod cleaning;
mod data;
pub mod linear;
pub mod penalty;
mod quadratic;

pub use cleaning::{HYPER_CLEANING_DEFAULT_L2, HyperCleaning};
pub use data::Samples;
pub use linear::{LinearModel, Logistic, LogisticLoss, Loss, Ridge, SquaredLoss};
pub use quadratic::Quadratic;
