//! The dense family: matrix products, bias addition and its gradient (column sums).

use ndarray::Ix1;

use super::{dims2, CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Shape};
use crate::ops::Epilogue;

/// Matrix products, bias addition and column sums.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DenseOp {
    /// `op(a) op(b)` of two matrices.
    #[strum(serialize = "matmul")]
    MatMul { trans_a: bool, trans_b: bool },
    /// `x + bias` broadcast over rows.
    BiasAdd,
    /// Sum over rows: the bias gradient.
    ColumnSum,
}

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(op: &DenseOp, a: &ShapeArgs<'_>) -> Result<Shape> {
    let s = a.s;
    Ok(match op {
        DenseOp::MatMul { trans_a, trans_b } => {
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
        DenseOp::BiasAdd => {
            a.want(2)?;
            let (_, cols) = a.matrix(0)?;
            if s[1].as_slice() != [cols] {
                return Err(a.mismatch(&format!("bias must have shape ({cols})")));
            }
            s[0].clone()
        }
        DenseOp::ColumnSum => {
            a.want(1)?;
            let (_, cols) = a.matrix(0)?;
            vec![cols]
        }
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(op: &DenseOp, g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match op {
        DenseOp::MatMul { trans_a, trans_b } => {
            let (dc, a, b) = (cx.dy()?, cx.node.inputs[0], cx.node.inputs[1]);
            let (ta, tb) = (*trans_a, *trans_b);
            if cx.needs(0) {
                // d op(A) = dC op(B)^T; for a transposed A, dA is its transpose.
                let da = if ta {
                    g.matmul_t(b, dc, tb, true)?
                } else {
                    g.matmul_t(dc, b, false, !tb)?
                };
                cx.give(0, da);
            }
            if cx.needs(1) {
                let db = if tb {
                    g.matmul_t(dc, a, true, ta)?
                } else {
                    g.matmul_t(a, dc, !ta, false)?
                };
                cx.give(1, db);
            }
        }
        DenseOp::BiasAdd => {
            let dy = cx.dy()?;
            if cx.needs(0) {
                cx.give(0, dy);
            }
            if cx.needs(1) {
                let db = g.add_op(Op::Dense(DenseOp::ColumnSum), &[dy])?;
                cx.give(1, db);
            }
        }
        DenseOp::ColumnSum => return Err(cx.second_order()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(op: &DenseOp, cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match op {
        DenseOp::MatMul { trans_a, trans_b } => {
            let (a, b) = (cx.get(0)?, cx.get(1)?);
            let s = cx.shape;
            let mut c = ndarray::Array2::zeros((s[0], s[1]));
            cpu::gemm(
                T::one(),
                dims2(a, "matmul")?,
                *trans_a,
                dims2(b, "matmul")?,
                *trans_b,
                T::zero(),
                &mut c,
                Epilogue::None,
                None,
            )?;
            Value::Float(c.into_dyn())
        }
        DenseOp::BiasAdd => {
            let mut y = dims2(cx.get(0)?, "bias_add")?.to_owned();
            let b = cx
                .get(1)?
                .view()
                .into_dimensionality::<Ix1>()
                .map_err(|_| Error::shape("bias_add", "bias must be a vector"))?;
            cpu::bias_add(&mut y, b)?;
            Value::Float(y.into_dyn())
        }
        DenseOp::ColumnSum => {
            Value::Float(cpu::column_sum(dims2(cx.get(0)?, "column_sum")?).into_dyn())
        }
    })
}
