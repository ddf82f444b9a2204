//! Static graphs of ops: build, infer shapes (with a symbolic batch dimension), differentiate
//! at compile time by appending gradient nodes, and run on the CPU reference.
//!
//! ```
//! use wgtrain::graph::{Dim, Graph, Init};
//! use wgtrain::ops::Activation;
//!
//! let mut g = Graph::new();
//! let x = g.input("x", &[Dim::Batch, Dim::Fixed(4)]);
//! let labels = g.labels("y");
//! let w = g.param("w", &[4, 3], Init::GlorotUniform);
//! let b = g.param("b", &[3], Init::Zeros);
//! let h = g.matmul(x, w)?;
//! let logits = g.bias_add(h, b)?;
//! let _probs = g.activation(logits, Activation::Relu)?;
//! let loss = g.softmax_xent(logits, labels)?;
//! let grads = g.backward(loss)?;
//! assert!(grads.of(w).is_some() && grads.of(b).is_some());
//! # Ok::<(), wgtrain::Error>(())
//! ```

mod autodiff;
mod cpu_exec;
mod feed;
pub(crate) mod gpu_exec;
mod init;
pub(crate) mod plan;
mod replicas;
mod rules;
mod step;

pub use autodiff::Gradients;
pub use cpu_exec::{CpuExecutor, CpuRun};
pub use feed::Feed;
pub use gpu_exec::{GpuExecutor, MemoryReport};
pub use init::Init;
pub use replicas::Replicated;
pub use rules::{ConvOp, DenseOp, ElementwiseOp, LossOp, NormOp, ShapeOp, Value};
pub use step::Executor;

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ops::{Activation, PointwiseLoss, Window};
use crate::optim::ParamOptions;

/// A dimension: the batch (fixed when a plan is compiled) or a fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    Batch,
    Fixed(usize),
}

impl Dim {
    fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Fixed(n) => n,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Batch => write!(f, "batch"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// A shape with possibly symbolic batch dimensions.
pub type Shape = Vec<Dim>;

pub(crate) fn show(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("({})", dims.join(", "))
}

/// Every operation the engine knows, by family (ARCHITECTURE.md, decision 1). Each family's
/// ops and rules live in one file of `graph/rules/`, and every match on a family's ops is
/// exhaustive, so a new op's missing arm is a compile error rather than a runtime panic.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Inputs, labels, parameters, buffers and the ops that only move values: reshapes,
    /// concatenation, slices, broadcasts.
    Shape(ShapeOp),
    /// Matrix products, bias addition and column sums.
    Dense(DenseOp),
    /// Activations, sums, products and dropout.
    Elementwise(ElementwiseOp),
    /// Softmax and the losses.
    Loss(LossOp),
    /// Convolutions and pooling over (batch, channels, height, width).
    Conv(ConvOp),
    /// Layer and batch normalization.
    Norm(NormOp),
}

impl Op {
    /// A short snake_case name for errors, reports and automatic node names; a gradient
    /// op is its forward op's name with `_grad`.
    pub fn name(&self) -> String {
        match self {
            Op::Elementwise(ElementwiseOp::Activation(a)) => a.name().into(),
            Op::Elementwise(ElementwiseOp::ActivationGrad(a)) => format!("{}_grad", a.name()),
            Op::Loss(LossOp::Loss(l)) => format!("{}_loss", l.name()),
            Op::Loss(LossOp::LossGrad(l)) => format!("{}_loss_grad", l.name()),
            Op::Shape(op) => <&str>::from(op).into(),
            Op::Dense(op) => <&str>::from(op).into(),
            Op::Elementwise(op) => <&str>::from(op).into(),
            Op::Loss(op) => <&str>::from(op).into(),
            Op::Conv(op) => <&str>::from(op).into(),
            Op::Norm(op) => <&str>::from(op).into(),
        }
    }
}

/// A node's handle: its position in the graph and the graph it belongs to, so a handle from
/// another graph is an error rather than a silent reference to whatever sits at its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) usize, pub(crate) u64);

/// Each new graph's identity (clones keep theirs: a clone holds every node of its original).
static NEXT_GRAPH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One node: an op, its inputs, its inferred shape and a name.
#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    pub name: String,
}

