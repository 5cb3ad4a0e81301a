//! The algorithms, one file per family. Each is a configuration struct (validated, with
//! documented defaults) and a state struct implementing [`crate::run::Solver`].

pub mod aid;
pub mod amigo;
pub mod f2sa;
pub mod itd;
pub mod nbo;
pub mod nsbo;
pub mod pzobo;
pub mod qnbo;
pub mod shine;
pub mod soba;
pub mod stocbio;
pub mod stochastic;
