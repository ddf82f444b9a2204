//! SGD with momentum, Nesterov momentum and L2 weight decay (PyTorch's semantics, no
//! dampening): its configuration, its step on the CPU reference and its GPU update
//! (`sgd`/`sgd4` in shaders/optim.wgsl). One state slot, `momentum`, kept only with momentum.

use bytemuck::{Pod, Zeroable};
use ndarray::{ArrayView1, ArrayViewMut1, Zip};

use super::{check_cpu, check_gpu, flat_update};
use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::gpu::kernels::dim_u32;
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel, View};

/// Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay
/// (PyTorch's semantics, no dampening).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Checks that every value is finite and in range.
    pub fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr >= 0.0
            && (0.0..1.0).contains(&self.momentum)
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0
            && !(self.nesterov && self.momentum == 0.0);
        if !ok {
            return Err(Error::invalid("sgd", format!("{self:?}: need finite lr >= 0, momentum in [0, 1), weight_decay >= 0, and momentum > 0 for nesterov")));
        }
        Ok(())
    }

    /// The state slots: the velocity with momentum, nothing without.
    pub(super) fn slots(&self) -> &'static [&'static str] {
        if self.momentum == 0.0 {
            &[]
        } else {
            &["momentum"]
        }
    }
}

/// One SGD step in place; `state` is `[velocity]` with momentum, empty without.
pub fn sgd_step<T: Scalar>(
    cfg: &SgdConfig,
    mut param: ArrayViewMut1<'_, T>,
    grad: ArrayView1<'_, T>,
    state: &mut [ArrayViewMut1<'_, T>],
) -> Result<()> {
    check_cpu("sgd_step", cfg.slots(), &param, &grad, state)?;
    let (lr, mom, wd) = (
        T::of(cfg.lr as f64),
        T::of(cfg.momentum as f64),
        T::of(cfg.weight_decay as f64),
    );
    match state {
        [] => Zip::from(&mut param).and(&grad).for_each(|p, &g| {
            *p = *p - lr * (g + wd * *p);
        }),
        [velocity, ..] => Zip::from(&mut param)
            .and(&grad)
            .and(velocity)
            .for_each(|p, &g, v| {
                let g = g + wd * *p;
                *v = mom * *v + g;
                let step = if cfg.nesterov { g + mom * *v } else { *v };
                *p = *p - lr * step;
            }),
    }
    Ok(())
}

/// Parameter block of the `sgd` kernels.
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
    /// The parameter block for `n` parameters.
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

/// An in-place SGD update of `n` parameters (one launch); `state` is `[velocity]` with
/// momentum, empty without (the kernel then binds a one-element placeholder it never reads).
pub fn sgd(
    ctx: &GpuContext,
    cfg: &SgdConfig,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    state: &[View<'_>],
) -> Result<Kernel> {
    check_gpu("sgd", cfg.slots(), n, &param, &grad, state)?;
    let placeholder = match state {
        [] => Some(GpuBuffer::zeros(ctx, "sgd velocity (unused)", 4)?),
        _ => None,
    };
    let velocity = match (&placeholder, state) {
        (Some(p), _) => p.full(),
        (None, [v, ..]) => *v,
        (None, []) => unreachable!("a placeholder is made when no velocity is given"),
    };
    let launch = flat_update(
        ctx,
        ["sgd", "sgd4"],
        n,
        SgdParams::new(cfg, n)?,
        vec![
            Binding::ReadWrite(param),
            Binding::Read(grad),
            Binding::ReadWrite(velocity),
        ],
    )?;
    Ok(Kernel::new(
        vec![launch],
        placeholder.into_iter().collect(),
        vec![],
    ))
}
