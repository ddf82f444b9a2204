//! The normalization family: layer normalization and its two gradients (the third, d beta,
//! is a column sum of dy).

use ndarray::Ix1;

use super::{dims2, CpuArgs, GpuArgs, GradArgs, ShapeArgs};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::gpu::kernels;
use crate::gpu::Kernel;
use crate::graph::{Dim, Graph, Op, Shape, Value};

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(a: &ShapeArgs<'_>) -> Result<Shape> {
    let (op, s) = (a.op, a.s);
    let features = |a: &ShapeArgs<'_>| -> Result<Dim> {
        let (_, cols) = a
            .matrix(0)
            .map_err(|_| a.mismatch("layer normalization takes (rows, features); flatten first"))?;
        Ok(cols)
    };
    Ok(match op {
        Op::LayerNorm { .. } => {
            a.want(3)?;
            let cols = features(a)?;
            for (k, what) in [(1, "gamma"), (2, "beta")] {
                if s[k].as_slice() != [cols] {
                    return Err(a.mismatch(&format!("{what} must have shape ({cols})")));
                }
            }
            s[0].clone()
        }
        Op::LayerNormGrad { .. } => {
            a.want(3)?;
            let cols = features(a)?;
            if s[1].as_slice() != [cols] || s[2] != s[0] {
                return Err(a.mismatch("needs x, gamma (features) and dy shaped as x"));
            }
            s[0].clone()
        }
        Op::LayerNormGammaGrad { .. } => {
            a.want(2)?;
            let cols = features(a)?;
            if s[1] != s[0] {
                return Err(a.mismatch("dy must be shaped as x"));
            }
            vec![cols]
        }
        other => unreachable!("{} is not a normalization op", other.name()),
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match &cx.node.op {
        Op::LayerNorm { eps } => {
            let eps = *eps;
            let dy = cx.dy()?;
            let (x, gamma) = (cx.node.inputs[0], cx.node.inputs[1]);
            if cx.needs(0) {
                let dx = g.add_op(Op::LayerNormGrad { eps }, &[x, gamma, dy])?;
                cx.give(0, dx);
            }
            if cx.needs(1) {
                let dg = g.add_op(Op::LayerNormGammaGrad { eps }, &[x, dy])?;
                cx.give(1, dg);
            }
            if cx.needs(2) {
                let db = g.add_op(Op::ColumnSum, &[dy])?;
                cx.give(2, db);
            }
        }
        Op::LayerNormGrad { .. } | Op::LayerNormGammaGrad { .. } => return Err(cx.second_order()),
        other => unreachable!("{} is not a normalization op", other.name()),
    }
    Ok(())
}

fn vector<'a, T: Scalar>(cx: &'a CpuArgs<'_, T>, k: usize) -> Result<ndarray::ArrayView1<'a, T>> {
    cx.get(k)?
        .view()
        .into_dimensionality::<Ix1>()
        .map_err(|_| Error::shape("layer_norm", "gamma and beta must be vectors"))
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match &cx.node.op {
        Op::LayerNorm { eps } => {
            let x = dims2(cx.get(0)?, "layer_norm")?;
            let y = cpu::layer_norm_forward(x, vector(cx, 1)?, vector(cx, 2)?, T::of(*eps as f64))?;
            Value::Float(y.into_dyn())
        }
        Op::LayerNormGrad { eps } => {
            let x = dims2(cx.get(0)?, "layer_norm_grad")?;
            let dy = dims2(cx.get(2)?, "layer_norm_grad")?;
            let dx = cpu::layer_norm_backward(x, vector(cx, 1)?, dy, T::of(*eps as f64))?;
            Value::Float(dx.into_dyn())
        }
        Op::LayerNormGammaGrad { eps } => {
            let x = dims2(cx.get(0)?, "layer_norm_gamma_grad")?;
            let dy = dims2(cx.get(1)?, "layer_norm_gamma_grad")?;
            Value::Float(cpu::layer_norm_gamma_grad(x, dy, T::of(*eps as f64))?.into_dyn())
        }
        other => unreachable!("{} is not a normalization op", other.name()),
    })
}

/// This family's op as prebuilt launches (see [`super::lower`]).
pub(super) fn lower(cx: &mut GpuArgs<'_>) -> Result<Option<Kernel>> {
    let (views, graph, i, shapes) = (&cx.views, cx.graph, cx.i, cx.shapes);
    let ctx = views.ctx;
    let node = &graph.nodes()[i];
    let inp = |k: usize| node.inputs[k].0;
    let v = |j: usize| views.view(j);
    let (rows, cols) = (shapes[inp(0)][0], shapes[inp(0)][1]);
    Ok(Some(match &node.op {
        Op::LayerNorm { eps } | Op::LayerNormGrad { eps } => {
            let build = match node.op {
                Op::LayerNorm { .. } => kernels::layer_norm_forward,
                _ => kernels::layer_norm_backward,
            };
            // (x, gamma, beta) or (x, gamma, dy).
            let (a, b, c) = (v(inp(0))?, v(inp(1))?, v(inp(2))?);
            build(ctx, rows, cols, *eps, a, b, c, v(i)?)?.into()
        }
        Op::LayerNormGammaGrad { eps } => {
            kernels::layer_norm_gamma_grad(ctx, rows, cols, *eps, v(inp(0))?, v(inp(1))?, v(i)?)?
        }
        other => unreachable!("{} is not a normalization op", other.name()),
    }))
}
