//! The op vocabulary both executors share: activations, losses, windows, GEMM epilogues,
//! metric kinds and the metrics themselves. Nothing here imports `cpu/` or `gpu/`, so the CPU
//! reference builds and runs without wgpu (ARCHITECTURE.md, "Layers").

mod metrics;
mod vocab;

pub use metrics::{MetricTotals, Metrics, METRIC_WORDS};
pub use vocab::{Activation, Epilogue, MetricKind, PointwiseLoss, Window};
