//! GPU lowering of the shape family: its ops as prebuilt launches (what they mean is in
//! `graph::rules::shape`).

use super::GpuArgs;
use crate::error::Result;
use crate::gpu::kernels;
use crate::gpu::Kernel;
use crate::graph::ShapeOp;

/// This family's op as prebuilt launches (see [`super::lower_node`]); None for a view.
pub(super) fn lower(op: &ShapeOp, cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let (views, i) = (cx.views, cx.i);
    let node = &cx.graph.nodes()[i];
    // (rows, values per row) of node j's concrete shape.
    let rows = |j: usize| {
        let s = &cx.shapes[j];
        (s[0], s[1..].iter().product::<usize>())
    };
    Ok(match op {
        ShapeOp::Input
        | ShapeOp::Labels
        | ShapeOp::Param(_)
        | ShapeOp::Buffer(_)
        | ShapeOp::Reshape(_) => None,
        ShapeOp::Concat => {
            let inputs = node
                .inputs
                .iter()
                .map(|x| Ok((rows(x.0).1, views.view(x.0)?)))
                .collect::<Result<Vec<_>>>()?;
            Some(kernels::concat(
                views.ctx,
                rows(i).0,
                &inputs,
                views.view(i)?,
            )?)
        }
        ShapeOp::Permute(perm) => {
            let x = node.inputs[0].0;
            let (vx, vy) = (views.view(x)?, views.view(i)?);
            Some(kernels::permute(views.ctx, &cx.shapes[x], perm, vx, vy)?.into())
        }
        ShapeOp::Broadcast(_) | ShapeOp::SumTo(_) => {
            let x = node.inputs[0].0;
            let (from, to) = (&cx.shapes[x], &cx.shapes[i]);
            let (vx, vy) = (views.view(x)?, views.view(i)?);
            Some(match op {
                ShapeOp::Broadcast(_) => kernels::broadcast(views.ctx, from, to, vx, vy)?.into(),
                _ => kernels::sum_to(views.ctx, from, to, vx, vy)?.into(),
            })
        }
        ShapeOp::Slice { start, .. } => {
            let x = node.inputs[0].0;
            // For images a channel is a plane of values: scale axis-1 positions by its size.
            let plane: usize = cx.shapes[x][2..].iter().product();
            let (n, width) = rows(i);
            Some(
                kernels::slice(
                    views.ctx,
                    (n, rows(x).1),
                    (start * plane, width),
                    views.view(x)?,
                    views.view(i)?,
                )?
                .into(),
            )
        }
    })
}
