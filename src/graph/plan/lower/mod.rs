//! Lowering: every node that fusion left becomes prebuilt launches, in node order, with the
//! metrics launch right after the loss (ARCHITECTURE.md, "The GPU plan").

mod conv;
mod dense;
mod elementwise;
mod loss;
mod norm;
mod shape;

use super::fusion::{Fused, Fusion};
use super::{Arenas, Prepacked, Views};
use crate::error::Result;
use crate::gpu::kernels::{self, GemmSpec};
use crate::gpu::{GpuBuffer, Kernel};
use crate::graph::rules::metric_kind;
use crate::graph::{DenseOp, Graph, Op};
use crate::ops::Activation;

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
            let Op::Dense(DenseOp::MatMul { trans_a, trans_b }) = nodes[mm].op else {
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
                .any(|&j| matches!(nodes[j].op, Op::Dense(DenseOp::MatMul { .. })));
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
        let kernel = lower_node(&mut GpuArgs {
            views: *views,
            graph,
            i,
            shapes,
            readers,
            arenas,
            pre: &mut *pre,
            scratch: &mut scratch,
        })?;
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

/// One node's lowering to GPU launches: where every value of the plan lives, and the plan's
/// shared state (packed operands, scratch buffers).
struct GpuArgs<'a> {
    pub views: Views<'a>,
    pub graph: &'a Graph,
    /// The node's index.
    pub i: usize,
    /// Every node's concrete shape.
    pub shapes: &'a [Vec<usize>],
    pub readers: &'a [Vec<usize>],
    pub arenas: &'a Arenas,
    pub pre: &'a mut Prepacked,
    /// Buffers a launch writes that no node reads.
    pub scratch: &'a mut Vec<GpuBuffer>,
}

/// Lowers a node that no fusion rule absorbed to prebuilt launches, by its family's arm
/// (None for a view such as a reshape).
fn lower_node(cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let graph = cx.graph;
    match &graph.nodes()[cx.i].op {
        Op::Shape(op) => shape::lower(op, cx),
        Op::Dense(op) => dense::lower(op, cx),
        Op::Elementwise(op) => elementwise::lower(op, cx),
        Op::Loss(op) => loss::lower(op, cx),
        Op::Conv(op) => conv::lower(op, cx),
        Op::Norm(op) => norm::lower(op, cx),
    }
}
