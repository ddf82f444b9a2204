//! Layer normalization (shaders/norm.wgsl): forward, the input gradient and the gamma
//! gradient, one invocation per row (per column for the gamma sums).

use super::{check_loops, dims4, groups, need};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel, Launch, View};

fn check(op: &'static str, rows: usize, cols: usize, eps: f32, passes: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::invalid(op, format!("empty input ({rows} x {cols})")));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(
            op,
            format!("epsilon {eps} must be positive and finite"),
        ));
    }
    check_loops(op, &format!("a row of {cols} features"), passes * cols)
}

/// A row-per-invocation launch of `entry` with `bindings` after the shape block.
fn rows_launch(
    ctx: &GpuContext,
    entry: &'static str,
    rows: usize,
    cols: usize,
    eps: f32,
    bindings: Vec<Binding<'_>>,
    invocations: usize,
) -> Result<Launch> {
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "norm",
            entry,
            constants: vec![],
            params: dims4(rows, cols, eps.to_bits())?,
            bindings,
            workgroups: groups(invocations, 64)?,
        },
    )
}

/// One row per invocation of `entry`, reading x, gamma and a third (rows, cols) or (cols)
/// operand and writing `out` (rows, cols): the forward and the input gradient.
#[allow(clippy::too_many_arguments)]
fn rowwise(
    ctx: &GpuContext,
    entry: &'static str,
    passes: usize,
    (rows, cols, eps): (usize, usize, f32),
    x: View<'_>,
    gamma: View<'_>,
    (third, third_len): (View<'_>, usize),
    out: View<'_>,
) -> Result<Launch> {
    check(entry, rows, cols, eps, passes)?;
    need(entry, "x", &x, rows * cols)?;
    need(entry, "gamma", &gamma, cols)?;
    need(entry, "input 3", &third, third_len)?;
    need(entry, "output", &out, rows * cols)?;
    let bindings = vec![
        Binding::Read(x),
        Binding::Read(gamma),
        Binding::Read(third),
        Binding::ReadWrite(out),
    ];
    rows_launch(ctx, entry, rows, cols, eps, bindings, rows)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` per row of a (rows, cols) array.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    eps: f32,
    x: View<'_>,
    gamma: View<'_>,
    beta: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    let dims = (rows, cols, eps);
    rowwise(
        ctx,
        "layer_norm_forward",
        3,
        dims,
        x,
        gamma,
        (beta, cols),
        y,
    )
}

/// dx of layer normalization from x, gamma and dy.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    eps: f32,
    x: View<'_>,
    gamma: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    let dims = (rows, cols, eps);
    rowwise(
        ctx,
        "layer_norm_backward",
        4,
        dims,
        x,
        gamma,
        (dy, rows * cols),
        dx,
    )
}

/// d gamma of layer normalization: each row's statistics into a scratch buffer the kernel
/// owns, then per column the sum over rows of dy * xhat.
pub fn layer_norm_gamma_grad(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    eps: f32,
    x: View<'_>,
    dy: View<'_>,
    dgamma: View<'_>,
) -> Result<Kernel> {
    const OP: &str = "layer_norm_gamma_grad";
    check(OP, rows, cols, eps, 2)?;
    check_loops(OP, &format!("a column of {rows} rows"), rows)?;
    need(OP, "x", &x, rows * cols)?;
    need(OP, "dy", &dy, rows * cols)?;
    need(OP, "dgamma", &dgamma, cols)?;
    let stats = GpuBuffer::zeros(ctx, "layer_norm row statistics", 2 * rows)?;
    let first = rows_launch(
        ctx,
        "layer_norm_stats",
        rows,
        cols,
        eps,
        vec![Binding::Read(x), Binding::ReadWrite(stats.full())],
        rows,
    )?;
    let second = rows_launch(
        ctx,
        "layer_norm_gamma_grad",
        rows,
        cols,
        eps,
        vec![
            Binding::Read(x),
            Binding::Read(stats.full()),
            Binding::Read(dy),
            Binding::ReadWrite(dgamma),
        ],
        cols,
    )?;
    Ok(Kernel::new(vec![first, second], vec![stats], vec![]))
}
