//! The GPU side: context, buffers, prebuilt launches and the kernels that make them.

mod buffer;
mod context;
pub mod kernels;
mod launch;

pub use buffer::{GpuBuffer, View};
pub use context::{AdapterKind, Counters, GpuContext, GpuOptions, ADAPTER_ENV, PLAN_ENV};
pub(crate) use launch::Ledger;
pub use launch::{
    encode_kernel_iter, encode_kernels, grid, run, run_kernels, shader_source, Binding, Kernel,
    Launch, PipelineVariant,
};
