//! Lowering: every node that fusion left becomes prebuilt launches, in node order, with the
//! metrics launch right after the loss (ARCHITECTURE.md, "The GPU plan").

use super::fusion::{Fused, Fusion};
use super::{fused_with, Prepacked, Views};
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, ConvGeom, GemmSpec};
use crate::gpu::{GpuBuffer, Kernel};
use crate::graph::gpu_exec::{metric_kind, Arenas};
use crate::graph::{Graph, Op};
use crate::ops::{Activation, Window};

/// A plan's launches.
pub(super) struct Lowered {
    pub kernels: Vec<Kernel>,
    /// Buffers kernels write that no node reads (a loss gradient nobody differentiates).
    pub scratch: Vec<GpuBuffer>,
    /// Kernels [0, forward) compute the forward pass and the metrics.
    pub forward: usize,
}

/// What lowering reads besides the placed values.
pub(super) struct LowerInput<'a> {
    pub graph: &'a Graph,
    pub shapes: &'a [Vec<usize>],
    pub readers: &'a [Vec<usize>],
    pub fusion: &'a Fusion,
    pub loss: usize,
    /// Gradients copied into the arena at the end of the step: (node, arena offset).
    pub grad_copies: &'a [(usize, usize)],
    pub arenas: &'a Arenas,
}

