//! Softmax, the losses and the metrics (shaders/softmax.wgsl, shaders/loss.wgsl).

use super::reduce::mean;
use super::{check_loops, dims4, groups, need};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel, Launch, View};
use crate::ops::{MetricKind, PointwiseLoss, METRIC_WORDS};

/// Accumulates a step's metrics into `acc`, [`METRIC_WORDS`] u32 words laid out as
/// [`crate::ops::MetricTotals::from_words`] reads them.
#[allow(clippy::too_many_arguments)]
pub fn metrics(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    kind: MetricKind,
    outputs: View<'_>,
    targets: View<'_>,
    loss: View<'_>,
    acc: View<'_>,
) -> Result<Launch> {
    need("metrics", "outputs", &outputs, rows * cols)?;
    let target_len = if kind == MetricKind::Sparse {
        rows
    } else {
        rows * cols
    };
    need("metrics", "targets", &targets, target_len)?;
    need("metrics", "loss", &loss, 1)?;
    need("metrics", "acc", &acc, METRIC_WORDS)?;
    check_loops(
        "metrics",
        &format!("{rows} rows of {cols}"),
        (rows * cols).div_ceil(64) + rows.div_ceil(64) * cols + 8,
    )?;
    let (entry, constants) = match kind {
        MetricKind::Sparse => ("metrics", vec![]),
        MetricKind::Argmax => ("metrics_dense", vec![("METRIC", 0.0)]),
        MetricKind::Binary { threshold } => (
            "metrics_dense",
            vec![("METRIC", 1.0), ("THRESHOLD", threshold as f64)],
        ),
    };
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "loss",
            entry,
            constants,
            params: dims4(rows, cols, 0)?,
            bindings: vec![
                Binding::Read(outputs),
                Binding::Read(targets),
                Binding::Read(loss),
                Binding::ReadWrite(acc),
            ],
            workgroups: 1,
        },
    )
}

/// Row softmax of a (rows, cols) array.
pub fn softmax_forward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if cols == 0 {
        return Err(Error::invalid("softmax", "zero columns"));
    }
    need("softmax_forward", "x", &x, rows * cols)?;
    need("softmax_forward", "y", &y, rows * cols)?;
    check_loops("softmax_forward", &format!("a row of {cols}"), 3 * cols)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "softmax",
            entry: "softmax_forward",
            constants: vec![],
            params: dims4(rows, cols, 0)?,
            bindings: vec![Binding::Read(x), Binding::ReadWrite(y)],
            workgroups: groups(rows, 64)?,
        },
    )
}

/// `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    y: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    for (what, v) in [("y", &y), ("dy", &dy), ("dx", &dx)] {
        need("softmax_backward", what, v, rows * cols)?;
    }
    check_loops("softmax_backward", &format!("a row of {cols}"), 2 * cols)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "softmax",
            entry: "softmax_backward",
            constants: vec![],
            params: dims4(rows, cols, 0)?,
            bindings: vec![Binding::Read(y), Binding::Read(dy), Binding::ReadWrite(dx)],
            workgroups: groups(rows, 64)?,
        },
    )
}

/// Fused softmax + cross-entropy from `u32` labels: one pass writes d_logits to `grad` and each
/// row's loss to a scratch buffer; a second launch writes the mean loss to `out[0]`. Labels
/// are smoothed by `smoothing` (0: one-hot; see [`crate::cpu::softmax_xent`]).
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    ctx: &GpuContext,
    (rows, cols): (usize, usize),
    smoothing: f32,
    logits: View<'_>,
    labels: View<'_>,
    grad: View<'_>,
    out: View<'_>,
) -> Result<Kernel> {
    const OP: &str = "softmax_xent";
    if rows == 0 || cols == 0 {
        return Err(Error::invalid(
            OP,
            format!("empty logits ({rows} x {cols})"),
        ));
    }
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::invalid(
            OP,
            format!("label smoothing {smoothing} must be in [0, 1)"),
        ));
    }
    need(OP, "logits", &logits, rows * cols)?;
    need(OP, "labels", &labels, rows)?;
    need(OP, "grad", &grad, rows * cols)?;
    check_loops(OP, &format!("a row of {cols} classes"), 3 * cols)?;
    let scratch = GpuBuffer::zeros(ctx, "softmax_xent row losses", rows)?;
    let rows_pass = Launch::new(
        ctx,
        LaunchDesc {
            shader: "loss",
            entry: "softmax_xent_rows",
            constants: vec![],
            params: dims4(rows, cols, smoothing.to_bits())?,
            bindings: vec![
                Binding::Read(logits),
                Binding::Read(labels),
                Binding::ReadWrite(grad),
                Binding::ReadWrite(scratch.full()),
            ],
            workgroups: groups(rows, 64)?,
        },
    )?;
    let mean = mean(ctx, rows, 1.0 / rows as f32, scratch.full(), out)?;
    Ok(Kernel::new(vec![rows_pass, mean], vec![scratch], vec![]))
}

/// A pointwise loss over `n` elements: gradient of the mean to `grad`, mean loss to `out[0]`.
pub fn pointwise_loss(
    ctx: &GpuContext,
    kind: PointwiseLoss,
    n: usize,
    prediction: View<'_>,
    target: View<'_>,
    grad: View<'_>,
    out: View<'_>,
) -> Result<Kernel> {
    if n == 0 {
        return Err(Error::invalid("pointwise_loss", "no elements"));
    }
    for (what, v) in [
        ("prediction", &prediction),
        ("target", &target),
        ("grad", &grad),
    ] {
        need("pointwise_loss", what, v, n)?;
    }
    let code = match kind {
        PointwiseLoss::MeanSquaredError => 0.0,
        PointwiseLoss::BinaryCrossEntropy => 1.0,
        PointwiseLoss::BinaryCrossEntropyWithLogits => 2.0,
        PointwiseLoss::MeanAbsoluteError => 3.0,
        PointwiseLoss::Huber => 4.0,
    };
    let scratch = GpuBuffer::zeros(ctx, "pointwise losses", n)?;
    let elems = Launch::new(
        ctx,
        LaunchDesc {
            shader: "loss",
            entry: "pointwise",
            constants: vec![("LOSS", code)],
            params: dims4(n, 1, 0)?,
            bindings: vec![
                Binding::Read(prediction),
                Binding::Read(target),
                Binding::ReadWrite(grad),
                Binding::ReadWrite(scratch.full()),
            ],
            workgroups: groups(n, 64)?,
        },
    )?;
    let mean = mean(ctx, n, 1.0 / n as f32, scratch.full(), out)?;
    Ok(Kernel::new(vec![elems, mean], vec![scratch], vec![]))
}
