//! Elementwise kernels (shaders/elementwise.wgsl): activations and their gradients, bias
//! addition, sums, and dropout.

use bytemuck::{Pod, Zeroable};

use super::{check_flat, dim_u32, dims4, groups, need};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuContext, Launch, View};
use crate::ops::Activation;

fn activation_code(act: Activation) -> f64 {
    match act {
        Activation::Relu => 0.0,
        Activation::Sigmoid => 1.0,
        Activation::Tanh => 2.0,
        Activation::Identity => 3.0,
        Activation::Gelu => 4.0,
        Activation::Silu => 5.0,
        Activation::LeakyRelu => 6.0,
        Activation::Elu => 7.0,
        Activation::Softplus => 8.0,
    }
}

/// One launch of `elementwise::entry` with an invocation per element of `n` (workgroups of
/// 256): the shape every kernel of this family shares. Callers check their views first.
fn per_element<P: Pod>(
    ctx: &GpuContext,
    entry: &'static str,
    constants: Vec<(&'static str, f64)>,
    n: usize,
    params: P,
    bindings: Vec<Binding<'_>>,
) -> Result<Launch> {
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry,
            constants,
            params,
            bindings,
            workgroups: groups(n, 256)?,
        },
    )
}

/// `y = f(x)` over `n` elements.
pub fn activation_forward(
    ctx: &GpuContext,
    act: Activation,
    n: usize,
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    check_flat("activation_forward", n, &[("x", &x), ("y", &y)])?;
    per_element(
        ctx,
        "activation_forward",
        vec![("OP", activation_code(act))],
        n,
        dims4(n, 1, 0)?,
        vec![Binding::Read(x), Binding::ReadWrite(y)],
    )
}

/// `dx = f'(x) * dy` over `n` elements from `saved`: the forward output `y`, or the input
/// `x` where [`Activation::backward_reads_input`].
pub fn activation_backward(
    ctx: &GpuContext,
    act: Activation,
    n: usize,
    saved: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    let views = [("saved", &saved), ("dy", &dy), ("dx", &dx)];
    check_flat("activation_backward", n, &views)?;
    per_element(
        ctx,
        "activation_backward",
        vec![("OP", activation_code(act))],
        n,
        dims4(n, 1, 0)?,
        vec![
            Binding::Read(saved),
            Binding::Read(dy),
            Binding::ReadWrite(dx),
        ],
    )
}

/// `y += bias` in place, `y` row-major (rows, cols), `bias` (cols).
pub fn bias_add(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    bias: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if cols == 0 {
        return Err(Error::invalid("bias_add", "zero columns"));
    }
    need("bias_add", "bias", &bias, cols)?;
    need("bias_add", "y", &y, rows * cols)?;
    let n = rows * cols;
    per_element(
        ctx,
        "bias_add",
        vec![],
        n,
        dims4(n, cols, 0)?,
        vec![Binding::Read(bias), Binding::ReadWrite(y)],
    )
}

/// `y = x + bias` out of place, `x` and `y` row-major (rows, cols), `bias` (cols).
pub fn bias_add_out(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    x: View<'_>,
    bias: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if cols == 0 {
        return Err(Error::invalid("bias_add", "zero columns"));
    }
    need("bias_add", "bias", &bias, cols)?;
    let n = rows * cols;
    check_flat("bias_add", n, &[("x", &x), ("y", &y)])?;
    per_element(
        ctx,
        "bias_add_out",
        vec![],
        n,
        dims4(n, cols, 0)?,
        vec![Binding::Read(x), Binding::Read(bias), Binding::ReadWrite(y)],
    )
}

/// `y = a + b` over `n` elements.
pub fn add(ctx: &GpuContext, n: usize, a: View<'_>, b: View<'_>, y: View<'_>) -> Result<Launch> {
    binary(ctx, "add", n, a, b, y)
}

/// `y = a * b` over `n` elements.
pub fn mul(ctx: &GpuContext, n: usize, a: View<'_>, b: View<'_>, y: View<'_>) -> Result<Launch> {
    binary(ctx, "mul", n, a, b, y)
}

/// `y = a op b` over `n` elements, `op` the entry `add` or `mul`.
fn binary(
    ctx: &GpuContext,
    entry: &'static str,
    n: usize,
    a: View<'_>,
    b: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    check_flat(entry, n, &[("a", &a), ("b", &b), ("y", &y)])?;
    per_element(
        ctx,
        entry,
        vec![],
        n,
        dims4(n, 1, 0)?,
        vec![Binding::Read(a), Binding::Read(b), Binding::ReadWrite(y)],
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct DropoutParams {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// The optimizer step and the train/eval flag, one block per executor, written before each
/// submission that needs it: any kernel can bind it (dropout does).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub struct StepMode {
    step_lo: u32,
    step_hi: u32,
    training: u32,
    _pad: u32,
}

impl StepMode {
    /// Training at optimizer step `step` (masks differ per step), or evaluating (identity).
    pub fn new(step: u64, training: bool) -> Self {
        StepMode {
            step_lo: step as u32,
            step_hi: (step >> 32) as u32,
            training: training as u32,
            _pad: 0,
        }
    }
}

/// Inverted dropout of `x[..n]` into `y` (the mask of `ops::dropout_keeps`); `state` holds a
/// [`StepMode`]. With `x` = dy it is the backward pass.
pub fn dropout(
    ctx: &GpuContext,
    n: usize,
    rate: f32,
    seed: u64,
    state: View<'_>,
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::invalid(
            "dropout",
            format!("the rate must be in [0, 1), got {rate}"),
        ));
    }
    need("dropout", "state", &state, 4)?;
    check_flat("dropout", n, &[("x", &x), ("y", &y)])?;
    let params = DropoutParams {
        n: dim_u32("dropout", "n", n)?,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        threshold: crate::ops::dropout_threshold(rate),
        scale: crate::ops::dropout_scale(rate),
        _pad: [0; 3],
    };
    per_element(
        ctx,
        "dropout",
        vec![],
        n,
        params,
        vec![
            Binding::Read(state),
            Binding::Read(x),
            Binding::ReadWrite(y),
        ],
    )
}
