//! The elementwise family: activations and their gradients, sums, dropout.

use super::ShapeArgs;
use crate::error::Result;
use crate::graph::{Op, Shape};

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(a: &ShapeArgs<'_>) -> Result<Shape> {
    let (op, s) = (a.op, a.s);
    Ok(match op {
        Op::Activation(_) | Op::Dropout { .. } => {
            a.want(1)?;
            s[0].clone()
        }
        Op::ActivationGrad(_) | Op::Add => {
            a.want(2)?;
            if s[0] != s[1] {
                return Err(a.mismatch("shapes must be equal"));
            }
            s[0].clone()
        }
        other => unreachable!("{} is not a elementwise op", other.name()),
    })
}
