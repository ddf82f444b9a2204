//! Softmax and the losses: softmax and its gradient, softmax cross-entropy and the pointwise
//! losses (each loss's gradient is computed by the loss's own launch).

use super::ShapeArgs;
use crate::error::Result;
use crate::graph::{Op, Shape};

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
        Op::SoftmaxXent | Op::SoftmaxXentGrad => {
            a.want(2)?;
            let (rows, _) = a.matrix(0)?;
            if s[1].as_slice() != [rows] {
                return Err(a.mismatch(&format!("labels must have shape ({rows})")));
            }
            if matches!(op, Op::SoftmaxXent) {
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
