//! GPU lowering of the elementwise family: its ops as prebuilt launches (what they mean is in
//! `graph::rules::elementwise`).

use super::GpuArgs;
use crate::error::Result;
use crate::gpu::kernels;
use crate::gpu::Kernel;
use crate::graph::ElementwiseOp;

/// This family's op as prebuilt launches (see [`super::lower_node`]); None for a view.
pub(super) fn lower(op: &ElementwiseOp, cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let GpuArgs {
        views,
        graph,
        i,
        arenas,
        ..
    } = cx;
    let views = *views;
    let i = *i;
    let ctx = views.ctx;
    let lens = views.lens;
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let v = |j: usize| views.view(j);
    Ok(match op {
        ElementwiseOp::Activation(a) => {
            Some(kernels::activation_forward(ctx, *a, lens[i], v(inp(0))?, v(i)?)?.into())
        }
        ElementwiseOp::ActivationGrad(a) => Some(
            kernels::activation_backward(ctx, *a, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?.into(),
        ),
        ElementwiseOp::Dropout { rate, seed } => Some(
            kernels::dropout(
                ctx,
                lens[i],
                *rate,
                *seed,
                arenas.mode.full(),
                v(inp(0))?,
                v(i)?,
            )?
            .into(),
        ),
        ElementwiseOp::Add => {
            Some(kernels::add(ctx, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
        ElementwiseOp::Mul => {
            Some(kernels::mul(ctx, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
    })
}
