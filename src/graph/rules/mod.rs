//! What each op means, by family: its shape rule, its gradient rule and its CPU arm
//! (ARCHITECTURE.md, "How to add an op"). Each family file holds its op enum and matches it
//! exhaustively; `Op`'s family variant routes every op to its file. Nothing here knows the
//! GPU or the plan: an op's lowering to launches lives in `graph::plan::lower`, one file per
//! family.

mod conv;
mod dense;
mod elementwise;
mod loss;
mod norm;
mod shape;

pub use conv::ConvOp;
pub use dense::DenseOp;
pub use elementwise::ElementwiseOp;
pub(crate) use loss::metric_kind;
pub use loss::LossOp;
pub use norm::NormOp;
pub use shape::ShapeOp;

use ndarray::{Array1, ArrayD, Ix1, Ix2};

use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::graph::{show, Dim, Graph, Node, NodeId, Op, Shape};
use crate::ops::Window;

/// A node's value on the CPU reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<T> {
    Float(ArrayD<T>),
    Labels(Array1<u32>),
}

impl<T: Scalar> Value<T> {
    /// The float array (labels are not floats).
    pub fn float(&self) -> Option<&ArrayD<T>> {
        match self {
            Value::Float(a) => Some(a),
            Value::Labels(_) => None,
        }
    }
}

impl Op {
    /// Whether the op reads the train/eval flag and step (`GpuArgs::arenas.mode` on the GPU,
    /// `CpuArgs::training_step` on the CPU), so executors write it before each submission.
    pub(crate) fn reads_mode(&self) -> bool {
        matches!(
            self,
            Op::Elementwise(ElementwiseOp::Dropout { .. }) | Op::Norm(NormOp::BatchNorm { .. })
        )
    }
}

/// An op about to be added and its input shapes, with the checks shape rules share.
pub(crate) struct ShapeArgs<'a> {
    pub op: &'a Op,
    pub s: &'a [&'a Shape],
}

impl ShapeArgs<'_> {
    /// An error naming the op, its input shapes and `why`.
    fn mismatch(&self, why: &str) -> Error {
        let list: Vec<String> = self.s.iter().map(|s| show(s)).collect();
        Error::Shape {
            op: "graph",
            detail: format!("{} of {}: {why}", self.op.name(), list.join(" and ")),
        }
    }

    /// Checks the number of inputs.
    fn want(&self, n: usize) -> Result<()> {
        if self.s.len() != n {
            return Err(self.mismatch(&format!("takes {n} inputs, got {}", self.s.len())));
        }
        Ok(())
    }

    /// (rows, cols) of input `i`, which must be a matrix.
    fn matrix(&self, i: usize) -> Result<(Dim, Dim)> {
        match self.s[i].as_slice() {
            [a, b] => Ok((*a, *b)),
            _ => Err(self.mismatch(&format!("input {} must be a matrix", i + 1))),
        }
    }

    /// (c, h, w) of input `i`, which must be (batch, c, h, w).
    fn image(&self, i: usize) -> Result<(usize, usize, usize)> {
        match self.s[i].as_slice() {
            [Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] => Ok((*c, *h, *w)),
            _ => Err(self.mismatch(&format!(
                "input {} must be (batch, channels, height, width)",
                i + 1
            ))),
        }
    }

    /// The output size of `win` over (h, w), or an error naming both.
    fn fit(&self, win: &Window, h: usize, w: usize) -> Result<(usize, usize)> {
        win.output(h, w).ok_or_else(|| {
            self.mismatch(&format!(
                "a {}x{} window with stride {} and padding {} does not fit {h}x{w} (images are \
                 (channels, height, width), channels first)",
                win.kh, win.kw, win.stride, win.pad
            ))
        })
    }
}

/// Shape inference: an op's output shape from its input shapes, by its family's rule.
pub(crate) fn infer(op: &Op, s: &[&Shape]) -> Result<Shape> {
    let a = ShapeArgs { op, s };
    match op {
        Op::Shape(op) => shape::infer(op, &a),
        Op::Dense(op) => dense::infer(op, &a),
        Op::Elementwise(op) => elementwise::infer(op, &a),
        Op::Loss(op) => loss::infer(op, &a),
        Op::Conv(op) => conv::infer(op, &a),
        Op::Norm(op) => norm::infer(op, &a),
    }
}

/// One node's step of the backward pass: the gradient flowing into it and where its inputs'
/// gradients go.
pub(crate) struct GradArgs<'a> {
    pub id: NodeId,
    pub node: &'a Node,
    /// d loss / d node; `None` at the loss itself.
    pub dy: Option<NodeId>,
    /// Whether each input leads to a parameter (needs a gradient).
    pub needs: Vec<bool>,
    /// (input position, gradient node) contributions, summed by the caller.
    pub give: Vec<(usize, NodeId)>,
}