/// Lowers every node of `input.graph` whose values `views` places.
pub(super) fn lower(
    views: &Views<'_>,
    input: &LowerInput<'_>,
    pre: &mut Prepacked,
) -> Result<Lowered> {
    let LowerInput {
        graph,
        shapes,
        readers,
        fusion,
        loss: loss_i,
        grad_copies,
        arenas,
    } = *input;
    let nodes = graph.nodes();
    let n = nodes.len();
    let mut kernels = Vec::new();
    let mut scratch = Vec::new();
    let mut forward = 0;
    let (ctx, lens) = (views.ctx, views.lens);
    let v = |i: usize| views.view(i);
    for i in 0..n {
        let node = &nodes[i];
        let inp = |k: usize| node.inputs[k].0;
        let s = &shapes[i];
        if fusion.skip[i] {
            continue;
        }
        if let Some(Fused {
            matmul: mm,
            bias,
            epilogue,
        }) = fusion.fused[i]
        {
            let (a, b) = (nodes[mm].inputs[0].0, nodes[mm].inputs[1].0);
            let Op::MatMul { trans_a, trans_b } = nodes[mm].op else {
                unreachable!("fusion starts at a matmul")
            };
            let k = if trans_a { shapes[a][0] } else { shapes[a][1] };
            let spec = GemmSpec::new(s[0], s[1], k)
                .trans_a(trans_a)
                .trans_b(trans_b)
                .epilogue(epilogue);
            // A layer's output that a GEMM reads next leaves this one packed.
            let gemm_reads = readers[i]
                .iter()
                .any(|&j| matches!(nodes[j].op, Op::MatMul { .. }));
            kernels.push(pre.gemm(
                views,
                &spec,
                (a, b),
                Some(v(bias)?),
                v(i)?,
                gemm_reads.then_some(i),
            )?);
            continue;
        }
        // (n, c, h, w) of input `k` and the geometry of a window over it.
        let geom = |k: usize, out: Option<usize>, win: Window| {
            let s = &shapes[inp(k)];
            ConvGeom {
                n: s[0],
                c: s[1],
                h: s[2],
                w: s[3],
                out: out.unwrap_or(s[1]),
                win,
            }
        };
        let kernel: Option<Kernel> = match &node.op {
            Op::Input | Op::Labels | Op::Param(_) | Op::Reshape(_) => None,
            Op::Conv2d(win) => {
                let g = geom(0, Some(shapes[i][1]), *win);
                Some(kernels::conv2d(
                    ctx,
                    &g,
                    v(inp(0))?,
                    v(inp(1))?,
                    v(inp(2))?,
                    v(i)?,
                )?)
            }
            Op::Conv2dGradInput { win, .. } => {
                // Geometry of the forward convolution: its input is this node's output.
                let o = &shapes[i];
                let g = ConvGeom {
                    n: o[0],
                    c: o[1],
                    h: o[2],
                    w: o[3],
                    out: shapes[inp(0)][1],
                    win: *win,
                };
                Some(kernels::conv2d_grad_input(
                    ctx,
                    &g,
                    v(inp(0))?,
                    v(inp(1))?,
                    v(i)?,
                )?)
            }
            Op::Conv2dGradWeight(win) => {
                let g = geom(0, Some(shapes[inp(1)][1]), *win);
                Some(kernels::conv2d_grad_weight(
                    ctx,
                    &g,
                    v(inp(0))?,
                    v(inp(1))?,
                    v(i)?,
                )?)
            }
            Op::ChannelSum => {
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
            Op::MaxPool2d(win) | Op::AvgPool2d(win) => {
                let max = matches!(node.op, Op::MaxPool2d(_));
                let g = geom(0, None, *win);
                Some(kernels::pool(ctx, &g, max, v(inp(0))?, v(i)?)?.into())
            }
            Op::MaxPool2dGrad(win) => {
                let g = geom(0, None, *win);
                Some(kernels::pool_grad(ctx, &g, true, v(inp(0))?, v(inp(1))?, v(i)?)?.into())
            }
            Op::AvgPool2dGrad { win, .. } => {
                let o = &shapes[i];
                let g = ConvGeom {
                    n: o[0],
                    c: o[1],
                    h: o[2],
                    w: o[3],
                    out: o[1],
                    win: *win,
                };
                let dy = v(inp(0))?;
                Some(kernels::pool_grad(ctx, &g, false, dy, dy, v(i)?)?.into())
            }
            Op::MatMul { trans_a, trans_b } => {
                let a = &shapes[inp(0)];
                let k = if *trans_a { a[0] } else { a[1] };
                let spec = GemmSpec::new(s[0], s[1], k)
                    .trans_a(*trans_a)
                    .trans_b(*trans_b);
                Some(pre.gemm(views, &spec, (inp(0), inp(1)), None, v(i)?, None)?)
            }
            Op::BiasAdd => {
                Some(kernels::bias_add_out(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
            }
            Op::Activation(a) => {
                Some(kernels::activation_forward(ctx, *a, lens[i], v(inp(0))?, v(i)?)?.into())
            }
            Op::ActivationGrad(a) => Some(
                kernels::activation_backward(ctx, *a, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?
                    .into(),
            ),
            Op::Dropout { rate, seed } => Some(
                kernels::dropout(
                    ctx,
                    lens[i],
                    *rate,
                    *seed,
                    arenas.dropout_state.full(),
                    v(inp(0))?,
                    v(i)?,
                )?
                .into(),
            ),
            Op::Softmax => {
                Some(kernels::softmax_forward(ctx, s[0], s[1], v(inp(0))?, v(i)?)?.into())
            }
            Op::SoftmaxGrad => Some(
                kernels::softmax_backward(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into(),
            ),
            Op::SoftmaxXent | Op::Loss(_) => {
                let g = (i + 1..n).find(|&g| fused_with(graph, i, g));
                let grad_len = lens[inp(0)];
                let grad_view = match g {
                    Some(g) => v(g)?,
                    None => {
                        scratch.push(GpuBuffer::zeros(ctx, "unused loss gradient", grad_len)?);
                        scratch.last().expect("just pushed").full()
                    }
                };
                let k = match &node.op {
                    Op::SoftmaxXent => {
                        let ls = &shapes[inp(0)];
                        kernels::softmax_xent(
                            ctx,
                            ls[0],
                            ls[1],
                            v(inp(0))?,
                            v(inp(1))?,
                            grad_view,
                            v(i)?,
                        )?
                    }
                    Op::Loss(kind) => kernels::pointwise_loss(
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
            Op::SoftmaxXentGrad | Op::LossGrad(_) => {
                let fused = (0..i).any(|l| fused_with(graph, l, i));
                if !fused {
                    return Err(Error::invalid(
                        "plan",
                        format!("{} without its loss node", node.op.name()),
                    ));
                }
                None
            }
            Op::ColumnSum => {
                let (x, d) = (inp(0), &shapes[inp(0)]);
                // A layer's output gradient that GEMMs read transposed is packed in the same
                // pass that sums it (see `pack_transposed_with_sums`).
                let gemm_reads = readers[x]
                    .iter()
                    .any(|&j| matches!(nodes[j].op, Op::MatMul { .. }));
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
            Op::Add => Some(kernels::add(ctx, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?.into()),
        };
        kernels.extend(kernel);
        if i == loss_i {
            // Metrics right after the loss: the forward prefix ends here.
            let outputs = inp(0);
            let os = &shapes[outputs];
            let (rows, cols) = (os[0], os[1..].iter().product());
            kernels.push(
                kernels::metrics(
                    ctx,
                    rows,
                    cols,
                    metric_kind(&node.op, cols),
                    v(outputs)?,
                    v(inp(1))?,
                    v(i)?,
                    arenas.metrics.full(),
                )?
                .into(),
            );
            forward = kernels.len();
        }
    }
    for &(gi, off) in grad_copies {
        let dst = arenas.grads.view(off, lens[gi])?;
        kernels.push(
            kernels::activation_forward(ctx, Activation::Identity, lens[gi], v(gi)?, dst)?.into(),
        );
    }
    Ok(Lowered {
        kernels,
        scratch,
        forward,
    })
}
