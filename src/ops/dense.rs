//! The dense family: matrix products, bias addition and its gradient (column sums).

use ndarray::Ix1;

use super::Epilogue;
use super::{dims2, CpuArgs, GpuArgs, GradArgs, ShapeArgs};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, GemmSpec};
use crate::gpu::Kernel;
use crate::graph::{Graph, Op, Shape, Value};

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

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match &cx.node.op {
        Op::MatMul { trans_a, trans_b } => {
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
        Op::BiasAdd => {
            let dy = cx.dy()?;
            if cx.needs(0) {
                cx.give(0, dy);
            }
            if cx.needs(1) {
                let db = g.add_op(Op::ColumnSum, &[dy])?;
                cx.give(1, db);
            }
        }
        Op::ColumnSum => return Err(cx.second_order()),
        other => unreachable!("{} is not a dense op", other.name()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match &cx.node.op {
        Op::MatMul { trans_a, trans_b } => {
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
        Op::BiasAdd => {
            let mut y = dims2(cx.get(0)?, "bias_add")?.to_owned();
            let b = cx
                .get(1)?
                .view()
                .into_dimensionality::<Ix1>()
                .map_err(|_| Error::shape("bias_add", "bias must be a vector"))?;
            cpu::bias_add(&mut y, b)?;
            Value::Float(y.into_dyn())
        }
        Op::ColumnSum => Value::Float(cpu::column_sum(dims2(cx.get(0)?, "column_sum")?).into_dyn()),
        other => unreachable!("{} is not a dense op", other.name()),
    })
}

/// This family's op as prebuilt launches (see [`super::lower`]); None for a view.
pub(super) fn lower(cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let GpuArgs {
        views,
        graph,
        i,
        shapes,
        readers,
        pre,
        ..
    } = cx;
    let views = *views;
    let i = *i;
    let ctx = views.ctx;
    let nodes = graph.nodes();
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let s = &shapes[i];
    let v = |j: usize| views.view(j);
    Ok(match &node.op {
        Op::MatMul { trans_a, trans_b } => {
            let a = &shapes[inp(0)];
            let k = if *trans_a { a[0] } else { a[1] };
            let spec = GemmSpec::new(s[0], s[1], k)
                .trans_a(*trans_a)
                .trans_b(*trans_b);
            Some(pre.gemm(&views, &spec, (inp(0), inp(1)), None, v(i)?, None)?)
        }
        Op::BiasAdd => {
            Some(kernels::bias_add_out(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
        }
        Op::ColumnSum => {
            let (x, d) = (inp(0), &shapes[inp(0)]);
            // A layer's output gradient that GEMMs read transposed is packed in the same
            // pass that sums it (see `pack_transposed_with_sums`).
            let gemm_reads = readers[x]
                .iter()
                .any(|&j| matches!(nodes[j].op, Op::MatMul { .. }));
            let cached = pre.packed(x, true, d[0]).is_some();
            let vx = v(x)?;
            Some(
                if gemm_reads
                    && !cached
                    && vx.offset.is_multiple_of(4)
                    && kernels::pack_with_sums_fits(ctx, d[0], d[1])
                {
                    let (t, launch) =
                        kernels::pack_transposed_with_sums(ctx, vx, d[0], d[1], v(i)?)?;
                    pre.packed.push((x, true, d[0], t));
                    launch.into()
                } else {
                    kernels::column_sum(ctx, d[0], d[1], false, vx, v(i)?)?.into()
                },
            )
        }
        other => unreachable!("{} is not a dense op", other.name()),
    })
}