/// A graph of nodes in creation order (which is a topological order: inputs come first).
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    id: u64,
    /// Optimizer options of the parameters that have their own, by node index.
    param_options: HashMap<usize, ParamOptions>,
}

impl Default for Graph {
    fn default() -> Self {
        Graph {
            nodes: Vec::new(),
            id: NEXT_GRAPH.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            param_options: HashMap::new(),
        }
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of the node at position `index`.
    pub(crate) fn id_at(&self, index: usize) -> NodeId {
        NodeId(index, self.id)
    }

    /// Whether `id` names a node of this graph.
    pub fn contains(&self, id: NodeId) -> bool {
        id.1 == self.id && id.0 < self.nodes.len()
    }

    /// All nodes, in a topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The most recently added node.
    pub fn last(&self) -> Option<NodeId> {
        self.nodes.len().checked_sub(1).map(|i| self.id_at(i))
    }

    /// The position of a node in [`Graph::nodes`] (and in evaluation results).
    pub fn index(&self, id: NodeId) -> usize {
        id.0
    }

    /// The node behind an id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The parameters, in creation order.
    pub fn params(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .map(|i| self.id_at(i))
            .filter(|&id| matches!(self.node(id).op, Op::Shape(ShapeOp::Param(_))))
            .collect()
    }

    fn check_id(&self, op: &Op, id: NodeId) -> Result<()> {
        if !self.contains(id) {
            return Err(Error::invalid(
                "graph",
                format!(
                    "{} refers to node #{} which is not in this graph",
                    op.name(),
                    id.0
                ),
            ));
        }
        Ok(())
    }

    /// Adds a node after checking its inputs and inferring its shape.
    pub fn push(&mut self, op: Op, inputs: &[NodeId], name: &str) -> Result<NodeId> {
        for &i in inputs {
            self.check_id(&op, i)?;
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| &self.node(i).shape).collect();
        let shape = rules::infer(&op, &shapes)?;
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            shape,
            name: name.to_string(),
        });
        Ok(self.id_at(self.nodes.len() - 1))
    }

    /// A batch-features input, e.g. `[Dim::Batch, Dim::Fixed(784)]`.
    pub fn input(&mut self, name: &str, shape: &[Dim]) -> NodeId {
        self.leaf(Op::Shape(ShapeOp::Input), shape.to_vec(), name)
    }

    /// Integer labels, one per batch row.
    pub fn labels(&mut self, name: &str) -> NodeId {
        self.leaf(Op::Shape(ShapeOp::Labels), vec![Dim::Batch], name)
    }

    /// A parameter of a fixed shape with its initializer.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> NodeId {
        self.leaf(
            Op::Shape(ShapeOp::Param(init)),
            shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            name,
        )
    }

    /// Non-trainable state of a fixed shape with its initial values: no gradient flows to it
    /// and the optimizer never changes it; executors read and write it with `read_buffer` and
    /// `write_buffer`.
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> NodeId {
        self.leaf(
            Op::Shape(ShapeOp::Buffer(init)),
            shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            name,
        )
    }

    /// The buffers, in creation order.
    pub fn buffers(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .map(|i| self.id_at(i))
            .filter(|&id| matches!(self.node(id).op, Op::Shape(ShapeOp::Buffer(_))))
            .collect()
    }

    /// Where each buffer sits in the buffer arena, as [`Graph::param_layout`] lays out
    /// parameters: (buffer, element offset, elements), and the arena's length (at least 1).
    pub fn buffer_layout(&self) -> (Vec<(NodeId, usize, usize)>, usize) {
        let mut layout = Vec::new();
        let mut len = 0;
        for b in self.buffers() {
            let n: usize = self.node(b).shape.iter().map(|d| d.resolve(0)).product();
            layout.push((b, len, n));
            len = (len + n).next_multiple_of(64);
        }
        (layout, len.max(1))
    }

    /// Initial values of every leaf with an initializer: parameter `i` (creation order) draws
    /// from `seed + i`, buffer `j` from `seed + 2^32 + j`.
    /// Checks, before an executor allocates them, that the parameters and buffers fit in
    /// memory: every size is counted without overflow, and the host can reserve them all.
    pub(crate) fn check_leaf_sizes(&self, op: &'static str) -> Result<()> {
        let mut total: Option<usize> = Some(0);
        for id in self.params().into_iter().chain(self.buffers()) {
            let n = self
                .node(id)
                .shape
                .iter()
                .try_fold(1usize, |n, d| n.checked_mul(d.resolve(1)));
            total = total.zip(n).and_then(|(t, n)| t.checked_add(n));
        }
        let fits = total
            .filter(|&t| t.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
            .is_some_and(|t| Vec::<f32>::new().try_reserve_exact(t).is_ok());
        if !fits {
            return Err(Error::invalid(
                op,
                format!(
                    "the parameters and buffers need {} values ({}), more than this machine can \
                     allocate; make the layers smaller",
                    total.map_or("too many to count".into(), |t| t.to_string()),
                    total.map_or("more than addressable".into(), |t| format!(
                        "{:.1} GiB",
                        t as f64 * 4.0 / (1u64 << 30) as f64
                    )),
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn initial_values(&self, id: NodeId, seed: u64) -> Vec<f32> {
        let node = self.node(id);
        let shape: Vec<usize> = node.shape.iter().map(|d| d.resolve(0)).collect();
        let (init, k) = match &node.op {
            Op::Shape(ShapeOp::Param(init)) => (init, self.params().iter().position(|&p| p == id)),
            Op::Shape(ShapeOp::Buffer(init)) => (
                init,
                self.buffers()
                    .iter()
                    .position(|&b| b == id)
                    .map(|j| (1 << 32) + j),
            ),
            _ => unreachable!("only parameters and buffers have initializers"),
        };
        let k = k.expect("the leaf is in this graph") as u64;
        init.values(&shape, seed.wrapping_add(k))
    }

    fn leaf(&mut self, op: Op, shape: Shape, name: &str) -> NodeId {
        self.nodes.push(Node {
            op,
            inputs: vec![],
            shape,
            name: name.to_string(),
        });
        self.id_at(self.nodes.len() - 1)
    }

    fn auto_name(&self, op: &Op) -> String {
        format!("{}_{}", op.name(), self.nodes.len())
    }

    /// Adds a node named after its op (`matmul_12`).
    pub(crate) fn add_op(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = self.auto_name(&op);
        self.push(op, inputs, &name)
    }

    /// `a b` for a of shape (m, k) and b of shape (k, n).
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add_op(
            Op::Dense(DenseOp::MatMul {
                trans_a: false,
                trans_b: false,
            }),
            &[a, b],
        )
    }

    /// `op(a) op(b)` with either operand transposed.
    pub fn matmul_t(
        &mut self,
        a: NodeId,
        b: NodeId,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<NodeId> {
        self.add_op(Op::Dense(DenseOp::MatMul { trans_a, trans_b }), &[a, b])
    }

    /// `x + bias`, bias broadcast over rows.
    pub fn bias_add(&mut self, x: NodeId, bias: NodeId) -> Result<NodeId> {
        self.add_op(Op::Dense(DenseOp::BiasAdd), &[x, bias])
    }

    /// Layer normalization of (rows, features) over the features with a learned scale
    /// `gamma` and shift `beta` (each (features)); `eps` (positive, finite) is added to the
    /// variance (Keras' default is 1e-3, PyTorch's 1e-5).
    pub fn layer_norm(
        &mut self,
        x: NodeId,
        gamma: NodeId,
        beta: NodeId,
        eps: f32,
    ) -> Result<NodeId> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::invalid(
                "layer_norm",
                format!("epsilon {eps} must be positive and finite"),
            ));
        }
        self.add_op(Op::Norm(NormOp::LayerNorm { eps }), &[x, gamma, beta])
    }

    /// Batch normalization of `x` ((batch, channels) or (batch, channels, h, w)) with a
    /// learned scale and shift per channel and running statistics in two buffers, moved by
    /// `momentum` (PyTorch's convention: 0.1 moves them a tenth of the way per step).
    pub fn batch_norm(
        &mut self,
        x: NodeId,
        (gamma, beta): (NodeId, NodeId),
        (running_mean, running_var): (NodeId, NodeId),
        eps: f32,
        momentum: f32,
    ) -> Result<NodeId> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::invalid(
                "batch_norm",
                format!("epsilon {eps} must be positive and finite"),
            ));
        }
        if !(momentum.is_finite() && momentum > 0.0 && momentum <= 1.0) {
            return Err(Error::invalid(
                "batch_norm",
                format!("momentum {momentum} must be in (0, 1] (PyTorch's convention: the weight of the new batch)"),
            ));
        }
        for (what, b) in [
            ("running mean", running_mean),
            ("running variance", running_var),
        ] {
            if !matches!(self.node(b).op, Op::Shape(ShapeOp::Buffer(_))) {
                return Err(Error::invalid(
                    "batch_norm",
                    format!(
                        "the {what} must be a buffer (Graph::buffer), not a {}",
                        self.node(b).op.name()
                    ),
                ));
            }
        }
        self.add_op(
            Op::Norm(NormOp::BatchNorm { eps, momentum }),
            &[x, gamma, beta, running_mean, running_var],
        )
    }

    /// An elementwise activation.
    pub fn activation(&mut self, x: NodeId, act: Activation) -> Result<NodeId> {
        self.add_op(Op::Elementwise(ElementwiseOp::Activation(act)), &[x])
    }

    /// Inverted dropout of `x` at `rate` (in [0, 1)), with masks drawn from `seed` and the
    /// optimizer step; the identity when evaluating.
    pub fn dropout(&mut self, x: NodeId, rate: f32, seed: u64) -> Result<NodeId> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::invalid(
                "dropout",
                format!("the rate must be in [0, 1), got {rate}"),
            ));
        }
        self.add_op(Op::Elementwise(ElementwiseOp::Dropout { rate, seed }), &[x])
    }

    /// A 2-D convolution of `x` (batch, c, h, w) with `weight` (out, c, kh, kw) plus `bias`
    /// (out), zero padding `pad` on every side: (batch, out, oh, ow).
    pub fn conv2d(
        &mut self,
        x: NodeId,
        weight: NodeId,
        bias: NodeId,
        stride: usize,
        pad: usize,
    ) -> Result<NodeId> {
        self.check_id(&Op::Conv(ConvOp::ChannelSum), weight)?;
        let (kh, kw) = match self.node(weight).shape.as_slice() {
            [_, _, Dim::Fixed(kh), Dim::Fixed(kw)] => (*kh, *kw),
            other => {
                return Err(Error::shape(
                    "conv2d",
                    format!("the weight must be (out, in, kh, kw), got {}", show(other)),
                ))
            }
        };
        let win = Window {
            kh,
            kw,
            stride,
            pad,
        };
        self.add_op(Op::Conv(ConvOp::Conv2d(win)), &[x, weight, bias])
    }

    /// Max pooling of (batch, c, h, w) over `k` x `k` windows moved by `stride`.
    pub fn max_pool2d(&mut self, x: NodeId, k: usize, stride: usize) -> Result<NodeId> {
        self.add_op(
            Op::Conv(ConvOp::MaxPool2d(Window::square(k, stride, 0))),
            &[x],
        )
    }

    /// Average pooling of (batch, c, h, w) over `k` x `k` windows moved by `stride`.
    pub fn avg_pool2d(&mut self, x: NodeId, k: usize, stride: usize) -> Result<NodeId> {
        self.add_op(
            Op::Conv(ConvOp::AvgPool2d(Window::square(k, stride, 0))),
            &[x],
        )
    }

    /// The mean over positions of (batch, c, h, w): (batch, c).
    pub fn global_avg_pool(&mut self, x: NodeId) -> Result<NodeId> {
        let (c, h, w) = match self.node(x).shape.as_slice() {
            [Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] => (*c, *h, *w),
            other => {
                return Err(Error::shape(
                    "global_avg_pool",
                    format!("needs (batch, c, h, w), got {}", show(other)),
                ))
            }
        };
        let win = Window {
            kh: h,
            kw: w,
            stride: 1,
            pad: 0,
        };
        let pooled = self.add_op(Op::Conv(ConvOp::AvgPool2d(win)), &[x])?;
        self.reshape(pooled, &[Dim::Batch, Dim::Fixed(c)])
    }

    /// Row softmax.
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.add_op(Op::Loss(LossOp::Softmax), &[x])
    }

    /// Mean softmax cross-entropy of logits against integer labels.
    pub fn softmax_xent(&mut self, logits: NodeId, labels: NodeId) -> Result<NodeId> {
        self.softmax_xent_smoothed(logits, labels, 0.0)
    }

    /// Softmax cross-entropy against labels smoothed by `smoothing` in [0, 1): the target is
    /// `(1 - smoothing) * onehot(label) + smoothing / classes` (Keras' `label_smoothing`,
    /// PyTorch's `CrossEntropyLoss(label_smoothing=...)`).
    pub fn softmax_xent_smoothed(
        &mut self,
        logits: NodeId,
        labels: NodeId,
        smoothing: f32,
    ) -> Result<NodeId> {
        if !(0.0..1.0).contains(&smoothing) {
            return Err(Error::invalid(
                "softmax_xent",
                format!("label smoothing {smoothing} must be in [0, 1)"),
            ));
        }
        self.add_op(
            Op::Loss(LossOp::SoftmaxXent { smoothing }),
            &[logits, labels],
        )
    }

    /// Mean of a pointwise loss between a prediction and a target input.
    pub fn loss(
        &mut self,
        kind: PointwiseLoss,
        prediction: NodeId,
        target: NodeId,
    ) -> Result<NodeId> {
        self.add_op(Op::Loss(LossOp::Loss(kind)), &[prediction, target])
    }

    /// Elementwise sum.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add_op(Op::Elementwise(ElementwiseOp::Add), &[a, b])
    }

    /// Elementwise product of two same-shaped nodes.
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add_op(Op::Elementwise(ElementwiseOp::Mul), &[a, b])
    }

    /// `xs` side by side along axis 1 (features, or image channels): (batch, c1, ...) and
    /// (batch, c2, ...) give (batch, c1 + c2, ...); every other axis must agree.
    pub fn concat(&mut self, xs: &[NodeId]) -> Result<NodeId> {
        self.add_op(Op::Shape(ShapeOp::Concat), xs)
    }

    /// `x` repeated along its axes of size 1 to `shape` (of the same rank).
    pub fn broadcast(&mut self, x: NodeId, shape: &[Dim]) -> Result<NodeId> {
        self.add_op(Op::Shape(ShapeOp::Broadcast(shape.to_vec())), &[x])
    }

    /// `x` with its axes reordered: output axis `a` is axis `perm[a]` of `x` (`perm[0]` is 0,
    /// the batch axis).
    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.add_op(Op::Shape(ShapeOp::Permute(perm.to_vec())), &[x])
    }

    /// `x` summed over the axes where `shape` (of the same rank) has size 1.
    pub fn sum_to(&mut self, x: NodeId, shape: &[Dim]) -> Result<NodeId> {
        self.add_op(Op::Shape(ShapeOp::SumTo(shape.to_vec())), &[x])
    }

    /// `len` entries of axis 1 of `x` from `start`.
    pub fn slice(&mut self, x: NodeId, start: usize, len: usize) -> Result<NodeId> {
        self.add_op(Op::Shape(ShapeOp::Slice { start, len }), &[x])
    }

    /// A view with another shape of the same size (e.g. flatten).
    pub fn reshape(&mut self, x: NodeId, shape: &[Dim]) -> Result<NodeId> {
        self.add_op(Op::Shape(ShapeOp::Reshape(shape.to_vec())), &[x])
    }

    /// Flattens everything after the batch dimension.
    pub fn flatten(&mut self, x: NodeId) -> Result<NodeId> {
        let shape = &self.node(x).shape;
        let rest = shape[1..].iter().try_fold(1usize, |acc, d| match d {
            Dim::Fixed(n) => Some(acc * n),
            Dim::Batch => None,
        });
        match (shape.first(), rest) {
            (Some(Dim::Batch), Some(n)) => self.reshape(x, &[Dim::Batch, Dim::Fixed(n)]),
            _ => Err(Error::shape(
                "flatten",
                format!("needs (batch, fixed dims...), got {}", show(shape)),
            )),
        }
    }

    /// Gives parameter `p` its own optimizer options (a parameter group: parameters with equal
    /// options are updated together).
    pub fn set_param_options(&mut self, p: NodeId, options: ParamOptions) -> Result<()> {
        options.validate()?;
        if !self.contains(p) || !matches!(self.node(p).op, Op::Shape(ShapeOp::Param(_))) {
            return Err(Error::invalid(
                "set_param_options",
                format!("node #{} is not a parameter of this graph", p.0),
            ));
        }
        self.param_options.insert(p.0, options);
        Ok(())
    }

    /// Parameter `p`'s optimizer options (the defaults unless set).
    pub fn param_options(&self, p: NodeId) -> ParamOptions {
        self.param_options.get(&p.0).copied().unwrap_or_default()
    }

    /// The parameter groups: distinct options in the order their first parameter was created,
    /// each with its parameters in creation order.
    pub fn param_groups(&self) -> Vec<(ParamOptions, Vec<NodeId>)> {
        let mut groups: Vec<(ParamOptions, Vec<NodeId>)> = Vec::new();
        for p in self.params() {
            let o = self.param_options(p);
            match groups.iter_mut().find(|(g, _)| *g == o) {
                Some((_, ps)) => ps.push(p),
                None => groups.push((o, vec![p])),
            }
        }
        groups
    }

    /// Where each parameter sits in the flat arenas both executors use for parameters,
    /// gradients and optimizer state: (parameter, element offset, elements), group by group
    /// ([`Graph::param_groups`]; with one group, in creation order), each starting on a
    /// 64-element (256-byte) boundary, every adapter's storage-offset alignment; and the
    /// arena's length (at least 1). Padding elements are zero.
    pub fn param_layout(&self) -> (Vec<(NodeId, usize, usize)>, usize) {
        let mut layout = Vec::new();
        let mut len = 0;
        for p in self.param_groups().into_iter().flat_map(|(_, ps)| ps) {
            let n: usize = self.node(p).shape.iter().map(|d| d.resolve(0)).product();
            layout.push((p, len, n));
            len = (len + n).next_multiple_of(64);
        }
        (layout, len.max(1))
    }

    /// Each group's options and its range of the arenas: (options, start, elements).
    pub(crate) fn param_group_ranges(&self) -> Vec<(ParamOptions, usize, usize)> {
        let (layout, len) = self.param_layout();
        let groups = self.param_groups();
        let mut ranges = Vec::new();
        let mut k = 0;
        for (options, ps) in &groups {
            let start = layout[k].1;
            k += ps.len();
            let end = layout.get(k).map_or(len, |l| l.1);
            ranges.push((*options, start, end - start));
        }
        if ranges.is_empty() {
            ranges.push((ParamOptions::default(), 0, len));
        }
        ranges
    }

    /// Concrete shapes of every node for a batch size.
    pub fn concrete_shapes(&self, batch: usize) -> Vec<Vec<usize>> {
        self.nodes
            .iter()
            .map(|n| n.shape.iter().map(|d| d.resolve(batch)).collect())
            .collect()
    }
}

