//! The elementwise family: activations and their gradients, sums, products, dropout.

use super::{CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::Result;
use crate::graph::{Graph, Op, Shape};

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(a: &ShapeArgs<'_>) -> Result<Shape> {
    let (op, s) = (a.op, a.s);
    Ok(match op {
        Op::Activation(_) | Op::Dropout { .. } => {
            a.want(1)?;
            s[0].clone()
        }
        Op::ActivationGrad(_) | Op::Add | Op::Mul => {
            a.want(2)?;
            if s[0] != s[1] {
                return Err(a.mismatch("shapes must be equal"));
            }
            s[0].clone()
        }
        other => unreachable!("{} is not an elementwise op", other.name()),
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match &cx.node.op {
        Op::Activation(act) => {
            // The gradient reads the output, or the input where the rule needs x.
            let saved = if act.backward_reads_input() {
                cx.node.inputs[0]
            } else {
                cx.id
            };
            let dx = g.add_op(Op::ActivationGrad(*act), &[saved, cx.dy()?])?;
            cx.give(0, dx);
        }
        Op::Dropout { rate, seed } => {
            let dx = g.add_op(
                Op::Dropout {
                    rate: *rate,
                    seed: *seed,
                },
                &[cx.dy()?],
            )?;
            cx.give(0, dx);
        }
        Op::Add => {
            let dy = cx.dy()?;
            for k in 0..2 {
                if cx.needs(k) {
                    cx.give(k, dy);
                }
            }
        }
        Op::Mul => {
            // d(a b)/da = b, d(a b)/db = a.
            let dy = cx.dy()?;
            let [a, b] = [cx.node.inputs[0], cx.node.inputs[1]];
            for (k, other) in [(0, b), (1, a)] {
                if cx.needs(k) {
                    let d = g.add_op(Op::Mul, &[dy, other])?;
                    cx.give(k, d);
                }
            }
        }
        Op::ActivationGrad(_) => return Err(cx.second_order()),
        other => unreachable!("{} is not an elementwise op", other.name()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match &cx.node.op {
        Op::Activation(act) => Value::Float(cpu::activation_forward(*act, cx.get(0)?.view())),
        Op::ActivationGrad(act) => Value::Float(cpu::activation_backward(
            *act,
            cx.get(0)?.view(),
            cx.get(1)?.view(),
        )?),
        Op::Dropout { rate, seed } => Value::Float(cpu::dropout(
            cx.get(0)?.view(),
            *rate,
            *seed,
            cx.training_step.unwrap_or(0),
            cx.training_step.is_some(),
        )),
        Op::Add => Value::Float(cx.get(0)? + cx.get(1)?),
        Op::Mul => Value::Float(cx.get(0)? * cx.get(1)?),
        other => unreachable!("{} is not an elementwise op", other.name()),
    })
}
