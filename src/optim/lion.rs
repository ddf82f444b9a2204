//! Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the update is
//! the sign of an interpolation of momentum and gradient, with decoupled weight decay:
//!
//! ```text
//! c = beta1 m + (1 - beta1) g
//! p = p (1 - lr wd) - lr sign(c)
//! m = beta2 m + (1 - beta2) g
//! ```
//!
//! One state slot, `m`; sign(0) is 0. GPU update: `lion`/`lion4` in shaders/optim.wgsl.

use bytemuck::{Pod, Zeroable};
use ndarray::{ArrayView1, ArrayViewMut1, Zip};

use super::{check_cpu, check_gpu, flat_update};
use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::gpu::kernels::dim_u32;
use crate::gpu::{Binding, GpuContext, Launch, View};

/// Lion's hyper-parameters (the paper's defaults: betas 0.9 and 0.99; a learning rate 3-10x
/// smaller than AdamW's, and a weight decay 3-10x larger).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LionConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Decoupled: `p *= 1 - lr * weight_decay` before the update.
    pub weight_decay: f32,
}

impl LionConfig {
    /// Lion with the paper's betas (0.9, 0.99) and no weight decay.
    pub fn new(lr: f32) -> Self {
        LionConfig {
            lr,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
        }
    }

    /// Checks that every value is finite and in range.
    pub fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr >= 0.0
            && (0.0..=1.0).contains(&self.beta1)
            && (0.0..=1.0).contains(&self.beta2)
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0;
        if !ok {
            return Err(Error::invalid(
                "lion",
                format!("{self:?}: need finite lr >= 0, betas in [0, 1], weight_decay >= 0"),
            ));
        }
        Ok(())
    }
}

/// One Lion step in place; `state` is `[m]`.
pub fn lion_step<T: Scalar>(
    cfg: &LionConfig,
    mut param: ArrayViewMut1<'_, T>,
    grad: ArrayView1<'_, T>,
    state: &mut [ArrayViewMut1<'_, T>],
) -> Result<()> {
    check_cpu("lion_step", &["m"], &param, &grad, state)?;
    let one = T::one();
    let (lr, b1, b2, wd) = (
        T::of(cfg.lr as f64),
        T::of(cfg.beta1 as f64),
        T::of(cfg.beta2 as f64),
        T::of(cfg.weight_decay as f64),
    );
    Zip::from(&mut param)
        .and(&grad)
        .and(&mut state[0])
        .for_each(|p, &g, m| {
            let c = b1 * *m + (one - b1) * g;
            let sign = if c > T::zero() {
                one
            } else if c < T::zero() {
                -one
            } else {
                c
            };
            *p = *p * (one - lr * wd) - lr * sign;
            *m = b2 * *m + (one - b2) * g;
        });
    Ok(())
}

/// Parameter block of the `lion` kernels.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct LionParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    weight_decay: f32,
    _pad: [u32; 3],
}

impl LionParams {
    /// The parameter block for `n` parameters.
    pub fn new(cfg: &LionConfig, n: usize) -> Result<Self> {
        cfg.validate()?;
        Ok(LionParams {
            n: dim_u32("lion", "parameters", n)?,
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            weight_decay: cfg.weight_decay,
            _pad: [0; 3],
        })
    }
}

/// An in-place Lion update of `n` parameters; `state` is `[m]`.
pub fn lion(
    ctx: &GpuContext,
    cfg: &LionConfig,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    state: &[View<'_>],
) -> Result<Launch> {
    check_gpu("lion", &["m"], n, &param, &grad, state)?;
    let bindings = vec![
        Binding::ReadWrite(param),
        Binding::Read(grad),
        Binding::ReadWrite(state[0]),
    ];
    flat_update(
        ctx,
        ["lion", "lion4"],
        n,
        LionParams::new(cfg, n)?,
        bindings,
    )
}
