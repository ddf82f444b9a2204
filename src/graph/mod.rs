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
pub use rules::{metric_kind, Value};
pub use step::{Executor, GpuSession};

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

/// Every operation the engine knows: one place for the list (ARCHITECTURE.md, decision 1).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Batch features, f32.
    Input,
    /// Integer class labels, one per batch row.
    Labels,
    /// A trainable parameter.
    Param(Init),
    /// Non-trainable state an op can read (running statistics, constants): kept across steps
    /// and written by the executor's `write_buffer`, never by the optimizer.
    Buffer(Init),
    /// `op(a) op(b)` of two matrices.
    MatMul {
        trans_a: bool,
        trans_b: bool,
    },
    /// `x + bias` broadcast over rows.
    BiasAdd,
    Activation(Activation),
    /// dx from (saved, dy): saved is y = f(x), or x where
    /// [`Activation::backward_reads_input`].
    ActivationGrad(Activation),
    /// Row softmax.
    Softmax,
    /// dx from (y, dy).
    SoftmaxGrad,
    /// Mean softmax cross-entropy of (logits, labels): a scalar.
    SoftmaxXent {
        /// Label smoothing: the target is `(1 - smoothing) * onehot + smoothing / classes`.
        smoothing: f32,
    },
    /// d mean / d logits from (logits, labels).
    SoftmaxXentGrad {
        smoothing: f32,
    },
    /// Mean pointwise loss of (prediction, target): a scalar.
    Loss(PointwiseLoss),
    /// d mean / d prediction from (prediction, target).
    LossGrad(PointwiseLoss),
    /// Sum over rows: the bias gradient.
    ColumnSum,
    /// Elementwise sum of same-shaped inputs (gradient accumulation).
    Add,
    /// Elementwise product of same-shaped inputs.
    Mul,
    /// The inputs side by side along axis 1 (features, or channels of images); every other
    /// axis must agree.
    Concat,
    /// `len` entries of axis 1 from `start` (a concatenation's gradient).
    Slice {
        start: usize,
        len: usize,
    },
    /// The input repeated along its axes of size 1 to this shape (of the same rank).
    Broadcast(Shape),
    /// The input summed over the axes where this shape (of the same rank) has size 1: a
    /// broadcast's gradient.
    SumTo(Shape),
    /// Same data, another shape of equal size.
    Reshape(Shape),
    /// Inverted dropout while training (identity when evaluating); the mask is a hash of
    /// (seed, step, element), so the backward pass is the same op applied to dy.
    Dropout {
        rate: f32,
        seed: u64,
    },
    /// 2-D convolution of (x (batch, c, h, w), weight (out, c, kh, kw), bias (out)).
    Conv2d(Window),
    /// dx of a convolution from (dy, weight), for an input of (h, w).
    Conv2dGradInput {
        win: Window,
        h: usize,
        w: usize,
    },
    /// d weight of a convolution from (x, dy).
    Conv2dGradWeight(Window),
    /// Per-channel sum over batch and positions of (batch, c, h, w): the conv bias gradient.
    ChannelSum,
    /// Max pooling of (batch, c, h, w) (no padding).
    MaxPool2d(Window),
    /// dx of max pooling from (x, dy).
    MaxPool2dGrad(Window),
    /// Average pooling of (batch, c, h, w) (no padding).
    AvgPool2d(Window),
    /// dx of average pooling from (dy), for an input of (h, w).
    AvgPool2dGrad {
        win: Window,
        h: usize,
        w: usize,
    },
    /// Layer normalization of (rows, features) over the features, from (x, gamma, beta):
    /// `(x - mean) / sqrt(var + eps) * gamma + beta` per row (population variance).
    LayerNorm {
        eps: f32,
    },
    /// dx of layer normalization from (x, gamma, dy).
    LayerNormGrad {
        eps: f32,
    },
    /// d gamma of layer normalization from (x, dy): the column sums of dy * xhat.
    LayerNormGammaGrad {
        eps: f32,
    },
    /// Batch normalization of (batch, channels) or (batch, channels, h, w) over all but the
    /// channel axis, from (x, gamma, beta, running_mean, running_var): training uses the
    /// batch's statistics and moves the running ones (buffers) by `momentum`; evaluation
    /// uses the running ones (`crate::cpu::batch_norm_forward` states the convention).
    BatchNorm {
        eps: f32,
        momentum: f32,
    },
    /// dx of batch normalization (training) from (x, gamma, dy).
    BatchNormGrad {
        eps: f32,
    },
    /// d gamma of batch normalization from (x, dy): per channel, the sum of dy * xhat.
    BatchNormGammaGrad {
        eps: f32,
    },
}

