//! The algorithms, one file per family. Each is a configuration struct (validated, with
//! documented defaults) and a state struct implementing [`crate::run::Solver`].

pub mod aid;
pub mod amigo;
pub mod itd;
pub mod nbo;
pub mod qnbo;
pub mod shine;
