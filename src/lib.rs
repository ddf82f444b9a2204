//! wgtrain: a neural-network training engine whose math runs as WGSL compute shaders through
//! wgpu, with an ndarray reference implementation of every op.

mod atomic_file;
pub mod cpu;
pub mod data;
mod error;
pub mod gpu;
pub mod graph;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod prelude;

pub use error::{Error, Result};
