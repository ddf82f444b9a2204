//! Adam, AdamW and their AMSGrad form (PyTorch's `Adam(amsgrad=True)`): the configuration,
//! the step on the CPU reference and the GPU update (`adam`/`adam4`, `amsgrad`/`amsgrad4` in
//! shaders/optim.wgsl). State slots: `m` and `v`, and `v_max` with AMSGrad. The bias
//! corrections change every step, so the parameter block is rewritten before each one.

use bytemuck::{Pod, Zeroable};
use ndarray::{ArrayView1, ArrayViewMut1, Zip};

use super::{check_cpu, check_gpu, flat_update};
use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::gpu::kernels::dim_u32;
use crate::gpu::{Binding, GpuContext, Launch, View};

/// Adam, or AdamW with `decoupled` weight decay; with `amsgrad`, the denominator uses the
/// running maximum of the second moment (Reddi et al. 2018, as PyTorch and Keras do).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW: decay the weights directly instead of adding `weight_decay * p` to the gradient.
    pub decoupled: bool,
    /// AMSGrad: divide by `sqrt(max over steps of v)` instead of `sqrt(v)`.
    pub amsgrad: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
    pub fn adam(lr: f32) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            amsgrad: false,
        }
    }

    /// AdamW with decoupled weight decay.
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        AdamConfig {
            weight_decay,
            decoupled: true,
            ..Self::adam(lr)
        }
    }

    /// The same optimizer in its AMSGrad form (`Adam(amsgrad=True)`).
    pub fn with_amsgrad(self) -> Self {
        AdamConfig {
            amsgrad: true,
            ..self
        }
    }

    /// `(1 - beta1^t, 1 - beta2^t)`, computed in f64 and rounded once.
    pub fn bias_corrections(&self, t: u64) -> (f32, f32) {
        let t = t.min(i32::MAX as u64) as i32;
        (
            (1.0 - (self.beta1 as f64).powi(t)) as f32,
            (1.0 - (self.beta2 as f64).powi(t)) as f32,
        )
    }

    /// Checks that every value is finite and in range.
    pub fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr >= 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0;
        if !ok {
            return Err(Error::invalid(
                "adam",
                format!(
                    "{self:?}: need finite lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0"
                ),
            ));
        }
        Ok(())
    }

    /// The state slots: both moments, and the second moment's running maximum for AMSGrad.
    pub(super) fn slots(&self) -> &'static [&'static str] {
        if self.amsgrad {
            &["m", "v", "v_max"]
        } else {
            &["m", "v"]
        }
    }
}

/// One Adam/AdamW step in place for step number `t` (1-based); `state` is `[m, v]`, or
/// `[m, v, v_max]` with AMSGrad.
pub fn adam_step<T: Scalar>(
    cfg: &AdamConfig,
    t: u64,
    mut param: ArrayViewMut1<'_, T>,
    grad: ArrayView1<'_, T>,
    state: &mut [ArrayViewMut1<'_, T>],
) -> Result<()> {
    check_cpu("adam_step", cfg.slots(), &param, &grad, state)?;
    let (bc1, bc2) = cfg.bias_corrections(t);
    let one = T::one();
    let (lr, b1, b2, eps, wd) = (
        T::of(cfg.lr as f64),
        T::of(cfg.beta1 as f64),
        T::of(cfg.beta2 as f64),
        T::of(cfg.eps as f64),
        T::of(cfg.weight_decay as f64),
    );
    let (bc1, bc2) = (T::of(bc1 as f64), T::of(bc2 as f64));
    // The moments' update; returns the new (m, v).
    let moments = |p: &mut T, g: T, m: &mut T, v: &mut T| {
        let mut g = g;
        if cfg.decoupled {
            *p = *p * (one - lr * wd);
        } else {
            g = g + wd * *p;
        }
        *m = b1 * *m + (one - b1) * g;
        *v = b2 * *v + (one - b2) * g * g;
    };
    match state {
        [m, v] => Zip::from(&mut param)
            .and(&grad)
            .and(m)
            .and(v)
            .for_each(|p, &g, m, v| {
                moments(p, g, m, v);
                *p = *p - lr * (*m / bc1) / ((*v / bc2).sqrt() + eps);
            }),
        [m, v, v_max] => Zip::from(&mut param)
            .and(&grad)
            .and(m)
            .and(v)
            .and(v_max)
            .for_each(|p, &g, m, v, v_max| {
                moments(p, g, m, v);
                if *v > *v_max {
                    *v_max = *v;
                }
                *p = *p - lr * (*m / bc1) / ((*v_max / bc2).sqrt() + eps);
            }),
        _ => unreachable!("check_cpu matched the state to the slots"),
    }
    Ok(())
}

/// Parameter block of the `adam` and `amsgrad` kernels; rewrite it each step
/// (`Launch::set_params`) for the new step's bias corrections and learning rate.
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
    /// The parameter block for `n` parameters at step `t` (1-based).
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

/// An in-place Adam/AdamW (or AMSGrad) update of `n` parameters at step `t`; `state` as
/// for [`adam_step`].
pub fn adam(
    ctx: &GpuContext,
    cfg: &AdamConfig,
    t: u64,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    state: &[View<'_>],
) -> Result<Launch> {
    check_gpu("adam", cfg.slots(), n, &param, &grad, state)?;
    let mut bindings = vec![Binding::ReadWrite(param), Binding::Read(grad)];
    bindings.extend(state.iter().map(|s| Binding::ReadWrite(*s)));
    let entries = if cfg.amsgrad {
        ["amsgrad", "amsgrad4"]
    } else {
        ["adam", "adam4"]
    };
    flat_update(ctx, entries, n, AdamParams::new(cfg, n, t)?, bindings)
}
