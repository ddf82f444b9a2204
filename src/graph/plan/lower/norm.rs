//! GPU lowering of the norm family: its ops as prebuilt launches (what they mean is in
//! `graph::rules::norm`).

use super::GpuArgs;
use crate::error::Result;
use crate::gpu::kernels;
use crate::gpu::Kernel;
use crate::graph::NormOp;

/// This family's op as prebuilt launches (see [`super::lower_node`]).
pub(super) fn lower(op: &NormOp, cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let (views, graph, i, shapes) = (&cx.views, cx.graph, cx.i, cx.shapes);
    let ctx = views.ctx;
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let v = |j: usize| views.view(j);
    let (rows, cols) = (shapes[inp(0)][0], shapes[inp(0)][1]);
    let bn_shape = || kernels::BatchNormShape {
        batch: rows,
        channels: cols,
        positions: shapes[inp(0)][2..].iter().product(),
    };
    Ok(Some(match op {
        NormOp::BatchNorm { eps, momentum } => kernels::batch_norm_forward(
            ctx,
            bn_shape(),
            (*eps, *momentum),
            cx.arenas.mode.full(),
            v(inp(0))?,
            (v(inp(1))?, v(inp(2))?),
            (v(inp(3))?, v(inp(4))?),
            v(i)?,
        )?
        .into(),
        NormOp::BatchNormGrad { eps } => kernels::batch_norm_backward(
            ctx,
            bn_shape(),
            *eps,
            v(inp(0))?,
            v(inp(1))?,
            v(inp(2))?,
            v(i)?,
        )?
        .into(),
        NormOp::BatchNormGammaGrad { eps } => {
            kernels::batch_norm_gamma_grad(ctx, bn_shape(), *eps, v(inp(0))?, v(inp(1))?, v(i)?)?
                .into()
        }
        NormOp::LayerNorm { eps } | NormOp::LayerNormGrad { eps } => {
            let build = match op {
                NormOp::LayerNorm { .. } => kernels::layer_norm_forward,
                _ => kernels::layer_norm_backward,
            };
            // (x, gamma, beta) or (x, gamma, dy).
            let (a, b, c) = (v(inp(0))?, v(inp(1))?, v(inp(2))?);
            build(ctx, rows, cols, *eps, a, b, c, v(i)?)?.into()
        }
        NormOp::LayerNormGammaGrad { eps } => {
            kernels::layer_norm_gamma_grad(ctx, rows, cols, *eps, v(inp(0))?, v(inp(1))?, v(i)?)?
        }
    }))
}
