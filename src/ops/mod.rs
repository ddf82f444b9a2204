//! The op vocabulary: the names both executors, the graph and the kernels share
//! (activations, pointwise losses, pooling windows, GEMM epilogues, metric kinds, the
//! metrics). It imports nothing of the crate, so every layer can use it (ARCHITECTURE.md,
//! "Layers"); what an op *means* (shape, gradient, CPU arm) lives in `graph::rules`, how it
//! runs on a GPU in the plan's lowering.

mod dropout;
mod metrics;
mod vocab;

pub use dropout::{dropout_keeps, dropout_key, dropout_scale, dropout_threshold};
pub use metrics::{ErrorMetrics, ErrorSums, MetricTotals, Metrics, METRIC_WORDS};
pub use vocab::{Activation, Epilogue, MetricKind, PointwiseLoss, Window, LEAKY_RELU_SLOPE};