impl GradArgs<'_> {
    /// The incoming gradient; only a loss has none.
    fn dy(&self) -> Result<NodeId> {
        self.dy.ok_or_else(|| {
            Error::invalid("backward", format!("{} is not a loss", self.node.op.name()))
        })
    }

    fn needs(&self, k: usize) -> bool {
        self.needs[k]
    }

    fn give(&mut self, k: usize, g: NodeId) {
        self.give.push((k, g));
    }

    /// The error for differentiating a gradient op.
    fn second_order(&self) -> Error {
        Error::invalid(
            "backward",
            format!(
                "{} has no derivative here (no second-order gradients)",
                self.node.op.name()
            ),
        )
    }
}

/// Appends the nodes computing `cx.node`'s input gradients, by its family's rule
/// (ARCHITECTURE.md, "Gradients").
pub(crate) fn backward(g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match &cx.node.op {
        Op::Shape(op) => shape::backward(op, g, cx),
        Op::Dense(op) => dense::backward(op, g, cx),
        Op::Elementwise(op) => elementwise::backward(op, g, cx),
        Op::Loss(op) => loss::backward(op, g, cx),
        Op::Conv(op) => conv::backward(op, g, cx),
        Op::Norm(op) => norm::backward(op, g, cx),
    }
}

/// One node's evaluation on the CPU reference: the values computed so far.
pub(crate) struct CpuArgs<'a, T> {
    pub node: &'a Node,
    /// The node's concrete output shape.
    pub shape: &'a [usize],
    /// Every earlier node's value (None where not computed).
    pub vals: &'a [Option<Value<T>>],
    /// The optimizer step dropout draws its masks for; `None` when evaluating.
    pub training_step: Option<u64>,
    /// New values for buffers a training step moves (batch normalization's running
    /// statistics), collected for the executor to store after the step.
    pub updates: &'a std::cell::RefCell<Vec<(NodeId, ArrayD<T>)>>,
}

impl<T: Scalar> CpuArgs<'_, T> {
    /// Float input `k`.
    fn get(&self, k: usize) -> Result<&ArrayD<T>> {
        self.vals[self.node.inputs[k].0]
            .as_ref()
            .and_then(|v| v.float())
            .ok_or_else(|| {
                Error::invalid(
                    "cpu graph",
                    format!("{} needs float input {}", self.node.op.name(), k),
                )
            })
    }

    /// Records `value` as the new value of buffer input `k`, stored after the step.
    fn update(&self, k: usize, value: ArrayD<T>) {
        self.updates.borrow_mut().push((self.node.inputs[k], value));
    }

    /// Label input `k`.
    fn labels(&self, k: usize) -> Result<&Array1<u32>> {
        match self.vals[self.node.inputs[k].0].as_ref() {
            Some(Value::Labels(l)) => Ok(l),
            _ => Err(Error::invalid(
                "cpu graph",
                format!("{} needs labels", self.node.op.name()),
            )),
        }
    }
}

/// Evaluates a computed node (not an input or parameter) on the CPU reference, by its
/// family's arm.
pub(crate) fn eval_cpu<T: Scalar>(cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    match &cx.node.op {
        Op::Shape(op) => shape::eval_cpu(op, cx),
        Op::Dense(op) => dense::eval_cpu(op, cx),
        Op::Elementwise(op) => elementwise::eval_cpu(op, cx),
        Op::Loss(op) => loss::eval_cpu(op, cx),
        Op::Conv(op) => conv::eval_cpu(op, cx),
        Op::Norm(op) => norm::eval_cpu(op, cx),
    }
}

pub(super) fn dims4<T: Scalar>(a: &ArrayD<T>) -> Result<ndarray::ArrayView4<'_, T>> {
    a.view().into_dimensionality::<ndarray::Ix4>().map_err(|_| {
        Error::shape(
            "cpu graph",
            format!("needs (batch, c, h, w), got {:?}", a.shape()),
        )
    })
}

pub(super) fn dims1<T: Scalar>(a: &ArrayD<T>) -> Result<ndarray::ArrayView1<'_, T>> {
    a.view()
        .into_dimensionality::<Ix1>()
        .map_err(|_| Error::shape("cpu graph", format!("needs a vector, got {:?}", a.shape())))
}

pub(super) fn dims2<'a, T: Scalar>(
    a: &'a ArrayD<T>,
    what: &str,
) -> Result<ndarray::ArrayView2<'a, T>> {
    a.view().into_dimensionality::<Ix2>().map_err(|_| {
        Error::shape(
            "cpu graph",
            format!("{what} needs a matrix, got {:?}", a.shape()),
        )
    })
}