impl Op {
    /// A short snake_case name for errors, reports and automatic node names; a gradient
    /// op is its forward op's name with `_grad`.
    pub fn name(&self) -> String {
        match self {
            Op::Input => "input".into(),
            Op::Labels => "labels".into(),
            Op::Param(_) => "param".into(),
            Op::Buffer(_) => "buffer".into(),
            Op::MatMul { .. } => "matmul".into(),
            Op::BiasAdd => "bias_add".into(),
            Op::Activation(a) => a.name().into(),
            Op::ActivationGrad(a) => format!("{}_grad", a.name()),
            Op::Softmax => "softmax".into(),
            Op::SoftmaxGrad => "softmax_grad".into(),
            Op::SoftmaxXent { .. } => "softmax_xent".into(),
            Op::SoftmaxXentGrad { .. } => "softmax_xent_grad".into(),
            Op::Loss(l) => format!("{}_loss", l.name()),
            Op::LossGrad(l) => format!("{}_loss_grad", l.name()),
            Op::ColumnSum => "column_sum".into(),
            Op::Add => "add".into(),
            Op::Mul => "mul".into(),
            Op::Concat => "concat".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Broadcast(_) => "broadcast".into(),
            Op::SumTo(_) => "sum_to".into(),
            Op::Reshape(_) => "reshape".into(),
            Op::Dropout { .. } => "dropout".into(),
            Op::Conv2d(_) => "conv2d".into(),
            Op::Conv2dGradInput { .. } => "conv2d_grad_input".into(),
            Op::Conv2dGradWeight(_) => "conv2d_grad_weight".into(),
            Op::ChannelSum => "channel_sum".into(),
            Op::MaxPool2d(_) => "max_pool2d".into(),
            Op::MaxPool2dGrad(_) => "max_pool2d_grad".into(),
            Op::AvgPool2d(_) => "avg_pool2d".into(),
            Op::AvgPool2dGrad { .. } => "avg_pool2d_grad".into(),
            Op::LayerNorm { .. } => "layer_norm".into(),
            Op::LayerNormGrad { .. } => "layer_norm_grad".into(),
            Op::LayerNormGammaGrad { .. } => "layer_norm_gamma_grad".into(),
            Op::BatchNorm { .. } => "batch_norm".into(),
            Op::BatchNormGrad { .. } => "batch_norm_grad".into(),
            Op::BatchNormGammaGrad { .. } => "batch_norm_gamma_grad".into(),
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
            .filter(|&id| matches!(self.node(id).op, Op::Param(_)))
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
        self.leaf(Op::Input, shape.to_vec(), name)
    }

    /// Integer labels, one per batch row.
    pub fn labels(&mut self, name: &str) -> NodeId {
        self.leaf(Op::Labels, vec![Dim::Batch], name)
    }

    /// A parameter of a fixed shape with its initializer.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> NodeId {
        self.leaf(
            Op::Param(init),
            shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            name,
        )
    }

    /// Non-trainable state of a fixed shape with its initial values: no gradient flows to it
    /// and the optimizer never changes it; executors read and write it with `read_buffer` and
    /// `write_buffer`.
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> NodeId {
        self.leaf(
            Op::Buffer(init),
            shape.iter().map(|&d| Dim::Fixed(d)).collect(),
            name,
        )
    }

