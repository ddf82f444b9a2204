//! The normalization family: layer normalization and batch normalization, each with its two
//! gradients (the third, d beta, is a column or channel sum of dy). Batch normalization in
//! training also moves its running statistics: on the GPU its forward launch writes them in
//! place; on the CPU `CpuArgs::update` hands them to the executor.

use ndarray::{Axis, Ix1};

use super::{dims2, CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::graph::{ConvOp, DenseOp, Dim, Graph, Op, Shape};

/// Layer and batch normalization.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum NormOp {
    /// Layer normalization of (rows, features) over the features, from (x, gamma, beta):
    /// `(x - mean) / sqrt(var + eps) * gamma + beta` per row (population variance).
    LayerNorm { eps: f32 },
    /// dx of layer normalization from (x, gamma, dy).
    LayerNormGrad { eps: f32 },
    /// d gamma of layer normalization from (x, dy): the column sums of dy * xhat.
    LayerNormGammaGrad { eps: f32 },
    /// Batch normalization of (batch, channels) or (batch, channels, h, w) over all but the
    /// channel axis, from (x, gamma, beta, running_mean, running_var): training uses the
    /// batch's statistics and moves the running ones (buffers) by `momentum`; evaluation
    /// uses the running ones (`crate::cpu::batch_norm_forward` states the convention).
    BatchNorm { eps: f32, momentum: f32 },
    /// dx of batch normalization (training) from (x, gamma, dy).
    BatchNormGrad { eps: f32 },
    /// d gamma of batch normalization from (x, dy): per channel, the sum of dy * xhat.
    BatchNormGammaGrad { eps: f32 },
}

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(op: &NormOp, a: &ShapeArgs<'_>) -> Result<Shape> {
    let s = a.s;
    let features = |a: &ShapeArgs<'_>| -> Result<Dim> {
        let (_, cols) = a
            .matrix(0)
            .map_err(|_| a.mismatch("layer normalization takes (rows, features); flatten first"))?;
        Ok(cols)
    };
    Ok(match op {
        NormOp::LayerNorm { .. } => {
            a.want(3)?;
            let cols = features(a)?;
            for (k, what) in [(1, "gamma"), (2, "beta")] {
                if s[k].as_slice() != [cols] {
                    return Err(a.mismatch(&format!("{what} must have shape ({cols})")));
                }
            }
            s[0].clone()
        }
        NormOp::LayerNormGrad { .. } => {
            a.want(3)?;
            let cols = features(a)?;
            if s[1].as_slice() != [cols] || s[2] != s[0] {
                return Err(a.mismatch("needs x, gamma (features) and dy shaped as x"));
            }
            s[0].clone()
        }
        NormOp::LayerNormGammaGrad { .. } => {
            a.want(2)?;
            let cols = features(a)?;
            if s[1] != s[0] {
                return Err(a.mismatch("dy must be shaped as x"));
            }
            vec![cols]
        }
        NormOp::BatchNorm { .. } => {
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
        NormOp::BatchNormGrad { .. } => {
            a.want(3)?;
            let c = channels(a)?;
            if s[1].as_slice() != [Dim::Fixed(c)] || s[2] != s[0] {
                return Err(a.mismatch("needs x, gamma (channels) and dy shaped as x"));
            }
            s[0].clone()
        }
        NormOp::BatchNormGammaGrad { .. } => {
            a.want(2)?;
            let c = channels(a)?;
            if s[1] != s[0] {
                return Err(a.mismatch("dy must be shaped as x"));
            }
            vec![Dim::Fixed(c)]
        }
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
pub(super) fn backward(op: &NormOp, g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match op {
        NormOp::LayerNorm { eps } => {
            let eps = *eps;
            let dy = cx.dy()?;
            let (x, gamma) = (cx.node.inputs[0], cx.node.inputs[1]);
            if cx.needs(0) {
                let dx = g.add_op(Op::Norm(NormOp::LayerNormGrad { eps }), &[x, gamma, dy])?;
                cx.give(0, dx);
            }
            if cx.needs(1) {
                let dg = g.add_op(Op::Norm(NormOp::LayerNormGammaGrad { eps }), &[x, dy])?;
                cx.give(1, dg);
            }
            if cx.needs(2) {
                let db = g.add_op(Op::Dense(DenseOp::ColumnSum), &[dy])?;
                cx.give(2, db);
            }
        }
        NormOp::BatchNorm { eps, .. } => {
            let eps = *eps;
            let dy = cx.dy()?;
            let (x, gamma) = (cx.node.inputs[0], cx.node.inputs[1]);
            if cx.needs(0) {
                let dx = g.add_op(Op::Norm(NormOp::BatchNormGrad { eps }), &[x, gamma, dy])?;
                cx.give(0, dx);
            }
            if cx.needs(1) {
                let dg = g.add_op(Op::Norm(NormOp::BatchNormGammaGrad { eps }), &[x, dy])?;
                cx.give(1, dg);
            }
            if cx.needs(2) {
                // d beta: dy summed over everything but the channel axis.
                let sum = match g.node(dy).shape.len() {
                    2 => Op::Dense(DenseOp::ColumnSum),
                    _ => Op::Conv(ConvOp::ChannelSum),
                };
                let db = g.add_op(sum, &[dy])?;
                cx.give(2, db);
            }
            // The running statistics are buffers: no gradient reaches them.
        }
        NormOp::LayerNormGrad { .. }
        | NormOp::LayerNormGammaGrad { .. }
        | NormOp::BatchNormGrad { .. }
        | NormOp::BatchNormGammaGrad { .. } => return Err(cx.second_order()),
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
pub(super) fn eval_cpu<T: Scalar>(op: &NormOp, cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match op {
        NormOp::LayerNorm { eps } => {
            let x = dims2(cx.get(0)?, "layer_norm")?;
            let y = cpu::layer_norm_forward(x, vector(cx, 1)?, vector(cx, 2)?, T::of(*eps as f64))?;
            Value::Float(y.into_dyn())
        }
        NormOp::LayerNormGrad { eps } => {
            let x = dims2(cx.get(0)?, "layer_norm_grad")?;
            let dy = dims2(cx.get(2)?, "layer_norm_grad")?;
            let dx = cpu::layer_norm_backward(x, vector(cx, 1)?, dy, T::of(*eps as f64))?;
            Value::Float(dx.into_dyn())
        }
        NormOp::LayerNormGammaGrad { eps } => {
            let x = dims2(cx.get(0)?, "layer_norm_gamma_grad")?;
            let dy = dims2(cx.get(1)?, "layer_norm_gamma_grad")?;
            Value::Float(cpu::layer_norm_gamma_grad(x, dy, T::of(*eps as f64))?.into_dyn())
        }
        NormOp::BatchNorm { eps, momentum } => {
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
        NormOp::BatchNormGrad { eps } => {
            let (x, dy) = (channels3(cx.get(0)?)?, channels3(cx.get(2)?)?);
            let dx =
                cpu::batch_norm_backward(x.view(), vector(cx, 1)?, dy.view(), T::of(*eps as f64))?;
            Value::Float(
                dx.into_shape_with_order(cx.shape.to_vec())
                    .expect("same size")
                    .into_dyn(),
            )
        }
        NormOp::BatchNormGammaGrad { eps } => {
            let (x, dy) = (channels3(cx.get(0)?)?, channels3(cx.get(1)?)?);
            Value::Float(
                cpu::batch_norm_gamma_grad(x.view(), dy.view(), T::of(*eps as f64))?.into_dyn(),
            )
        }
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
