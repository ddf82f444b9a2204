//! GPU lowering of the loss family: its ops as prebuilt launches (what they mean is in
//! `graph::rules::loss`).

use super::GpuArgs;
use crate::error::{Error, Result};
use crate::gpu::kernels;
use crate::gpu::{GpuBuffer, Kernel};
use crate::graph::plan::fused_with;
use crate::graph::LossOp;

/// This family's op as prebuilt launches (see [`super::lower_node`]); None for a view.
pub(super) fn lower(op: &LossOp, cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let GpuArgs {
        views,
        graph,
        i,
        shapes,
        scratch,
        ..
    } = cx;
    let views = *views;
    let i = *i;
    let ctx = views.ctx;
    let lens = views.lens;
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let s = &shapes[i];
    let v = |j: usize| views.view(j);
    Ok(match op {
        LossOp::Softmax => {
            Some(kernels::softmax_forward(ctx, s[0], s[1], v(inp(0))?, v(i)?)?.into())
        }
        LossOp::SoftmaxGrad => {
            Some(kernels::softmax_backward(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
        LossOp::SoftmaxXent { .. } | LossOp::Loss(_) => {
            let g = (i + 1..graph.len()).find(|&g| fused_with(graph, i, g));
            let grad_len = lens[inp(0)];
            let grad_view = match g {
                Some(g) => v(g)?,
                None => {
                    scratch.push(GpuBuffer::zeros(ctx, "unused loss gradient", grad_len)?);
                    scratch.last().expect("just pushed").full()
                }
            };
            let k = match op {
                LossOp::SoftmaxXent { smoothing } => {
                    let ls = &shapes[inp(0)];
                    kernels::softmax_xent(
                        ctx,
                        (ls[0], ls[1]),
                        *smoothing,
                        v(inp(0))?,
                        v(inp(1))?,
                        grad_view,
                        v(i)?,
                    )?
                }
                LossOp::Loss(kind) => kernels::pointwise_loss(
                    ctx,
                    *kind,
                    grad_len,
                    v(inp(0))?,
                    v(inp(1))?,
                    grad_view,
                    v(i)?,
                )?,
                _ => unreachable!("matched above"),
            };
            Some(k)
        }
        LossOp::SoftmaxXentGrad { .. } | LossOp::LossGrad(_) => {
            let fused = (0..i).any(|l| fused_with(graph, l, i));
            if !fused {
                return Err(Error::invalid(
                    "plan",
                    format!("{} without its loss node", node.op.name()),
                ));
            }
            None
        }
    })
}
