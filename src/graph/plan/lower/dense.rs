//! GPU lowering of the dense family: its ops as prebuilt launches (what they mean is in
//! `graph::rules::dense`).

use super::GpuArgs;
use crate::error::Result;
use crate::gpu::kernels::{self, GemmSpec};
use crate::gpu::Kernel;
use crate::graph::{DenseOp, Op};

/// This family's op as prebuilt launches (see [`super::lower_node`]); None for a view.
pub(super) fn lower(op: &DenseOp, cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let GpuArgs {
        views,
        graph,
        i,
        shapes,
        readers,
        pre,
        ..
    } = cx;
    let views = *views;
    let i = *i;
    let ctx = views.ctx;
    let nodes = graph.nodes();
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let s = &shapes[i];
    let v = |j: usize| views.view(j);
    Ok(match op {
        DenseOp::MatMul { trans_a, trans_b } => {
            let a = &shapes[inp(0)];
            let k = if *trans_a { a[0] } else { a[1] };
            let spec = GemmSpec::new(s[0], s[1], k)
                .trans_a(*trans_a)
                .trans_b(*trans_b);
            Some(pre.gemm(&views, &spec, (inp(0), inp(1)), None, v(i)?, None)?)
        }
        DenseOp::BiasAdd => {
            Some(kernels::bias_add_out(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
        DenseOp::ColumnSum => {
            let (x, d) = (inp(0), &shapes[inp(0)]);
            // A layer's output gradient that GEMMs read transposed is packed in the same
            // pass that sums it (see `pack_transposed_with_sums`).
            let gemm_reads = readers[x]
                .iter()
                .any(|&j| matches!(nodes[j].op, Op::Dense(DenseOp::MatMul { .. })));
            let cached = pre.packed(x, true, d[0]).is_some();
            let vx = v(x)?;
            Some(
                if gemm_reads
                    && !cached
                    && vx.offset.is_multiple_of(4)
                    && kernels::pack_with_sums_fits(ctx, d[0], d[1])
                {
                    let (t, launch) =
                        kernels::pack_transposed_with_sums(ctx, vx, d[0], d[1], v(i)?)?;
                    pre.packed.push((x, true, d[0], t));
                    launch.into()
                } else {
                    kernels::column_sum(ctx, d[0], d[1], false, vx, v(i)?)?.into()
                },
            )
        }
    })
}
