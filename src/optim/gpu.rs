//! The optimizers' in-place updates over the arenas (shaders/optim.wgsl).

use bytemuck::{Pod, Zeroable};

use super::{AdamConfig, SgdConfig};
use crate::error::{Error, Result};
use crate::gpu::kernels::{check_flat, dim_u32, groups, vec4_ok};
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel, Launch, LaunchDesc, View};

/// Uniform block of the `sgd` kernel.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct SgdParams {
    n: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad: [u32; 3],
}

impl SgdParams {
    /// The uniform block for `n` parameters.
    pub fn new(cfg: &SgdConfig, n: usize) -> Result<Self> {
        cfg.validate()?;
        Ok(SgdParams {
            n: dim_u32("sgd", "parameters", n)?,
            nesterov: cfg.nesterov as u32,
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            _pad: [0; 3],
        })
    }
}

/// Uniform block of the `adam` kernel; rewrite it each step (`Launch::set_params`) for the new
/// step's bias corrections and learning rate.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AdamParams {
    n: u32,
    decoupled: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    _pad: [u32; 3],
}

impl AdamParams {
    /// The uniform block for `n` parameters at step `t` (1-based).
    pub fn new(cfg: &AdamConfig, n: usize, t: u64) -> Result<Self> {
        cfg.validate()?;
        let (bc1, bc2) = cfg.bias_corrections(t.max(1));
        Ok(AdamParams {
            n: dim_u32("adam", "parameters", n)?,
            decoupled: cfg.decoupled as u32,
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            bc1,
            bc2,
            _pad: [0; 3],
        })
    }
}

/// An in-place SGD update of `n` parameters. `velocity` (n elements) is needed with momentum
/// and must be `None` without: plain SGD keeps no state, and the kernel then binds a
/// one-element placeholder it never reads.
pub fn sgd(
    ctx: &GpuContext,
    cfg: &SgdConfig,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    velocity: Option<View<'_>>,
) -> Result<Kernel> {
    check_flat("sgd", n, &[("param", &param), ("grad", &grad)])?;
    let placeholder = match velocity {
        Some(v) => {
            check_flat("sgd", n, &[("velocity", &v)])?;
            None
        }
        None if cfg.momentum != 0.0 => {
            return Err(Error::invalid(
                "sgd",
                "momentum needs a velocity buffer of the parameters' size",
            ))
        }
        None => Some(GpuBuffer::zeros(ctx, "sgd velocity (unused)", 4)?),
    };
    let velocity = match (&placeholder, velocity) {
        (Some(p), _) => p.full(),
        (None, Some(v)) => v,
        (None, None) => unreachable!("a placeholder is made when no velocity is given"),
    };
    let wide = vec4_ok(n, &[&param, &grad, &velocity]);
    let launch = Launch::new(
        ctx,
        LaunchDesc {
            shader: "optim",
            entry: if wide { "sgd4" } else { "sgd" },
            constants: vec![],
            params: SgdParams::new(cfg, n)?,
            bindings: vec![
                Binding::ReadWrite(param),
                Binding::Read(grad),
                Binding::ReadWrite(velocity),
            ],
            // sgd4: 4 vec4s per invocation.
            workgroups: groups(if wide { n.div_ceil(16) } else { n }, 256)?,
        },
    )?;
    Ok(Kernel::new(
        vec![launch],
        placeholder.into_iter().collect(),
        vec![],
    ))
}

/// An in-place Adam/AdamW update of `n` parameters at step `t`.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    ctx: &GpuContext,
    cfg: &AdamConfig,
    t: u64,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    m: View<'_>,
    v: View<'_>,
) -> Result<Launch> {
    check_flat(
        "adam",
        n,
        &[("param", &param), ("grad", &grad), ("m", &m), ("v", &v)],
    )?;
    let wide = vec4_ok(n, &[&param, &grad, &m, &v]);
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "optim",
            entry: if wide { "adam4" } else { "adam" },
            constants: vec![],
            params: AdamParams::new(cfg, n, t)?,
            bindings: vec![
                Binding::ReadWrite(param),
                Binding::Read(grad),
                Binding::ReadWrite(m),
                Binding::ReadWrite(v),
            ],
            // adam4: 4 vec4s per invocation.
            workgroups: groups(if wide { n.div_ceil(16) } else { n }, 256)?,
        },
    )
}
