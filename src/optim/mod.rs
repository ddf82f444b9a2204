//! Optimizers in one place (ARCHITECTURE.md, "Optimizers"): each has a file with its
//! configuration, its step on the CPU reference and its in-place GPU update (WGSL entries in
//! `shaders/optim.wgsl`); [`Optimizer`] is the table executors and checkpoints read: the
//! named state slots, whether the GPU parameter block changes with the step, the CPU step
//! and the GPU update. Learning-rate schedules and per-parameter options live here too.

mod adam;
mod lion;
mod schedule;
mod sgd;

pub use adam::{adam, adam_step, AdamConfig, AdamParams};
pub use lion::{lion, lion_step, LionConfig, LionParams};
pub use schedule::LrSchedule;
pub use sgd::{sgd, sgd_step, SgdConfig, SgdParams};

use bytemuck::Pod;
use ndarray::{ArrayView1, ArrayViewMut1};

use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::gpu::kernels::{check_flat, groups, vec4_ok};
use crate::gpu::{Binding, GpuContext, Kernel, Launch, LaunchDesc, View};

/// The optimizer a graph executor appends.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Optimizer {
    Sgd(SgdConfig),
    /// Adam, AdamW and AMSGrad ([`AdamConfig::with_amsgrad`]).
    Adam(AdamConfig),
    Lion(LionConfig),
}

impl Optimizer {
    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => c.validate(),
            Optimizer::Adam(c) => c.validate(),
            Optimizer::Lion(c) => c.validate(),
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd(c) => c.lr,
            Optimizer::Adam(c) => c.lr,
            Optimizer::Lion(c) => c.lr,
        }
    }

    /// The same optimizer with another learning rate.
    pub fn with_lr(mut self, lr: f32) -> Self {
        match &mut self {
            Optimizer::Sgd(c) => c.lr = lr,
            Optimizer::Adam(c) => c.lr = lr,
            Optimizer::Lion(c) => c.lr = lr,
        }
        self
    }

    /// The same optimizer with another weight decay.
    fn with_weight_decay(mut self, wd: f32) -> Self {
        match &mut self {
            Optimizer::Sgd(c) => c.weight_decay = wd,
            Optimizer::Adam(c) => c.weight_decay = wd,
            Optimizer::Lion(c) => c.weight_decay = wd,
        }
        self
    }

    /// The per-parameter state the optimizer keeps, by name and in order, each slot as large
    /// as the parameters: SGD's velocity when it has momentum (nothing for plain SGD), Adam's
    /// two moments (and their running maximum for AMSGrad), Lion's momentum. Executors
    /// allocate exactly these; `read_state`/`write_state` and checkpoints use this order and
    /// these names.
    pub fn state_slots(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd(c) => c.slots(),
            Optimizer::Adam(c) => c.slots(),
            Optimizer::Lion(_) => &["m"],
        }
    }

    /// Checks state given for parameter `param` of `n` values: one vector of `n` values per
    /// slot. A vector for a slot this optimizer does not keep (an Adam second moment given to
    /// SGD, say) is refused: dropping it silently would change training.
    pub(crate) fn check_state(&self, param: &str, n: usize, state: &[Vec<f32>]) -> Result<()> {
        let slots = self.state_slots();
        let lens: Vec<usize> = state.iter().map(Vec::len).collect();
        if state.len() != slots.len() || lens.iter().any(|&l| l != n) {
            return Err(Error::shape(
                "optimizer state",
                format!(
                    "`{param}` ({n} values) got state of lengths {lens:?}; {self:?} keeps one \
                     vector of {n} per slot {slots:?}"
                ),
            ));
        }
        Ok(())
    }

    /// Whether the GPU update's parameter block depends on the step number, so executors
    /// rewrite it ([`Optimizer::write_gpu_params`]) before every step (Adam's bias
    /// corrections).
    pub fn params_change_per_step(&self) -> bool {
        match self {
            Optimizer::Sgd(_) | Optimizer::Lion(_) => false,
            Optimizer::Adam(_) => true,
        }
    }

    /// One step of `param` in place for step `t` (1-based) on the CPU reference; `state`
    /// holds one array per [`Optimizer::state_slots`] entry.
    pub fn cpu_step<T: Scalar>(
        &self,
        t: u64,
        param: ArrayViewMut1<'_, T>,
        grad: ArrayView1<'_, T>,
        state: &mut [ArrayViewMut1<'_, T>],
    ) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => sgd_step(c, param, grad, state),
            Optimizer::Adam(c) => adam_step(c, t, param, grad, state),
            Optimizer::Lion(c) => lion_step(c, param, grad, state),
        }
    }

    /// The in-place GPU update of `n` parameters at step `t`, one launch; `state` holds one
    /// view per [`Optimizer::state_slots`] entry.
    pub fn gpu_update(
        &self,
        ctx: &GpuContext,
        t: u64,
        n: usize,
        param: View<'_>,
        grad: View<'_>,
        state: &[View<'_>],
    ) -> Result<Kernel> {
        Ok(match self {
            Optimizer::Sgd(c) => sgd(ctx, c, n, param, grad, state)?,
            Optimizer::Adam(c) => adam(ctx, c, t, n, param, grad, state)?.into(),
            Optimizer::Lion(c) => lion(ctx, c, n, param, grad, state)?.into(),
        })
    }

    /// Rewrites the parameter block of launch `k` of `kernel` (made by
    /// [`Optimizer::gpu_update`] for `n` parameters) for step `t` and this optimizer's
    /// current hyper-parameters.
    pub fn write_gpu_params(
        &self,
        ctx: &GpuContext,
        kernel: &Kernel,
        k: usize,
        n: usize,
        t: u64,
    ) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => kernel.set_params(ctx, k, &SgdParams::new(c, n)?),
            Optimizer::Adam(c) => kernel.set_params(ctx, k, &AdamParams::new(c, n, t)?),
            Optimizer::Lion(c) => kernel.set_params(ctx, k, &LionParams::new(c, n)?),
        }
        Ok(())
    }

    /// The optimizer a parameter group runs: the learning rate times `o.lr_scale`, and
    /// `o.weight_decay` where it is set. Default options give this optimizer unchanged.
    pub fn for_group(&self, o: &ParamOptions) -> Optimizer {
        let opt = self.with_lr(self.lr() * o.lr_scale);
        match o.weight_decay {
            Some(wd) => opt.with_weight_decay(wd),
            None => opt,
        }
    }
}

