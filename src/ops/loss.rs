//! Softmax and the losses: softmax and its gradient, softmax cross-entropy and the pointwise
//! losses (each loss's gradient is computed by the loss's own launch).

use ndarray::{ArrayD, IxDyn};

use super::{dims2, CpuArgs, GpuArgs, GradArgs, ShapeArgs};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::gpu::kernels;
use crate::gpu::{GpuBuffer, Kernel};
use crate::graph::plan::fused_with;
use crate::graph::{Graph, Op, Shape, Value};

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

/// This family's op as prebuilt launches (see [`super::lower`]); None for a view.
pub(super) fn lower(cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let GpuArgs {
        views,
        graph,
        i,
        shapes,
        scratch,
        ..
    } = cx;
    let views = *views;
    let i = *i;
    let ctx = views.ctx;
    let lens = views.lens;
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let s = &shapes[i];
    let v = |j: usize| views.view(j);
    Ok(match &node.op {
        Op::Softmax => Some(kernels::softmax_forward(ctx, s[0], s[1], v(inp(0))?, v(i)?)?.into()),
        Op::SoftmaxGrad => {
            Some(kernels::softmax_backward(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
        Op::SoftmaxXent { .. } | Op::Loss(_) => {
            let g = (i + 1..graph.len()).find(|&g| fused_with(graph, i, g));
            let grad_len = lens[inp(0)];
            let grad_view = match g {
                Some(g) => v(g)?,
                None => {
                    scratch.push(GpuBuffer::zeros(ctx, "unused loss gradient", grad_len)?);
                    scratch.last().expect("just pushed").full()
                }
            };
            let k = match &node.op {
                Op::SoftmaxXent { smoothing } => {
                    let ls = &shapes[inp(0)];
                    kernels::softmax_xent(
                        ctx,
                        (ls[0], ls[1]),
                        *smoothing,
                        v(inp(0))?,
                        v(inp(1))?,
                        grad_view,
                        v(i)?,
                    )?
                }
                Op::Loss(kind) => kernels::pointwise_loss(
                    ctx,
                    *kind,
                    grad_len,
                    v(inp(0))?,
                    v(inp(1))?,
                    grad_view,
                    v(i)?,
                )?,
                _ => unreachable!("matched above"),
            };
            Some(k)
        }
        Op::SoftmaxXentGrad { .. } | Op::LossGrad(_) => {
            let fused = (0..i).any(|l| fused_with(graph, l, i));
            if !fused {
                return Err(Error::invalid(
                    "plan",
                    format!("{} without its loss node", node.op.name()),
                ));
            }
            None
        }
        other => unreachable!("{} is not a loss op", other.name()),
    })
}
