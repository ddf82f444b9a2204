//! The op vocabulary: the names both executors, the graph and the kernels share
//! (activations, pointwise losses, pooling windows, GEMM epilogues, metric kinds, the
//! metrics). It imports nothing of the crate, so every layer can use it (ARCHITECTURE.md,
//! "Layers"); what an op *means* (shape, gradient, CPU arm) lives in `graph::rules`, how it
//! runs on a GPU in the plan's lowering.

mod dropout;
pub(crate) mod metrics;
pub(crate) mod vocab;

pub use metrics::{ErrorMetrics, Metrics};
pub use vocab::{Activation, PointwiseLoss, Window, LEAKY_RELU_SLOPE};

// Shared inside the crate, and with tests and benchmarks through `wgtrain::unstable`: how
// metrics accumulate, GEMM epilogues, dropout's mask.
pub(crate) use dropout::{dropout_keeps, dropout_key, dropout_scale, dropout_threshold};
pub(crate) use metrics::{ErrorSums, MetricTotals, METRIC_WORDS};
pub(crate) use vocab::{Epilogue, MetricKind};
