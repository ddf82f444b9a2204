//! Convolutions and pooling over (batch, channels, height, width), and their gradients.

use super::{dims1, dims4, CpuArgs, GradArgs, ShapeArgs, Value};
use crate::cpu::{self, Scalar};
use crate::error::Result;
use crate::graph::{Dim, Graph, Op, Shape};
use crate::ops::Window;

/// Convolutions and pooling over (batch, channels, height, width).
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ConvOp {
    /// 2-D convolution of (x (batch, c, h, w), weight (out, c, kh, kw), bias (out)).
    Conv2d(Window),
    /// dx of a convolution from (dy, weight), for an input of (h, w).
    Conv2dGradInput { win: Window, h: usize, w: usize },
    /// d weight of a convolution from (x, dy).
    Conv2dGradWeight(Window),
    /// Per-channel sum over batch and positions of (batch, c, h, w): the conv bias gradient.
    ChannelSum,
    /// Max pooling of (batch, c, h, w) (no padding).
    MaxPool2d(Window),
    /// dx of max pooling from (x, dy).
    MaxPool2dGrad(Window),
    /// Average pooling of (batch, c, h, w) (no padding).
    AvgPool2d(Window),
    /// dx of average pooling from (dy), for an input of (h, w).
    AvgPool2dGrad { win: Window, h: usize, w: usize },
}

/// The output shape of one of this family's ops (see [`super::infer`]).
pub(super) fn infer(op: &ConvOp, a: &ShapeArgs<'_>) -> Result<Shape> {
    let s = a.s;
    Ok(match op {
        ConvOp::Conv2d(win) => {
            a.want(3)?;
            let (c, h, w) = a.image(0)?;
            let [Dim::Fixed(oc), Dim::Fixed(c2), Dim::Fixed(kh), Dim::Fixed(kw)] = s[1].as_slice()
            else {
                return Err(a.mismatch("the weight must be (out, in, kh, kw)"));
            };
            if *c2 != c || (*kh, *kw) != (win.kh, win.kw) {
                return Err(a.mismatch(&format!(
                    "the weight must be ({oc}, {c}, {}, {})",
                    win.kh, win.kw
                )));
            }
            if s[2].as_slice() != [Dim::Fixed(*oc)] {
                return Err(a.mismatch(&format!("the bias must be ({oc})")));
            }
            let (oh, ow) = a.fit(win, h, w)?;
            vec![Dim::Batch, Dim::Fixed(*oc), Dim::Fixed(oh), Dim::Fixed(ow)]
        }
        ConvOp::Conv2dGradInput { win, h, w } => {
            a.want(2)?;
            let (oc, oh, ow) = a.image(0)?;
            let [Dim::Fixed(oc2), Dim::Fixed(c), ..] = s[1].as_slice() else {
                return Err(a.mismatch("the weight must be (out, in, kh, kw)"));
            };
            if *oc2 != oc || a.fit(win, *h, *w)? != (oh, ow) {
                return Err(a.mismatch("dy does not match the weight and input size"));
            }
            vec![Dim::Batch, Dim::Fixed(*c), Dim::Fixed(*h), Dim::Fixed(*w)]
        }
        ConvOp::Conv2dGradWeight(win) => {
            a.want(2)?;
            let (c, h, w) = a.image(0)?;
            let (oc, oh, ow) = a.image(1)?;
            if a.fit(win, h, w)? != (oh, ow) {
                return Err(a.mismatch("dy does not match the input size"));
            }
            [oc, c, win.kh, win.kw].map(Dim::Fixed).to_vec()
        }
        ConvOp::ChannelSum => {
            a.want(1)?;
            let (c, _, _) = a.image(0)?;
            vec![Dim::Fixed(c)]
        }
        ConvOp::MaxPool2d(win) | ConvOp::AvgPool2d(win) => {
            a.want(1)?;
            let (c, h, w) = a.image(0)?;
            let (oh, ow) = a.fit(win, h, w)?;
            vec![Dim::Batch, Dim::Fixed(c), Dim::Fixed(oh), Dim::Fixed(ow)]
        }
        ConvOp::MaxPool2dGrad(win) => {
            a.want(2)?;
            let (c, h, w) = a.image(0)?;
            let (c2, oh, ow) = a.image(1)?;
            if c2 != c || a.fit(win, h, w)? != (oh, ow) {
                return Err(a.mismatch("dy does not match the pooled input"));
            }
            s[0].clone()
        }
        ConvOp::AvgPool2dGrad { win, h, w } => {
            a.want(1)?;
            let (c, oh, ow) = a.image(0)?;
            if a.fit(win, *h, *w)? != (oh, ow) {
                return Err(a.mismatch("dy does not match the input size"));
            }
            vec![Dim::Batch, Dim::Fixed(c), Dim::Fixed(*h), Dim::Fixed(*w)]
        }
    })
}

