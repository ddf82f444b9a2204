//! Leaves, views and copies: inputs, labels, parameters, reshapes, and concatenation and
//! slicing along axis 1.

use ndarray::IxDyn;

use super::{CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{show, Dim, Graph, Init, Op, Shape};

/// Inputs, labels, parameters, buffers and the ops that only move values: reshapes,
/// concatenation, slices, broadcasts.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ShapeOp {
    /// Batch features, f32.
    Input,
    /// Integer class labels, one per batch row.
    Labels,
    /// A trainable parameter.
    Param(Init),
    /// Non-trainable state an op can read (running statistics, constants): kept across steps
    /// and written by the executor's `write_buffer`, never by the optimizer.
    Buffer(Init),
    /// The inputs side by side along axis 1 (features, or channels of images); every other
    /// axis must agree.
    Concat,
    /// `len` entries of axis 1 from `start` (a concatenation's gradient).
    Slice { start: usize, len: usize },
    /// The input repeated along its axes of size 1 to this shape (of the same rank).
    Broadcast(Shape),
    /// The input summed over the axes where this shape (of the same rank) has size 1: a
    /// broadcast's gradient.
    SumTo(Shape),
    /// Same data, another shape of equal size.
    Reshape(Shape),
    /// The input's axes reordered: output axis `a` is input axis `perm[a]`; the batch axis
    /// stays first (`perm[0] == 0`). Keras' `Permute`, e.g. channels-last images to
    /// channels-first ones.
    Permute(Vec<usize>),
}

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(op: &ShapeOp, a: &ShapeArgs<'_>) -> Result<Shape> {
    let s = a.s;
    Ok(match op {
        ShapeOp::Input | ShapeOp::Labels | ShapeOp::Param(_) | ShapeOp::Buffer(_) => {
            return Err(a.mismatch("leaves are made with input(), labels(), param() and buffer()"))
        }
        ShapeOp::Reshape(to) => {
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
        ShapeOp::Concat => {
            if s.len() < 2 {
                return Err(a.mismatch("concatenates at least 2 inputs"));
            }
            let mut out = s[0].clone();
            if out.len() < 2 || out[0] != Dim::Batch {
                return Err(a.mismatch("inputs must be (batch, features, ...)"));
            }
            let mut along = 0;
            for (k, sh) in s.iter().enumerate() {
                match (sh.len() == out.len(), sh.get(1)) {
                    (true, Some(Dim::Fixed(n))) if sh[0] == Dim::Batch && sh[2..] == out[2..] => {
                        along += n
                    }
                    _ => {
                        return Err(a.mismatch(&format!(
                            "input {} differs from input 1 off axis 1 (only the features or \
                             channels may differ)",
                            k + 1
                        )))
                    }
                }
            }
            out[1] = Dim::Fixed(along);
            out
        }
        ShapeOp::Slice { start, len } => {
            a.want(1)?;
            match s[0].get(1) {
                Some(Dim::Fixed(n)) if s[0][0] == Dim::Batch && start + len <= *n && *len > 0 => {
                    let mut out = s[0].clone();
                    out[1] = Dim::Fixed(*len);
                    out
                }
                _ => {
                    return Err(a.mismatch(&format!(
                        "entries {start}..{} of axis 1 are not in the input",
                        start + len
                    )))
                }
            }
        }
        ShapeOp::Permute(perm) => {
            a.want(1)?;
            let from = s[0];
            let mut seen = vec![false; from.len()];
            let valid = perm.len() == from.len()
                && perm.first() == Some(&0)
                && perm
                    .iter()
                    .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(a.mismatch(&format!(
                    "{perm:?} is not an order of the {} axes that keeps the batch axis first",
                    from.len()
                )));
            }
            perm.iter().map(|&p| from[p]).collect()
        }
        ShapeOp::Broadcast(to) | ShapeOp::SumTo(to) => {
            a.want(1)?;
            let from = s[0];
            // Broadcast: each axis of the input is the target's or 1; SumTo: the reverse.
            let (small, big) = match op {
                ShapeOp::Broadcast(_) => (from, to),
                _ => (to, from),
            };
            let fits = small.len() == big.len()
                && small
                    .iter()
                    .zip(big.iter())
                    .all(|(x, y)| x == y || *x == Dim::Fixed(1));
            if !fits {
                return Err(a.mismatch(&format!(
                    "{} and {} differ on an axis where neither is 1 (or in rank)",
                    show(from),
                    show(to)
                )));
            }
            to.clone()
        }
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(op: &ShapeOp, g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match op {
        ShapeOp::Input | ShapeOp::Labels | ShapeOp::Param(_) | ShapeOp::Buffer(_) => {}
        ShapeOp::Reshape(_) => {
            let back = g.node(cx.node.inputs[0]).shape.clone();
            let dx = g.add_op(Op::Shape(ShapeOp::Reshape(back)), &[cx.dy()?])?;
            cx.give(0, dx);
        }
        ShapeOp::Concat => {
            let dy = cx.dy()?;
            let mut start = 0;
            for k in 0..cx.node.inputs.len() {
                let len = match g.node(cx.node.inputs[k]).shape[1] {
                    Dim::Fixed(n) => n,
                    Dim::Batch => unreachable!("checked by the shape rule"),
                };
                if cx.needs(k) {
                    let dx = g.add_op(Op::Shape(ShapeOp::Slice { start, len }), &[dy])?;
                    cx.give(k, dx);
                }
                start += len;
            }
        }
        ShapeOp::Slice { .. } => return Err(cx.second_order()),
        ShapeOp::Broadcast(_) => {
            let back = g.node(cx.node.inputs[0]).shape.clone();
            let dx = g.add_op(Op::Shape(ShapeOp::SumTo(back)), &[cx.dy()?])?;
            cx.give(0, dx);
        }
        ShapeOp::SumTo(_) => return Err(cx.second_order()),
        ShapeOp::Permute(perm) => {
            // The inverse order puts every axis back.
            let mut back = vec![0; perm.len()];
            for (a, &p) in perm.iter().enumerate() {
                back[p] = a;
            }
            let dx = g.add_op(Op::Shape(ShapeOp::Permute(back)), &[cx.dy()?])?;
            cx.give(0, dx);
        }
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(op: &ShapeOp, cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match op {
        ShapeOp::Input | ShapeOp::Labels | ShapeOp::Param(_) | ShapeOp::Buffer(_) => {
            return Err(Error::invalid(
                "cpu graph",
                "a leaf takes its value from a feed, a parameter or a buffer, not from its inputs",
            ))
        }
        ShapeOp::Reshape(_) => {
            let x = cx.get(0)?;
            Value::Float(
                x.to_shape(IxDyn(cx.shape))
                    .map_err(|e| Error::shape("reshape", e.to_string()))?
                    .to_owned(),
            )
        }
        ShapeOp::Concat => {
            let xs = (0..cx.node.inputs.len())
                .map(|k| cx.get(k).map(|x| x.view()))
                .collect::<Result<Vec<_>>>()?;
            Value::Float(cpu::concat_channels(&xs))
        }
        ShapeOp::Slice { start, len } => {
            Value::Float(cpu::slice_channels(cx.get(0)?.view(), *start, *len))
        }
        ShapeOp::Broadcast(_) => Value::Float(cpu::broadcast(cx.get(0)?.view(), cx.shape)),
        ShapeOp::SumTo(_) => Value::Float(cpu::sum_to(cx.get(0)?.view(), cx.shape)),
        ShapeOp::Permute(perm) => Value::Float(cpu::permute(cx.get(0)?.view(), perm)),
    })
}
