//! The elementwise family: activations and their gradients, sums, products, dropout.

use super::{CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::Result;
use crate::graph::{Graph, Op, Shape};
use crate::ops::Activation;

/// Activations, sums, products and dropout.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ElementwiseOp {
    Activation(Activation),
    /// dx from (saved, dy): saved is y = f(x), or x where
    /// [`Activation::backward_reads_input`].
    ActivationGrad(Activation),
    /// Elementwise sum of same-shaped inputs (gradient accumulation).
    Add,
    /// Elementwise product of same-shaped inputs.
    Mul,
    /// Inverted dropout while training (identity when evaluating); the mask is a hash of
    /// (seed, step, element), so the backward pass is the same op applied to dy.
    Dropout {
        rate: f32,
        seed: u64,
    },
}

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(op: &ElementwiseOp, a: &ShapeArgs<'_>) -> Result<Shape> {
    let s = a.s;
    Ok(match op {
        ElementwiseOp::Activation(_) | ElementwiseOp::Dropout { .. } => {
            a.want(1)?;
            s[0].clone()
        }
        ElementwiseOp::ActivationGrad(_) | ElementwiseOp::Add | ElementwiseOp::Mul => {
            a.want(2)?;
            if s[0] != s[1] {
                return Err(a.mismatch("shapes must be equal"));
            }
            s[0].clone()
        }
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(op: &ElementwiseOp, g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match op {
        ElementwiseOp::Activation(act) => {
            // The gradient reads the output, or the input where the rule needs x.
            let saved = if act.backward_reads_input() {
                cx.node.inputs[0]
            } else {
                cx.id
            };
            let dx = g.add_op(
                Op::Elementwise(ElementwiseOp::ActivationGrad(*act)),
                &[saved, cx.dy()?],
            )?;
            cx.give(0, dx);
        }
        ElementwiseOp::Dropout { rate, seed } => {
            let dx = g.add_op(
                Op::Elementwise(ElementwiseOp::Dropout {
                    rate: *rate,
                    seed: *seed,
                }),
                &[cx.dy()?],
            )?;
            cx.give(0, dx);
        }
        ElementwiseOp::Add => {
            let dy = cx.dy()?;
            for k in 0..2 {
                if cx.needs(k) {
                    cx.give(k, dy);
                }
            }
        }
        ElementwiseOp::Mul => {
            // d(a b)/da = b, d(a b)/db = a.
            let dy = cx.dy()?;
            let [a, b] = [cx.node.inputs[0], cx.node.inputs[1]];
            for (k, other) in [(0, b), (1, a)] {
                if cx.needs(k) {
                    let d = g.add_op(Op::Elementwise(ElementwiseOp::Mul), &[dy, other])?;
                    cx.give(k, d);
                }
            }
        }
        ElementwiseOp::ActivationGrad(_) => return Err(cx.second_order()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(op: &ElementwiseOp, cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match op {
        ElementwiseOp::Activation(act) => {
            Value::Float(cpu::activation_forward(*act, cx.get(0)?.view()))
        }
        ElementwiseOp::ActivationGrad(act) => Value::Float(cpu::activation_backward(
            *act,
            cx.get(0)?.view(),
            cx.get(1)?.view(),
        )?),
        ElementwiseOp::Dropout { rate, seed } => Value::Float(cpu::dropout(
            cx.get(0)?.view(),
            *rate,
            *seed,
            cx.training_step.unwrap_or(0),
            cx.training_step.is_some(),
        )),
        ElementwiseOp::Add => Value::Float(cx.get(0)? + cx.get(1)?),
        ElementwiseOp::Mul => Value::Float(cx.get(0)? * cx.get(1)?),
    })
}
