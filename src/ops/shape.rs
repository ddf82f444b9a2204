//! Leaves and views: inputs, labels, parameters and reshapes.

use ndarray::IxDyn;

use super::{CpuArgs, GpuArgs, GradArgs, ShapeArgs};
use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::gpu::Kernel;
use crate::graph::{show, Dim, Graph, Op, Shape, Value};

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(a: &ShapeArgs<'_>) -> Result<Shape> {
    let (op, s) = (a.op, a.s);
    Ok(match op {
        Op::Input | Op::Labels | Op::Param(_) | Op::Buffer(_) => {
            return Err(a.mismatch("leaves are made with input(), labels(), param() and buffer()"))
        }
        Op::Reshape(to) => {
            a.want(1)?;
            let size = |sh: &Shape| -> (usize, usize) {
                sh.iter().fold((0, 1), |(b, f), d| match d {
                    Dim::Batch => (b + 1, f),
                    Dim::Fixed(n) => (b, f * n),
                })
            };
            if size(s[0]) != size(to) {
                return Err(a.mismatch(&format!(
                    "cannot hold {} elements as {}",
                    show(s[0]),
                    show(to)
                )));
            }
            to.clone()
        }
        other => unreachable!("{} is not a shape op", other.name()),
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match &cx.node.op {
        Op::Input | Op::Labels | Op::Param(_) | Op::Buffer(_) => {}
        Op::Reshape(_) => {
            let back = g.node(cx.node.inputs[0]).shape.clone();
            let dx = g.add_op(Op::Reshape(back), &[cx.dy()?])?;
            cx.give(0, dx);
        }
        other => unreachable!("{} is not a shape op", other.name()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match &cx.node.op {
        Op::Reshape(_) => {
            let x = cx.get(0)?;
            Value::Float(
                x.to_shape(IxDyn(cx.shape))
                    .map_err(|e| Error::shape("reshape", e.to_string()))?
                    .to_owned(),
            )
        }
        other => unreachable!("{} is not a shape op", other.name()),
    })
}

/// This family's op as prebuilt launches (see [`super::lower`]); None for a view.
pub(super) fn lower(_cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    Ok(match &_cx.graph.nodes()[_cx.i].op {
        Op::Input | Op::Labels | Op::Param(_) | Op::Buffer(_) | Op::Reshape(_) => None,
        other => unreachable!("{} is not a shape op", other.name()),
    })
}
