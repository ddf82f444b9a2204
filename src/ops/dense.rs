//! The dense family: matrix products, bias addition and its gradient (column sums).

use super::ShapeArgs;
use crate::error::Result;
use crate::graph::{Op, Shape};

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(a: &ShapeArgs<'_>) -> Result<Shape> {
    let (op, s) = (a.op, a.s);
    Ok(match op {
        Op::MatMul { trans_a, trans_b } => {
            a.want(2)?;
            let (a0, a1) = a.matrix(0)?;
            let (b0, b1) = a.matrix(1)?;
            let (m, k) = if *trans_a { (a1, a0) } else { (a0, a1) };
            let (k2, n) = if *trans_b { (b1, b0) } else { (b0, b1) };
            if k != k2 {
                return Err(a.mismatch(&format!("inner dimensions {k} and {k2} differ")));
            }
            vec![m, n]
        }
        Op::BiasAdd => {
            a.want(2)?;
            let (_, cols) = a.matrix(0)?;
            if s[1].as_slice() != [cols] {
                return Err(a.mismatch(&format!("bias must have shape ({cols})")));
            }
            s[0].clone()
        }
        Op::ColumnSum => {
            a.want(1)?;
            let (_, cols) = a.matrix(0)?;
            vec![cols]
        }
        other => unreachable!("{} is not a dense op", other.name()),
    })
}
