//! The normalization family: layer normalization and batch normalization, each with its two
//! gradients (the third, d beta, is a column or channel sum of dy). Batch normalization in
//! training also moves its running statistics: on the GPU its forward launch writes them in
//! place; on the CPU `CpuArgs::update` hands them to the executor.

use ndarray::{Axis, Ix1};

use super::{dims2, CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Op, Shape};

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
        Op::BatchNorm { .. } => {
            a.want(5)?;
            let c = channels(a)?;
            for (k, what) in [
                (1, "gamma"),
                (2, "beta"),
                (3, "running mean"),
                (4, "running variance"),
            ] {
                if s[k].as_slice() != [Dim::Fixed(c)] {
                    return Err(a.mismatch(&format!(
                        "the {what} must have shape ({c}), one per channel"
                    )));
                }
            }
            s[0].clone()
        }
        Op::BatchNormGrad { .. } => {
            a.want(3)?;
            let c = channels(a)?;
            if s[1].as_slice() != [Dim::Fixed(c)] || s[2] != s[0] {
                return Err(a.mismatch("needs x, gamma (channels) and dy shaped as x"));
            }
            s[0].clone()
        }
        Op::BatchNormGammaGrad { .. } => {
            a.want(2)?;
            let c = channels(a)?;
            if s[1] != s[0] {
                return Err(a.mismatch("dy must be shaped as x"));
            }
            vec![Dim::Fixed(c)]
        }
        other => unreachable!("{} is not a normalization op", other.name()),
    })
}

/// The channels of a batch normalization input: (batch, channels) or (batch, channels, h, w).
fn channels(a: &ShapeArgs<'_>) -> Result<usize> {
    match a.s[0].as_slice() {
        [Dim::Batch, Dim::Fixed(c)] | [Dim::Batch, Dim::Fixed(c), Dim::Fixed(_), Dim::Fixed(_)] => {
            Ok(*c)
        }
        _ => Err(a.mismatch(
            "batch normalization takes (batch, features) or (batch, channels, height, width)",
        )),
    }
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
        Op::BatchNorm { eps, .. } => {
            let eps = *eps;
            let dy = cx.dy()?;
            let (x, gamma) = (cx.node.inputs[0], cx.node.inputs[1]);
            if cx.needs(0) {
                let dx = g.add_op(Op::BatchNormGrad { eps }, &[x, gamma, dy])?;
                cx.give(0, dx);
            }
            if cx.needs(1) {
                let dg = g.add_op(Op::BatchNormGammaGrad { eps }, &[x, dy])?;
                cx.give(1, dg);
            }
            if cx.needs(2) {
                // d beta: dy summed over everything but the channel axis.
                let sum = match g.node(dy).shape.len() {
                    2 => Op::ColumnSum,
                    _ => Op::ChannelSum,
                };
                let db = g.add_op(sum, &[dy])?;
                cx.give(2, db);
            }
            // The running statistics are buffers: no gradient reaches them.
        }
        Op::LayerNormGrad { .. }
        | Op::LayerNormGammaGrad { .. }
        | Op::BatchNormGrad { .. }
        | Op::BatchNormGammaGrad { .. } => return Err(cx.second_order()),
        other => unreachable!("{} is not a normalization op", other.name()),
    }
    Ok(())
}

fn vector<'a, T: Scalar>(cx: &'a CpuArgs<'_, T>, k: usize) -> Result<ndarray::ArrayView1<'a, T>> {
    cx.get(k)?
        .view()
        .into_dimensionality::<Ix1>()
        .map_err(|_| Error::shape("normalization", "per-feature values must be vectors"))
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
        Op::BatchNorm { eps, momentum } => {
            let x = channels3(cx.get(0)?)?;
            let (eps, momentum) = (T::of(*eps as f64), T::of(*momentum as f64));
            let (gamma, beta) = (vector(cx, 1)?, vector(cx, 2)?);
            let (running_mean, running_var) = (vector(cx, 3)?, vector(cx, 4)?);
            let y = if cx.training_step.is_some() {
                let (mean, var) = cpu::batch_norm_stats(x.view());
                let n = x.len_of(Axis(0)) * x.len_of(Axis(2));
                let (m, v) = cpu::batch_norm_running_update(
                    (running_mean, running_var),
                    (mean.view(), var.view()),
                    n,
                    momentum,
                );
                cx.update(3, m.into_dyn());
                cx.update(4, v.into_dyn());
                cpu::batch_norm_forward(x.view(), gamma, beta, mean.view(), var.view(), eps)?
            } else {
                cpu::batch_norm_forward(x.view(), gamma, beta, running_mean, running_var, eps)?
            };
            Value::Float(
                y.into_shape_with_order(cx.shape.to_vec())
                    .expect("same size")
                    .into_dyn(),
            )
        }
        Op::BatchNormGrad { eps } => {
            let (x, dy) = (channels3(cx.get(0)?)?, channels3(cx.get(2)?)?);
            let dx =
                cpu::batch_norm_backward(x.view(), vector(cx, 1)?, dy.view(), T::of(*eps as f64))?;
            Value::Float(
                dx.into_shape_with_order(cx.shape.to_vec())
                    .expect("same size")
                    .into_dyn(),
            )
        }
        Op::BatchNormGammaGrad { eps } => {
            let (x, dy) = (channels3(cx.get(0)?)?, channels3(cx.get(1)?)?);
            Value::Float(
                cpu::batch_norm_gamma_grad(x.view(), dy.view(), T::of(*eps as f64))?.into_dyn(),
            )
        }
        other => unreachable!("{} is not a normalization op", other.name()),
    })
}

/// A (batch, channels[, h, w]) array as (batch, channels, positions).
fn channels3<T: Scalar>(a: &ndarray::ArrayD<T>) -> Result<ndarray::Array3<T>> {
    let s = a.shape();
    if s.len() != 2 && s.len() != 4 {
        return Err(Error::shape(
            "batch_norm",
            format!("needs (batch, channels) or (batch, channels, h, w), got {s:?}"),
        ));
    }
    let positions = s[2..].iter().product();
    Ok(a.to_shape((s[0], s[1], positions))
        .expect("a contiguous reshape")
        .into_owned())
}
