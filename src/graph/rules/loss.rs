//! Softmax and the losses: softmax and its gradient, softmax cross-entropy and the pointwise
//! losses (each loss's gradient is computed by the loss's own launch).

use ndarray::{ArrayD, IxDyn};

use super::{dims2, CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Shape};
use crate::ops::MetricKind;

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(a: &ShapeArgs<'_>) -> Result<Shape> {
    let (op, s) = (a.op, a.s);
    Ok(match op {
        Op::Softmax => {
            a.want(1)?;
            a.matrix(0)?;
            s[0].clone()
        }
        Op::SoftmaxGrad => {
            a.want(2)?;
            if s[0] != s[1] {
                return Err(a.mismatch("shapes must be equal"));
            }
            s[0].clone()
        }
        Op::SoftmaxXent { .. } | Op::SoftmaxXentGrad { .. } => {
            a.want(2)?;
            let (rows, _) = a.matrix(0)?;
            if s[1].as_slice() != [rows] {
                return Err(a.mismatch(&format!("labels must have shape ({rows})")));
            }
            if matches!(op, Op::SoftmaxXent { .. }) {
                vec![]
            } else {
                s[0].clone()
            }
        }
        Op::Loss(_) | Op::LossGrad(_) => {
            a.want(2)?;
            a.matrix(0)?;
            if s[0] != s[1] {
                return Err(a.mismatch("prediction and target shapes must be equal"));
            }
            if matches!(op, Op::Loss(_)) {
                vec![]
            } else {
                s[0].clone()
            }
        }
        other => unreachable!("{} is not a loss op", other.name()),
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match &cx.node.op {
        Op::Softmax => {
            let dx = g.add_op(Op::SoftmaxGrad, &[cx.id, cx.dy()?])?;
            cx.give(0, dx);
        }
        Op::SoftmaxXent { .. } | Op::Loss(_) if cx.dy.is_some() => {
            return Err(Error::invalid(
                "backward",
                format!(
                    "`{}` is used by other nodes; differentiate from the final loss",
                    cx.node.name
                ),
            ))
        }
        Op::SoftmaxXent { smoothing } => {
            if cx.needs(1) {
                return Err(Error::invalid(
                    "backward",
                    "labels cannot be differentiated",
                ));
            }
            let op = Op::SoftmaxXentGrad {
                smoothing: *smoothing,
            };
            let d = g.add_op(op, &[cx.node.inputs[0], cx.node.inputs[1]])?;
            cx.give(0, d);
        }
        Op::Loss(kind) => {
            if cx.needs(1) {
                return Err(Error::invalid(
                    "backward",
                    "loss targets cannot be differentiated",
                ));
            }
            let d = g.add_op(Op::LossGrad(*kind), &[cx.node.inputs[0], cx.node.inputs[1]])?;
            cx.give(0, d);
        }
        Op::SoftmaxGrad | Op::SoftmaxXentGrad { .. } | Op::LossGrad(_) => {
            return Err(cx.second_order())
        }
        other => unreachable!("{} is not a loss op", other.name()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match &cx.node.op {
        Op::Softmax => Value::Float(cpu::softmax_forward(dims2(cx.get(0)?, "softmax")?).into_dyn()),
        Op::SoftmaxGrad => Value::Float(
            cpu::softmax_backward(dims2(cx.get(0)?, "softmax")?, dims2(cx.get(1)?, "softmax")?)?
                .into_dyn(),
        ),
        Op::SoftmaxXent { smoothing } | Op::SoftmaxXentGrad { smoothing } => {
            let (loss, grad) = cpu::softmax_xent(
                dims2(cx.get(0)?, "softmax_xent")?,
                cx.labels(1)?.view(),
                T::of(*smoothing as f64),
            )?;
            Value::Float(if matches!(cx.node.op, Op::SoftmaxXent { .. }) {
                ArrayD::from_elem(IxDyn(&[]), loss)
            } else {
                grad.into_dyn()
            })
        }
        Op::Loss(kind) | Op::LossGrad(kind) => {
            let (loss, grad) = cpu::pointwise_loss(
                *kind,
                dims2(cx.get(0)?, "loss")?,
                dims2(cx.get(1)?, "loss")?,
            )?;
            Value::Float(if matches!(cx.node.op, Op::Loss(_)) {
                ArrayD::from_elem(IxDyn(&[]), loss)
            } else {
                grad.into_dyn()
            })
        }
        other => unreachable!("{} is not a loss op", other.name()),
    })
}

/// How accuracy is counted for a loss node (see [`MetricKind::for_loss`]).
pub fn metric_kind(loss: &Op, outputs_per_sample: usize) -> MetricKind {
    let pointwise = match loss {
        Op::Loss(kind) => Some(*kind),
        _ => None,
    };
    MetricKind::for_loss(pointwise, outputs_per_sample)
}
