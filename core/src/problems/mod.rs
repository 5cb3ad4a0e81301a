//! Ready-made bilevel problems over borrowed data. Each knows its exact hypergradient where
//! a closed form exists, for tests.

mod quadratic;

pub use quadratic::Quadratic;
