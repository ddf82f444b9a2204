//! The GPU planner: a differentiated graph compiled for one batch size into prebuilt launches
//! over resident buffers, in four steps with a module each (ARCHITECTURE.md, "The GPU plan"):
//!
//! 1. [`liveness`]: each value's last reader, and the buffer ("slot") it occupies;
//! 2. [`fusion`]: pattern rules that fold nodes into a GEMM's epilogue;
//! 3. [`prepack`]: the CPU-adapter policy for packed texture operands;
//! 4. [`lower`]: launches, in node order.
//!
//! Liveness and fusion are pure functions of the graph; buffers are created once placement
//! has decided their sizes.

mod arenas;
mod fusion;
mod liveness;
mod lower;
mod prepack;

use std::collections::HashMap;

pub(crate) use arenas::Arenas;
pub(crate) use liveness::Loc;
pub(crate) use prepack::Prepacked;

use super::{Gradients, Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::gpu::{GpuBuffer, GpuContext, Kernel, View};
use crate::graph::{LossOp, ShapeOp};

/// One batch size's launches and buffers.
pub(crate) struct GpuPlan {
    pub kernels: Vec<Kernel>,
    pub prepacked: Prepacked,
    /// Kernels [0, forward) compute the forward pass and the metrics.
    pub forward: usize,
    pub locs: Vec<Option<Loc>>,
    pub lens: Vec<usize>,
    pub inputs: Vec<GpuBuffer>,
    pub slots: Vec<GpuBuffer>,
    pub scratch: Vec<GpuBuffer>,
    /// Bytes activations would take with one buffer per node.
    pub without_reuse: u64,
}

/// Where every placed value of a plan can be read: the views lowering binds.
#[derive(Clone, Copy)]
pub(crate) struct Views<'a> {
    pub ctx: &'a GpuContext,
    pub locs: &'a [Option<Loc>],
    pub lens: &'a [usize],
    pub params: &'a GpuBuffer,
    pub grads: &'a GpuBuffer,
    pub buffers: &'a GpuBuffer,
    pub inputs: &'a [GpuBuffer],
    pub slots: &'a [GpuBuffer],
}

impl<'a> Views<'a> {
    /// The value of node `i`.
    pub fn view(&self, i: usize) -> Result<View<'a>> {
        let len = self.lens[i];
        match self.locs[i] {
            Some(Loc::Input(k)) => self.inputs[k].view(0, len),
            Some(Loc::Param(off)) => self.params.view(off, len),
            Some(Loc::Grad(off)) => self.grads.view(off, len),
            Some(Loc::Buffer(off)) => self.buffers.view(off, len),
            Some(Loc::Slot(s)) => self.slots[s].view(0, len),
            None => Err(Error::invalid(
                "executor",
                "a node without storage was read",
            )),
        }
    }
}

/// Whether gradient node `node` is computed by loss node `loss`'s own launch (fused losses).
pub(crate) fn fused_with(graph: &Graph, loss: usize, node: usize) -> bool {
    let (l, n) = (&graph.nodes()[loss], &graph.nodes()[node]);
    l.inputs == n.inputs
        && matches!(
            (&l.op, &n.op),
            (
                Op::Loss(LossOp::SoftmaxXent { .. }),
                Op::Loss(LossOp::SoftmaxXentGrad { .. })
            ) | (Op::Loss(LossOp::Loss(_)), Op::Loss(LossOp::LossGrad(_)))
        )
}

