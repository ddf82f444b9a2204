//! wgtrain: a neural-network training engine whose math runs as WGSL compute shaders through
//! wgpu, with an ndarray reference implementation of every op.

mod atomic_file;
mod cpu;
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

/// Engine internals for the crate's tests and benchmarks: the CPU reference functions and
/// the typed kernel constructors. No stability promise: a model is built with [`nn`] (or
/// [`graph`] for a custom graph), never from these.
pub mod unstable {
    /// The ndarray reference of every op, in f32 or f64.
    pub mod cpu {
        pub use crate::cpu::*;
    }
    /// One typed constructor per WGSL entry, each returning a prebuilt launch.
    pub mod kernels {
        pub use crate::gpu::kernels::*;
        pub use crate::ops::vocab::Epilogue;
    }
    /// How metrics accumulate: the running totals an [`crate::graph::Executor`] reports,
    /// and how accuracy is counted for a loss.
    pub mod metrics {
        pub use crate::ops::metrics::{ErrorSums, MetricTotals, METRIC_WORDS};
        pub use crate::ops::vocab::MetricKind;
    }
}
