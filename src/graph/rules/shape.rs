//! Leaves, views and copies: inputs, labels, parameters, reshapes, and concatenation and
//! slicing along axis 1.

use ndarray::IxDyn;

use super::{CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{show, Dim, Graph, Op, Shape};

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
        Op::Concat => {
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
        Op::Slice { start, len } => {
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
        Op::Broadcast(to) | Op::SumTo(to) => {
            a.want(1)?;
            let from = s[0];
            // Broadcast: each axis of the input is the target's or 1; SumTo: the reverse.
            let (small, big) = match op {
                Op::Broadcast(_) => (from, to),
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
        Op::Concat => {
            let dy = cx.dy()?;
            let mut start = 0;
            for k in 0..cx.node.inputs.len() {
                let len = match g.node(cx.node.inputs[k]).shape[1] {
                    Dim::Fixed(n) => n,
                    Dim::Batch => unreachable!("checked by the shape rule"),
                };
                if cx.needs(k) {
                    let dx = g.add_op(Op::Slice { start, len }, &[dy])?;
                    cx.give(k, dx);
                }
                start += len;
            }
        }
        Op::Slice { .. } => return Err(cx.second_order()),
        Op::Broadcast(_) => {
            let back = g.node(cx.node.inputs[0]).shape.clone();
            let dx = g.add_op(Op::SumTo(back), &[cx.dy()?])?;
            cx.give(0, dx);
        }
        Op::SumTo(_) => return Err(cx.second_order()),
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
        Op::Concat => {
            let xs = (0..cx.node.inputs.len())
                .map(|k| cx.get(k).map(|x| x.view()))
                .collect::<Result<Vec<_>>>()?;
            Value::Float(cpu::concat_channels(&xs))
        }
        Op::Slice { start, len } => {
            Value::Float(cpu::slice_channels(cx.get(0)?.view(), *start, *len))
        }
        Op::Broadcast(_) => Value::Float(cpu::broadcast(cx.get(0)?.view(), cx.shape)),
        Op::SumTo(_) => Value::Float(cpu::sum_to(cx.get(0)?.view(), cx.shape)),
        other => unreachable!("{} is not a shape op", other.name()),
    })
}
