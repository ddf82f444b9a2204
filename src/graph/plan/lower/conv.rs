//! GPU lowering of the conv family: its ops as prebuilt launches (what they mean is in
//! `graph::rules::conv`).

use super::GpuArgs;
use crate::error::Result;
use crate::gpu::kernels::{self, ConvGeom};
use crate::gpu::Kernel;
use crate::graph::{ConvOp, Op};
use crate::ops::Window;

/// This family's op as prebuilt launches (see [`super::lower_node`]); None for a view.
pub(super) fn lower(op: &ConvOp, cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let GpuArgs {
        views,
        graph,
        i,
        shapes,
        ..
    } = cx;
    let views = *views;
    let i = *i;
    let ctx = views.ctx;
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let v = |j: usize| views.view(j);
    // A window over an (n, c, h, w) value: an input's, or for a gradient op the forward
    // op's input, which is this node's output.
    let geom = |s: &[usize], out: Option<usize>, win: Window| ConvGeom {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
        out: out.unwrap_or(s[1]),
        win,
    };
    Ok(match op {
        ConvOp::Conv2d(win) => {
            let g = geom(&shapes[inp(0)], Some(shapes[i][1]), *win);
            Some(kernels::conv2d(
                ctx,
                &g,
                v(inp(0))?,
                v(inp(1))?,
                v(inp(2))?,
                v(i)?,
            )?)
        }
        ConvOp::Conv2dGradInput { win, .. } => {
            let g = geom(&shapes[i], Some(shapes[inp(0)][1]), *win);
            Some(kernels::conv2d_grad_input(
                ctx,
                &g,
                v(inp(0))?,
                v(inp(1))?,
                v(i)?,
            )?)
        }
        ConvOp::Conv2dGradWeight(win) => {
            let g = geom(&shapes[inp(0)], Some(shapes[inp(1)][1]), *win);
            Some(kernels::conv2d_grad_weight(
                ctx,
                &g,
                v(inp(0))?,
                v(inp(1))?,
                v(i)?,
            )?)
        }
        ConvOp::ChannelSum => {
            let d = &shapes[inp(0)];
            let positions = d[2] * d[3];
            Some(kernels::channel_sum(
                ctx,
                d[0],
                d[1],
                positions,
                v(inp(0))?,
                v(i)?,
            )?)
        }
        ConvOp::MaxPool2d(win) | ConvOp::AvgPool2d(win) => {
            let max = matches!(node.op, Op::Conv(ConvOp::MaxPool2d(_)));
            let g = geom(&shapes[inp(0)], None, *win);
            Some(kernels::pool(ctx, &g, max, v(inp(0))?, v(i)?)?.into())
        }
        ConvOp::MaxPool2dGrad(win) => {
            let g = geom(&shapes[inp(0)], None, *win);
            Some(kernels::pool_grad(ctx, &g, true, v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
        ConvOp::AvgPool2dGrad { win, .. } => {
            let g = geom(&shapes[i], None, *win);
            let dy = v(inp(0))?;
            Some(kernels::pool_grad(ctx, &g, false, dy, dy, v(i)?)?.into())
        }
    })
}
