//! Softmax and the losses: softmax and its gradient, softmax cross-entropy and the pointwise
//! losses (each loss's gradient is computed by the loss's own launch).

use ndarray::{ArrayD, IxDyn};

use super::{dims2, CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Shape};
use crate::ops::MetricKind;
use crate::ops::PointwiseLoss;

/// Softmax and the losses.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum LossOp {
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
    SoftmaxXentGrad { smoothing: f32 },
    /// Mean pointwise loss of (prediction, target): a scalar.
    Loss(PointwiseLoss),
    /// d mean / d prediction from (prediction, target).
    LossGrad(PointwiseLoss),
}

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(op: &LossOp, a: &ShapeArgs<'_>) -> Result<Shape> {
    let s = a.s;
    Ok(match op {
        LossOp::Softmax => {
            a.want(1)?;
            a.matrix(0)?;
            s[0].clone()
        }
        LossOp::SoftmaxGrad => {
            a.want(2)?;
            if s[0] != s[1] {
                return Err(a.mismatch("shapes must be equal"));
            }
            s[0].clone()
        }
        LossOp::SoftmaxXent { .. } | LossOp::SoftmaxXentGrad { .. } => {
            a.want(2)?;
            let (rows, _) = a.matrix(0)?;
            if s[1].as_slice() != [rows] {
                return Err(a.mismatch(&format!("labels must have shape ({rows})")));
            }
            if matches!(op, LossOp::SoftmaxXent { .. }) {
                vec![]
            } else {
                s[0].clone()
            }
        }
        LossOp::Loss(_) | LossOp::LossGrad(_) => {
            a.want(2)?;
            a.matrix(0)?;
            if s[0] != s[1] {
                return Err(a.mismatch("prediction and target shapes must be equal"));
            }
            if matches!(op, LossOp::Loss(_)) {
                vec![]
            } else {
                s[0].clone()
            }
        }
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(op: &LossOp, g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match op {
        LossOp::Softmax => {
            let dx = g.add_op(Op::Loss(LossOp::SoftmaxGrad), &[cx.id, cx.dy()?])?;
            cx.give(0, dx);
        }
        LossOp::SoftmaxXent { .. } | LossOp::Loss(_) if cx.dy.is_some() => {
            return Err(Error::invalid(
                "backward",
                format!(
                    "`{}` is used by other nodes; differentiate from the final loss",
                    cx.node.name
                ),
            ))
        }
        LossOp::SoftmaxXent { smoothing } => {
            if cx.needs(1) {
                return Err(Error::invalid(
                    "backward",
                    "labels cannot be differentiated",
                ));
            }
            let op = Op::Loss(LossOp::SoftmaxXentGrad {
                smoothing: *smoothing,
            });
            let d = g.add_op(op, &[cx.node.inputs[0], cx.node.inputs[1]])?;
            cx.give(0, d);
        }
        LossOp::Loss(kind) => {
            if cx.needs(1) {
                return Err(Error::invalid(
                    "backward",
                    "loss targets cannot be differentiated",
                ));
            }
            let d = g.add_op(
                Op::Loss(LossOp::LossGrad(*kind)),
                &[cx.node.inputs[0], cx.node.inputs[1]],
            )?;
            cx.give(0, d);
        }
        LossOp::SoftmaxGrad | LossOp::SoftmaxXentGrad { .. } | LossOp::LossGrad(_) => {
            return Err(cx.second_order())
        }
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(op: &LossOp, cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match op {
        LossOp::Softmax => {
            Value::Float(cpu::softmax_forward(dims2(cx.get(0)?, "softmax")?).into_dyn())
        }
        LossOp::SoftmaxGrad => Value::Float(
            cpu::softmax_backward(dims2(cx.get(0)?, "softmax")?, dims2(cx.get(1)?, "softmax")?)?
                .into_dyn(),
        ),
        LossOp::SoftmaxXent { smoothing } | LossOp::SoftmaxXentGrad { smoothing } => {
            let (loss, grad) = cpu::softmax_xent(
                dims2(cx.get(0)?, "softmax_xent")?,
                cx.labels(1)?.view(),
                T::of(*smoothing as f64),
            )?;
            Value::Float(
                if matches!(cx.node.op, Op::Loss(LossOp::SoftmaxXent { .. })) {
                    ArrayD::from_elem(IxDyn(&[]), loss)
                } else {
                    grad.into_dyn()
                },
            )
        }
        LossOp::Loss(kind) | LossOp::LossGrad(kind) => {
            let (loss, grad) = cpu::pointwise_loss(
                *kind,
                dims2(cx.get(0)?, "loss")?,
                dims2(cx.get(1)?, "loss")?,
            )?;
            Value::Float(if matches!(cx.node.op, Op::Loss(LossOp::Loss(_))) {
                ArrayD::from_elem(IxDyn(&[]), loss)
            } else {
                grad.into_dyn()
            })
        }
    })
}

/// How accuracy is counted for a loss node (see [`MetricKind::for_loss`]).
pub(crate) fn metric_kind(loss: &Op, outputs_per_sample: usize) -> MetricKind {
    let pointwise = match loss {
        Op::Loss(LossOp::Loss(kind)) => Some(*kind),
        _ => None,
    };
    MetricKind::for_loss(pointwise, outputs_per_sample)
}
