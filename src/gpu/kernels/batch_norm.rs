//! Batch normalization (shaders/batch_norm.wgsl): the forward pass (training or evaluating,
//! by the step-mode block), the input gradient and the gamma gradient, one workgroup of 256
//! invocations per channel.

use bytemuck::{Pod, Zeroable};

use super::{check_loops, dim_u32, groups, need};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuContext, Launch, View};

const WG: usize = 256;

/// (batch, channels, positions): the shape every batch-normalization kernel takes (dense
/// features have one position, images h * w).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchNormShape {
    pub batch: usize,
    pub channels: usize,
    pub positions: usize,
}

impl BatchNormShape {
    fn len(&self) -> usize {
        self.batch * self.channels * self.positions
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Dims {
    batch: u32,
    channels: u32,
    positions: u32,
    eps_bits: u32,
    momentum_bits: u32,
    _pad: [u32; 3],
}

/// Checks the shape and hyper-parameters; `passes` is how often an invocation walks its
/// channel's values.
fn dims(
    op: &'static str,
    s: BatchNormShape,
    eps: f32,
    momentum: f32,
    passes: usize,
) -> Result<Dims> {
    if s.len() == 0 {
        return Err(Error::invalid(op, format!("empty input {s:?}")));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(
            op,
            format!("epsilon {eps} must be positive and finite"),
        ));
    }
    let per_channel = s.batch * s.positions;
    // Each pass is a strided loop, each sum an 8-step tree.
    let iterations = passes * per_channel.div_ceil(WG) + 16;
    check_loops(
        op,
        &format!(
            "a channel of {per_channel} values (batch {} x {} positions)",
            s.batch, s.positions
        ),
        iterations,
    )?;
    Ok(Dims {
        batch: dim_u32(op, "batch", s.batch)?,
        channels: dim_u32(op, "channels", s.channels)?,
        positions: dim_u32(op, "positions", s.positions)?,
        eps_bits: eps.to_bits(),
        momentum_bits: momentum.to_bits(),
        _pad: [0; 3],
    })
}

fn launch(
    ctx: &GpuContext,
    entry: &'static str,
    dims: Dims,
    bindings: Vec<Binding<'_>>,
) -> Result<Launch> {
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "batch_norm",
            entry,
            constants: vec![],
            params: dims,
            bindings,
            workgroups: groups(dims.channels as usize, 1)?,
        },
    )
}

/// The forward pass into `y`. `mode` holds a [`super::StepMode`]: when training it uses the
/// batch's statistics and moves `running` (mean, variance) by `momentum` in place; when
/// evaluating it uses `running`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward(
    ctx: &GpuContext,
    s: BatchNormShape,
    (eps, momentum): (f32, f32),
    mode: View<'_>,
    x: View<'_>,
    (gamma, beta): (View<'_>, View<'_>),
    (running_mean, running_var): (View<'_>, View<'_>),
    y: View<'_>,
) -> Result<Launch> {
    const OP: &str = "batch_norm_forward";
    if !(momentum.is_finite() && momentum > 0.0 && momentum <= 1.0) {
        return Err(Error::invalid(
            OP,
            format!("momentum {momentum} must be in (0, 1]"),
        ));
    }
    let d = dims(OP, s, eps, momentum, 3)?;
    need(OP, "mode", &mode, 4)?;
    need(OP, "x", &x, s.len())?;
    for (what, v) in [
        ("gamma", &gamma),
        ("beta", &beta),
        ("running mean", &running_mean),
        ("running variance", &running_var),
    ] {
        need(OP, what, v, s.channels)?;
    }
    need(OP, "y", &y, s.len())?;
    let bindings = vec![
        Binding::Read(x),
        Binding::Read(gamma),
        Binding::Read(beta),
        Binding::Read(mode),
        Binding::ReadWrite(running_mean),
        Binding::ReadWrite(running_var),
        Binding::ReadWrite(y),
    ];
    launch(ctx, "batch_norm_forward", d, bindings)
}

/// dx through the batch's statistics (training) from x, gamma and dy.
pub fn batch_norm_backward(
    ctx: &GpuContext,
    s: BatchNormShape,
    eps: f32,
    x: View<'_>,
    gamma: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    const OP: &str = "batch_norm_backward";
    let d = dims(OP, s, eps, 0.0, 4)?;
    need(OP, "x", &x, s.len())?;
    need(OP, "gamma", &gamma, s.channels)?;
    need(OP, "dy", &dy, s.len())?;
    need(OP, "dx", &dx, s.len())?;
    let bindings = vec![
        Binding::Read(x),
        Binding::Read(gamma),
        Binding::Read(dy),
        Binding::ReadWrite(dx),
    ];
    launch(ctx, "batch_norm_backward", d, bindings)
}

/// d gamma: per channel, the sum of dy * xhat with the batch's statistics.
pub fn batch_norm_gamma_grad(
    ctx: &GpuContext,
    s: BatchNormShape,
    eps: f32,
    x: View<'_>,
    dy: View<'_>,
    dgamma: View<'_>,
) -> Result<Launch> {
    const OP: &str = "batch_norm_gamma_grad";
    let d = dims(OP, s, eps, 0.0, 3)?;
    need(OP, "x", &x, s.len())?;
    need(OP, "dy", &dy, s.len())?;
    need(OP, "dgamma", &dgamma, s.channels)?;
    let bindings = vec![
        Binding::Read(x),
        Binding::Read(dy),
        Binding::ReadWrite(dgamma),
    ];
    launch(ctx, "batch_norm_gamma_grad", d, bindings)
}