    /// The buffers, in creation order.
    pub fn buffers(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .map(|i| self.id_at(i))
            .filter(|&id| matches!(self.node(id).op, Op::Buffer(_)))
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
    pub(crate) fn initial_values(&self, id: NodeId, seed: u64) -> Vec<f32> {
        let node = self.node(id);
        let shape: Vec<usize> = node.shape.iter().map(|d| d.resolve(0)).collect();
        let (init, k) = match &node.op {
            Op::Param(init) => (init, self.params().iter().position(|&p| p == id)),
            Op::Buffer(init) => (
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
            Op::MatMul {
                trans_a: false,
                trans_b: false,
            },
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
        self.add_op(Op::MatMul { trans_a, trans_b }, &[a, b])
    }

    /// `x + bias`, bias broadcast over rows.
    pub fn bias_add(&mut self, x: NodeId, bias: NodeId) -> Result<NodeId> {
        self.add_op(Op::BiasAdd, &[x, bias])
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
        self.add_op(Op::LayerNorm { eps }, &[x, gamma, beta])
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
            if !matches!(self.node(b).op, Op::Buffer(_)) {
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
            Op::BatchNorm { eps, momentum },
            &[x, gamma, beta, running_mean, running_var],
        )
    }

    /// An elementwise activation.
    pub fn activation(&mut self, x: NodeId, act: Activation) -> Result<NodeId> {
        self.add_op(Op::Activation(act), &[x])
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
        self.add_op(Op::Dropout { rate, seed }, &[x])
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
        self.check_id(&Op::ChannelSum, weight)?;
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
        self.add_op(Op::Conv2d(win), &[x, weight, bias])
    }

    /// Max pooling of (batch, c, h, w) over `k` x `k` windows moved by `stride`.
    pub fn max_pool2d(&mut self, x: NodeId, k: usize, stride: usize) -> Result<NodeId> {
        self.add_op(Op::MaxPool2d(Window::square(k, stride, 0)), &[x])
    }

    /// Average pooling of (batch, c, h, w) over `k` x `k` windows moved by `stride`.
    pub fn avg_pool2d(&mut self, x: NodeId, k: usize, stride: usize) -> Result<NodeId> {
        self.add_op(Op::AvgPool2d(Window::square(k, stride, 0)), &[x])
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
        let pooled = self.add_op(Op::AvgPool2d(win), &[x])?;
        self.reshape(pooled, &[Dim::Batch, Dim::Fixed(c)])
    }

    /// Row softmax.
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.add_op(Op::Softmax, &[x])
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
        self.add_op(Op::SoftmaxXent { smoothing }, &[logits, labels])
    }

    /// Mean of a pointwise loss between a prediction and a target input.
    pub fn loss(
        &mut self,
        kind: PointwiseLoss,
        prediction: NodeId,
        target: NodeId,
    ) -> Result<NodeId> {
        self.add_op(Op::Loss(kind), &[prediction, target])
    }

    /// Elementwise sum.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add_op(Op::Add, &[a, b])
    }

    /// Elementwise product of two same-shaped nodes.
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add_op(Op::Mul, &[a, b])
    }

    /// `xs` side by side along axis 1 (features, or image channels): (batch, c1, ...) and
    /// (batch, c2, ...) give (batch, c1 + c2, ...); every other axis must agree.
    pub fn concat(&mut self, xs: &[NodeId]) -> Result<NodeId> {
        self.add_op(Op::Concat, xs)
    }

    /// `x` repeated along its axes of size 1 to `shape` (of the same rank).
    pub fn broadcast(&mut self, x: NodeId, shape: &[Dim]) -> Result<NodeId> {
        self.add_op(Op::Broadcast(shape.to_vec()), &[x])
    }

    /// `x` summed over the axes where `shape` (of the same rank) has size 1.
    pub fn sum_to(&mut self, x: NodeId, shape: &[Dim]) -> Result<NodeId> {
        self.add_op(Op::SumTo(shape.to_vec()), &[x])
    }

    /// `len` entries of axis 1 of `x` from `start`.
    pub fn slice(&mut self, x: NodeId, start: usize, len: usize) -> Result<NodeId> {
        self.add_op(Op::Slice { start, len }, &[x])
    }

    /// A view with another shape of the same size (e.g. flatten).
    pub fn reshape(&mut self, x: NodeId, shape: &[Dim]) -> Result<NodeId> {
        self.add_op(Op::Reshape(shape.to_vec()), &[x])
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
        if !self.contains(p) || !matches!(self.node(p).op, Op::Param(_)) {
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

    #[test]
    fn op_names_are_snake_case_and_gradients_end_in_grad() {
        let win = Window::square(2, 2, 0);
        let ops = [
            (Op::BiasAdd, "bias_add"),
            (Op::ColumnSum, "column_sum"),
            (Op::ChannelSum, "channel_sum"),
            (Op::SoftmaxXentGrad { smoothing: 0.1 }, "softmax_xent_grad"),
            (Op::ActivationGrad(Activation::Relu), "relu_grad"),
            (
                Op::LossGrad(PointwiseLoss::BinaryCrossEntropyWithLogits),
                "bce_with_logits_loss_grad",
            ),
            (Op::MaxPool2dGrad(win), "max_pool2d_grad"),
            (Op::AvgPool2dGrad { win, h: 4, w: 4 }, "avg_pool2d_grad"),
        ];
        for (op, name) in ops {
            assert_eq!(op.name(), name);
        }
    }
}