/// Checks a CPU step's operands: gradient and every state slot as long as the parameters,
/// one state array per slot.
fn check_cpu<T>(
    op: &'static str,
    slots: &[&str],
    param: &ArrayViewMut1<'_, T>,
    grad: &ArrayView1<'_, T>,
    state: &[ArrayViewMut1<'_, T>],
) -> Result<()> {
    let p = param.len();
    let lens: Vec<usize> = state.iter().map(|s| s.len()).collect();
    if grad.len() != p || state.len() != slots.len() || lens.iter().any(|&l| l != p) {
        return Err(Error::shape(
            op,
            format!(
                "{p} parameters, {} gradients, state lengths {lens:?} for slots {slots:?}",
                grad.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a GPU update's operands: `n` elements in every view, one state view per slot.
fn check_gpu(
    op: &'static str,
    slots: &[&str],
    n: usize,
    param: &View<'_>,
    grad: &View<'_>,
    state: &[View<'_>],
) -> Result<()> {
    if state.len() != slots.len() {
        return Err(Error::invalid(
            op,
            format!(
                "{} state buffers given for the slots {slots:?}",
                state.len()
            ),
        ));
    }
    check_flat(op, n, &[("param", param), ("grad", grad)])?;
    for (slot, view) in slots.iter().zip(state) {
        check_flat(op, n, &[(slot, view)])?;
    }
    Ok(())
}

/// One launch of `entries[0]` over `n` parameters (shaders/optim.wgsl), or of its vec4 form
/// `entries[1]` when every view allows vec4 access: each invocation then updates 4 vec4s.
fn flat_update<P: Pod>(
    ctx: &GpuContext,
    entries: [&'static str; 2],
    n: usize,
    params: P,
    bindings: Vec<Binding<'_>>,
) -> Result<Launch> {
    let views: Vec<&View<'_>> = bindings.iter().filter_map(Binding::view).collect();
    let wide = vec4_ok(n, &views);
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "optim",
            entry: entries[wide as usize],
            constants: vec![],
            params,
            bindings,
            workgroups: groups(if wide { n.div_ceil(16) } else { n }, 256)?,
        },
    )
}

/// A parameter's own optimizer options, as PyTorch's parameter groups give them: parameters
/// with equal options form a group (no weight decay on biases, a smaller rate for a
/// pretrained part). Set with [`crate::graph::Graph::set_param_options`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamOptions {
    /// Multiplies the optimizer's learning rate (and its schedule).
    pub lr_scale: f32,
    /// Replaces the optimizer's weight decay (`Some(0.0)`: none); `None` keeps it.
    pub weight_decay: Option<f32>,
}

impl Default for ParamOptions {
    fn default() -> Self {
        ParamOptions {
            lr_scale: 1.0,
            weight_decay: None,
        }
    }
}

impl ParamOptions {
    /// Checks that the values are finite and not negative.
    pub fn validate(&self) -> Result<()> {
        let wd_ok = self.weight_decay.is_none_or(|w| w.is_finite() && w >= 0.0);
        if !(self.lr_scale.is_finite() && self.lr_scale >= 0.0 && wd_ok) {
            return Err(Error::invalid(
                "parameter options",
                format!("{self:?}: lr_scale and weight_decay must be finite and >= 0"),
            ));
        }
        Ok(())
    }
}