/// Appends the nodes computing this family's op's input gradients (see
/// [`super::backward`]).
pub(super) fn backward(op: &ConvOp, g: &mut Graph, cx: &mut GradArgs<'_>) -> Result<()> {
    match op {
        ConvOp::Conv2d(win) => {
            let (dy, x, w) = (cx.dy()?, cx.node.inputs[0], cx.node.inputs[1]);
            if cx.needs(0) {
                let (h, wd) = match g.node(x).shape.as_slice() {
                    [_, _, Dim::Fixed(h), Dim::Fixed(w)] => (*h, *w),
                    _ => unreachable!("conv2d inputs were checked"),
                };
                let win = *win;
                let dx = g.add_op(
                    Op::Conv(ConvOp::Conv2dGradInput { win, h, w: wd }),
                    &[dy, w],
                )?;
                cx.give(0, dx);
            }
            if cx.needs(1) {
                let dw = g.add_op(Op::Conv(ConvOp::Conv2dGradWeight(*win)), &[x, dy])?;
                cx.give(1, dw);
            }
            if cx.needs(2) {
                let db = g.add_op(Op::Conv(ConvOp::ChannelSum), &[dy])?;
                cx.give(2, db);
            }
        }
        ConvOp::MaxPool2d(win) => {
            let dx = g.add_op(
                Op::Conv(ConvOp::MaxPool2dGrad(*win)),
                &[cx.node.inputs[0], cx.dy()?],
            )?;
            cx.give(0, dx);
        }
        ConvOp::AvgPool2d(win) => {
            let (h, w) = match g.node(cx.node.inputs[0]).shape.as_slice() {
                [_, _, Dim::Fixed(h), Dim::Fixed(w)] => (*h, *w),
                _ => unreachable!("pooling inputs were checked"),
            };
            let win = *win;
            let dx = g.add_op(Op::Conv(ConvOp::AvgPool2dGrad { win, h, w }), &[cx.dy()?])?;
            cx.give(0, dx);
        }
        ConvOp::Conv2dGradInput { .. }
        | ConvOp::Conv2dGradWeight(_)
        | ConvOp::ChannelSum
        | ConvOp::MaxPool2dGrad(_)
        | ConvOp::AvgPool2dGrad { .. } => return Err(cx.second_order()),
    }
    Ok(())
}

/// This family's op on the CPU reference (see [`super::eval_cpu`]).
pub(super) fn eval_cpu<T: Scalar>(op: &ConvOp, cx: &CpuArgs<'_, T>) -> Result<Value<T>> {
    Ok(match op {
        ConvOp::Conv2d(win) => Value::Float(
            cpu::conv2d(
                dims4(cx.get(0)?)?,
                dims4(cx.get(1)?)?,
                dims1(cx.get(2)?)?,
                *win,
            )
            .into_dyn(),
        ),
        ConvOp::Conv2dGradInput { win, h, w } => Value::Float(
            cpu::conv2d_grad_input(dims4(cx.get(0)?)?, dims4(cx.get(1)?)?, *win, (*h, *w))
                .into_dyn(),
        ),
        ConvOp::Conv2dGradWeight(win) => Value::Float(
            cpu::conv2d_grad_weight(dims4(cx.get(0)?)?, dims4(cx.get(1)?)?, *win).into_dyn(),
        ),
        ConvOp::ChannelSum => Value::Float(cpu::channel_sum(dims4(cx.get(0)?)?).into_dyn()),
        ConvOp::MaxPool2d(win) => {
            Value::Float(cpu::max_pool2d(dims4(cx.get(0)?)?, *win).into_dyn())
        }
        ConvOp::MaxPool2dGrad(win) => Value::Float(
            cpu::max_pool2d_grad(dims4(cx.get(0)?)?, dims4(cx.get(1)?)?, *win).into_dyn(),
        ),
        ConvOp::AvgPool2d(win) => {
            Value::Float(cpu::avg_pool2d(dims4(cx.get(0)?)?, *win).into_dyn())
        }
        ConvOp::AvgPool2dGrad { win, h, w } => {
            Value::Float(cpu::avg_pool2d_grad(dims4(cx.get(0)?)?, *win, (*h, *w)).into_dyn())
        }
    })
}