/// Compiles `graph` (differentiated from `loss`, with parameter gradients `grads`) for `batch`.
pub(crate) fn build(
    ctx: &GpuContext,
    graph: &Graph,
    loss: NodeId,
    grads: &Gradients,
    arenas: &Arenas,
    batch: usize,
) -> Result<GpuPlan> {
    if batch == 0 {
        return Err(Error::invalid("plan", "batch size 0"));
    }
    let shapes = graph.concrete_shapes(batch);
    let n = graph.len();
    let nodes = graph.nodes();
    let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    // A value of no elements would become a zero-sized binding or dispatch.
    if let Some(i) = (0..n).find(|&i| lens[i] == 0) {
        return Err(Error::shape(
            "plan",
            format!(
                "node `{}` ({}) has shape {:?}: no dimension may be 0",
                nodes[i].name,
                nodes[i].op.name(),
                shapes[i]
            ),
        ));
    }
    // Parameter gradients computed straight into the gradient arena, where the node is a
    // fresh computation claimed by exactly one parameter; others are copied there at the end.
    let mut arena_grad: HashMap<usize, usize> = HashMap::new();
    let mut grad_copies: Vec<(usize, usize)> = Vec::new();
    for p in graph.params() {
        let Some(g) = grads.of(p) else { continue };
        let gi = graph.index(g);
        let off = arenas.offsets[&p];
        let fresh = !matches!(
            nodes[gi].op,
            Op::Shape(ShapeOp::Reshape(_))
                | Op::Shape(ShapeOp::Param(_))
                | Op::Shape(ShapeOp::Buffer(_))
                | Op::Shape(ShapeOp::Input)
                | Op::Shape(ShapeOp::Labels)
        );
        if fresh && !arena_grad.contains_key(&gi) {
            arena_grad.insert(gi, off);
        } else {
            grad_copies.push((gi, off));
        }
    }
    // Read after the last node: the loss, its logits and labels (by the metrics launch), and
    // the gradients copied into the arena at the end.
    let loss_i = graph.index(loss);
    let mut read_at_end = vec![loss_i];
    read_at_end.extend(nodes[loss_i].inputs.iter().map(|i| i.0));
    read_at_end.extend(grad_copies.iter().map(|&(gi, _)| gi));
    let mut last_use = liveness::last_uses(nodes, &read_at_end);
    let readers = liveness::readers(nodes);
    // Values read after the last node or living in the gradient arena keep their storage.
    let pinned: Vec<bool> = (0..n)
        .map(|i| last_use[i] == n || arena_grad.contains_key(&i))
        .collect();
    let fusion = fusion::fuse(
        &fusion::Graph {
            nodes,
            readers: &readers,
            pinned: &pinned,
        },
        &mut last_use,
    );
    let param_offsets: HashMap<usize, usize> = arenas
        .offsets
        .iter()
        .map(|(p, &off)| (graph.index(*p), off))
        .collect();
    let buffer_offsets: HashMap<usize, usize> = arenas
        .buffer_offsets
        .iter()
        .map(|(b, &off)| (graph.index(*b), off))
        .collect();
    let fused_grad = |i: usize| {
        if i == loss_i
            || matches!(
                nodes[i].op,
                Op::Loss(LossOp::SoftmaxXent { .. }) | Op::Loss(LossOp::Loss(_))
            )
        {
            (i + 1..n).find(|&g| fused_with(graph, i, g))
        } else {
            None
        }
    };
    let (locs, slot_sizes) = liveness::place(
        nodes,
        &liveness::PlaceInput {
            lens: &lens,
            skip: &fusion.skip,
            last_use: &last_use,
            param_offsets: &param_offsets,
            buffer_offsets: &buffer_offsets,
            arena_grad: &arena_grad,
            fused_grad: &fused_grad,
        },
    );
    let inputs = (0..n)
        .filter(|&i| {
            matches!(
                nodes[i].op,
                Op::Shape(ShapeOp::Input) | Op::Shape(ShapeOp::Labels)
            )
        })
        .map(|i| GpuBuffer::zeros(ctx, &nodes[i].name, lens[i].max(1)))
        .collect::<Result<Vec<_>>>()?;
    let slots = slot_sizes
        .sizes
        .iter()
        .enumerate()
        .map(|(k, &len)| GpuBuffer::zeros(ctx, &format!("activations {k}"), len.max(1)))
        .collect::<Result<Vec<_>>>()?;
    let views = Views {
        ctx,
        locs: &locs,
        lens: &lens,
        params: &arenas.params,
        grads: &arenas.grads,
        buffers: &arenas.buffers,
        inputs: &inputs,
        slots: &slots,
    };
    let mut prepacked = Prepacked::default();
    let lowered = lower::lower(
        &views,
        &lower::LowerInput {
            graph,
            shapes: &shapes,
            readers: &readers,
            fusion: &fusion,
            loss: loss_i,
            grad_copies: &grad_copies,
            arenas,
        },
        &mut prepacked,
    )?;
    let without_reuse = lens
        .iter()
        .zip(&locs)
        .filter(|(_, l)| matches!(l, Some(Loc::Slot(_))))
        .map(|(n, _)| *n as u64 * 4)
        .sum();
    Ok(GpuPlan {
        kernels: lowered.kernels,
        prepacked,
        forward: lowered.forward,
        locs,
        lens,
        inputs,
        slots,
        scratch: lowered.scratch,
        without_reuse,
    })
}
