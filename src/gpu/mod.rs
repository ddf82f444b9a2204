//! The GPU side: context, buffers, prebuilt launches and the kernels that make them.

mod buffer;
mod context;
pub(crate) mod kernels;
mod launch;
mod pipeline;

pub use buffer::{GpuBuffer, View};
pub use context::{AdapterKind, Counters, GpuContext, GpuOptions, ADAPTER_ENV, PLAN_ENV};
pub use launch::{
    encode_kernel_iter, encode_kernels, grid, run, run_kernels, Binding, Kernel, Launch,
};
pub(crate) use launch::{LaunchDesc, Ledger};
pub(crate) use pipeline::PipelineKey;
pub use pipeline::{shader_source, PipelineVariant};