/// Values a caller hands an executor (gradients at the seam, a buffer's contents): exactly
/// `len` of them (`what` names the destination, e.g. "a buffer"), every one finite (`noun`
/// names them in the error, e.g. "gradient").
pub(crate) fn check_host_values(
    op: &'static str,
    what: &str,
    noun: &str,
    len: usize,
    values: &[f32],
) -> Result<()> {
    if values.len() != len {
        return Err(Error::shape(
            op,
            format!("{} values for {what} of {len}", values.len()),
        ));
    }
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            format!("{noun} value {bad} is {}", values[bad]),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op's name, as the hand-written table before names were derived gave them
    /// (automatic node names and error messages use them).
    #[test]
    fn op_names_are_snake_case_and_gradients_end_in_grad() {
        use Activation::Relu;
        let win = Window::square(2, 2, 0);
        let init = Init::Zeros;
        let mse = PointwiseLoss::MeanSquaredError;
        let bce = PointwiseLoss::BinaryCrossEntropyWithLogits;
        let (eps, momentum) = (1e-5, 0.1);
        let ops = [
            (Op::Shape(ShapeOp::Input), "input"),
            (Op::Shape(ShapeOp::Labels), "labels"),
            (Op::Shape(ShapeOp::Param(init)), "param"),
            (Op::Shape(ShapeOp::Buffer(init)), "buffer"),
            (Op::Shape(ShapeOp::Reshape(vec![])), "reshape"),
            (Op::Shape(ShapeOp::Concat), "concat"),
            (Op::Shape(ShapeOp::Slice { start: 0, len: 1 }), "slice"),
            (Op::Shape(ShapeOp::Broadcast(vec![])), "broadcast"),
            (Op::Shape(ShapeOp::SumTo(vec![])), "sum_to"),
            (Op::Shape(ShapeOp::Permute(vec![0, 2, 1])), "permute"),
            (
                Op::Dense(DenseOp::MatMul {
                    trans_a: false,
                    trans_b: true,
                }),
                "matmul",
            ),
            (Op::Dense(DenseOp::BiasAdd), "bias_add"),
            (Op::Dense(DenseOp::ColumnSum), "column_sum"),
            (Op::Elementwise(ElementwiseOp::Activation(Relu)), "relu"),
            (
                Op::Elementwise(ElementwiseOp::ActivationGrad(Relu)),
                "relu_grad",
            ),
            (Op::Elementwise(ElementwiseOp::Add), "add"),
            (Op::Elementwise(ElementwiseOp::Mul), "mul"),
            (
                Op::Elementwise(ElementwiseOp::Dropout { rate: 0.5, seed: 1 }),
                "dropout",
            ),
            (Op::Loss(LossOp::Softmax), "softmax"),
            (Op::Loss(LossOp::SoftmaxGrad), "softmax_grad"),
            (
                Op::Loss(LossOp::SoftmaxXent { smoothing: 0.1 }),
                "softmax_xent",
            ),
            (
                Op::Loss(LossOp::SoftmaxXentGrad { smoothing: 0.1 }),
                "softmax_xent_grad",
            ),
            (Op::Loss(LossOp::Loss(mse)), "mse_loss"),
            (Op::Loss(LossOp::LossGrad(bce)), "bce_with_logits_loss_grad"),
            (Op::Conv(ConvOp::Conv2d(win)), "conv2d"),
            (
                Op::Conv(ConvOp::Conv2dGradInput { win, h: 4, w: 4 }),
                "conv2d_grad_input",
            ),
            (
                Op::Conv(ConvOp::Conv2dGradWeight(win)),
                "conv2d_grad_weight",
            ),
            (Op::Conv(ConvOp::ChannelSum), "channel_sum"),
            (Op::Conv(ConvOp::MaxPool2d(win)), "max_pool2d"),
            (Op::Conv(ConvOp::MaxPool2dGrad(win)), "max_pool2d_grad"),
            (Op::Conv(ConvOp::AvgPool2d(win)), "avg_pool2d"),
            (
                Op::Conv(ConvOp::AvgPool2dGrad { win, h: 4, w: 4 }),
                "avg_pool2d_grad",
            ),
            (Op::Norm(NormOp::LayerNorm { eps }), "layer_norm"),
            (Op::Norm(NormOp::LayerNormGrad { eps }), "layer_norm_grad"),
            (
                Op::Norm(NormOp::LayerNormGammaGrad { eps }),
                "layer_norm_gamma_grad",
            ),
            (Op::Norm(NormOp::BatchNorm { eps, momentum }), "batch_norm"),
            (Op::Norm(NormOp::BatchNormGrad { eps }), "batch_norm_grad"),
            (
                Op::Norm(NormOp::BatchNormGammaGrad { eps }),
                "batch_norm_gamma_grad",
            ),
        ];
        for (op, name) in ops {
            assert_eq!(op.name(), name);
        }
    }
}
