//! Ready-made bilevel problems over borrowed data. Each knows its exact hypergradient where
//! a closed form exists, for tests.

mod data;
mod finite_sum;
pub mod hyper_cleaning;
pub mod logistic;
pub mod meta_learning;
pub mod penalty;
mod quadratic;
pub mod ridge;

pub use data::Samples;
pub use finite_sum::FiniteSum;
pub use hyper_cleaning::HyperCleaning;
pub use logistic::Logistic;
pub use meta_learning::{MetaLearning, Task};
pub use quadratic::Quadratic;
pub use ridge::Ridge;
