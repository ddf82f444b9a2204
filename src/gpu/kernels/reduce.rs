//! Deterministic reductions (shaders/reduce.wgsl): column sums, means, the squared global
//! norm and global-norm clipping.

use bytemuck::{Pod, Zeroable};

use super::{check_loops, dim_u32, dims4, groups, need};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuContext, Launch, View};

/// `out[col] (+)= sum over rows of dy[row, col]`: the bias gradient.
pub fn column_sum(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    accumulate: bool,
    dy: View<'_>,
    out: View<'_>,
) -> Result<Launch> {
    need("column_sum", "dy", &dy, rows * cols)?;
    need("column_sum", "out", &out, cols)?;
    check_loops("column_sum", &format!("summing {rows} rows"), rows)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "reduce",
            entry: "column_sum",
            constants: vec![],
            params: dims4(rows, cols, accumulate as u32)?,
            bindings: vec![Binding::Read(dy), Binding::ReadWrite(out)],
            workgroups: groups(cols, 64)?,
        },
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct MeanDims {
    n: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// `total[0] = scale * sum(src[..n])`, deterministic.
pub fn mean(
    ctx: &GpuContext,
    n: usize,
    scale: f32,
    src: View<'_>,
    total: View<'_>,
) -> Result<Launch> {
    reduce_sum(ctx, n, scale, false, src, total)
}

/// `total[0] = sum(src[0..n]^2)`: the squared global norm of a gradient arena.
pub fn sum_squares(ctx: &GpuContext, n: usize, src: View<'_>, total: View<'_>) -> Result<Launch> {
    reduce_sum(ctx, n, 1.0, true, src, total)
}

/// Scales `g[0..n]` by `clip / max(sqrt(sumsq[0]), clip)` (TensorFlow's
/// `clip_by_global_norm`, with the squared norm from [`sum_squares`]).
pub fn clip_by_global_norm(
    ctx: &GpuContext,
    n: usize,
    clip: f32,
    sumsq: View<'_>,
    g: View<'_>,
) -> Result<Launch> {
    need("clip_by_global_norm", "sumsq", &sumsq, 1)?;
    need("clip_by_global_norm", "g", &g, n)?;
    if !(clip.is_finite() && clip > 0.0) {
        return Err(Error::invalid(
            "clip_by_global_norm",
            format!("the norm limit must be finite and positive, got {clip}"),
        ));
    }
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "reduce",
            entry: "clip_by_global_norm",
            constants: vec![],
            params: MeanDims {
                n: dim_u32("clip_by_global_norm", "n", n)?,
                scale: clip,
                _pad: [0; 2],
            },
            bindings: vec![Binding::Read(sumsq), Binding::ReadWrite(g)],
            workgroups: groups(n, 256)?,
        },
    )
}

fn reduce_sum(
    ctx: &GpuContext,
    n: usize,
    scale: f32,
    squares: bool,
    src: View<'_>,
    total: View<'_>,
) -> Result<Launch> {
    need("mean", "src", &src, n)?;
    need("mean", "total", &total, 1)?;
    check_loops(
        "mean",
        &format!("summing {n} elements"),
        n.div_ceil(256) + 8,
    )?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "reduce",
            entry: "mean",
            constants: vec![("SQUARES", squares as u8 as f64)],
            params: MeanDims {
                n: dim_u32("mean", "n", n)?,
                scale,
                _pad: [0; 2],
            },
            bindings: vec![Binding::Read(src), Binding::ReadWrite(total)],
            workgroups: 1,
        },
    )
}
