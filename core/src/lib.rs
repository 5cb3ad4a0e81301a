//! # bilevel
//!
//! Bilevel optimization that runs on a microcontroller: tune hyperparameters
//! (regularization, per-sample weights, a meta-learned prior) on the device with modern
//! hypergradient methods, in `no_std`, without allocation and without panics.
//!
//! ```text
//! min_x  F(x) = f(x, y*(x))      s.t.  y*(x) = argmin_y g(x, y)
//! ∇F = ∇_x f − ∇²_xy g · u,      u = [∇²_yy g]⁻¹ ∇_y f
//! ```
//!
//! Data flows from a [`problem::Problem`] (the oracles) into a [`run::Solver`] (one outer
//! iteration), driven by [`run::run`] (budget, stopping test, observer). Sizes are const
//! generics: `DX` upper-level and `DY` lower-level dimensions; every state has a size known
//! at compile time.
//!
//! ```
//! use bilevel::problem::Counted;
//! use bilevel::problems::Quadratic;
//! use bilevel::reference::{ReferenceConfig, ReferenceSolver};
//! use bilevel::run::{run, Budget, Outer};
//!
//! let q = Quadratic::<f64, 2, 4>::random(3, 10.0, 0.5);
//! let alpha = 1.0 / q.hypergradient_lipschitz().unwrap();
//! let problem = Counted::new(q.clone());
//! let mut solver = ReferenceSolver::new(ReferenceConfig::default(), [0.0; 4]);
//! let mut x = [0.0; 2];
//! let report = run(&mut solver, &problem, &mut x, &Outer::constant(alpha),
//!                  Budget::iterations(2000), 1e-10, |_, _| core::ops::ControlFlow::Continue(()))
//!     .unwrap();
//! let x_star = q.solution().unwrap();
//! assert!((x[0] - x_star[0]).abs() < 1e-8 && (x[1] - x_star[1]).abs() < 1e-8);
//! assert!(report.oracle_calls.lower_hvp > 0);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod algo;
pub mod autodiff;
#[cfg(feature = "serde")]
pub mod checkpoint;
pub mod curvature;
pub mod elementary;
pub mod error;
pub mod hook;
pub mod inner;
pub mod linalg;
pub mod linsolve;
pub mod problem;
pub mod problems;
pub mod qn;
pub mod reference;
pub mod registry;
pub mod rng;
pub mod run;
pub mod sample;
pub mod scalar;
pub mod schedule;
pub mod smoothness;

pub use error::{Error, Oracle};
pub use problem::{Batch, Counted, Problem};
pub use scalar::Real;
