//! Optimizers in one place: their hyper-parameters, learning-rate schedules and parameter
//! options, their step on the CPU reference (`cpu.rs`) and their in-place GPU update
//! (`gpu.rs`, `shaders/optim.wgsl`).

mod cpu;
mod gpu;

pub use cpu::{adam_step, sgd_step};
pub use gpu::{adam, sgd, AdamParams, SgdParams};

use crate::error::{Error, Result};

/// Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay
/// (PyTorch's semantics, no dampening).
#[derive(Debug, Clone, Copy, PartialEq)]
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
}

/// Adam, or AdamW with `decoupled` weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW: decay the weights directly instead of adding `weight_decay * p` to the gradient.
    pub decoupled: bool,
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
}

/// The optimizer a graph executor appends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl Optimizer {
    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => c.validate(),
            Optimizer::Adam(c) => c.validate(),
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd(c) => c.lr,
            Optimizer::Adam(c) => c.lr,
        }
    }

    /// The per-parameter state the optimizer keeps, by name, each slot as large as the
    /// parameters: Adam's two moments, SGD's velocity when it has momentum, nothing for plain
    /// SGD. Executors allocate exactly these.
    pub fn state_slots(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd(c) if c.momentum == 0.0 => &[],
            Optimizer::Sgd(_) => &["momentum"],
            Optimizer::Adam(_) => &["m", "v"],
        }
    }

    /// Rejects non-zero values for a slot this optimizer does not keep (an Adam second
    /// moment given to SGD, say): dropping them silently would change training. `slots` are
    /// (first moment or velocity, second moment) of parameter `param`.
    pub(crate) fn check_unkept_state(&self, param: &str, slots: [&[f32]; 2]) -> Result<()> {
        let kept = self.state_slots().len();
        if let Some(k) = (kept..2).find(|&k| slots[k].iter().any(|&x| x != 0.0)) {
            return Err(Error::invalid(
                "optimizer state",
                format!(
                    "`{param}` has non-zero values for optimizer slot {} but {self:?} keeps \
                     {kept} slot(s) {:?}",
                    k + 1,
                    self.state_slots()
                ),
            ));
        }
        Ok(())
    }

    /// The optimizer a parameter group runs: the learning rate times `o.lr_scale`, and
    /// `o.weight_decay` where it is set. Default options give this optimizer unchanged.
    pub fn for_group(&self, o: &ParamOptions) -> Optimizer {
        let mut opt = self.with_lr(self.lr() * o.lr_scale);
        if let Some(wd) = o.weight_decay {
            match &mut opt {
                Optimizer::Sgd(c) => c.weight_decay = wd,
                Optimizer::Adam(c) => c.weight_decay = wd,
            }
        }
        opt
    }

    /// The same optimizer with another learning rate.
    pub fn with_lr(mut self, lr: f32) -> Self {
        match &mut self {
            Optimizer::Sgd(c) => c.lr = lr,
            Optimizer::Adam(c) => c.lr = lr,
        }
        self
    }
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

/// How the learning rate changes with the optimizer step (Keras' `LearningRateSchedule`):
/// the rate for step `t` (0-based, counted over the whole training, resumes included) is
/// `lr_at(base, t)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LrSchedule {
    /// The optimizer's learning rate throughout.
    #[default]
    Constant,
    /// `base * gamma^floor(t / every)` (PyTorch's `StepLR`, counted in steps).
    Step { every: u64, gamma: f32 },
    /// Cosine decay from `base` to `base * alpha` over `decay_steps`, then `base * alpha`
    /// (Keras' `CosineDecay`).
    Cosine { decay_steps: u64, alpha: f32 },
    /// A linear warm-up from `base / warmup_steps` to `base` over the first `warmup_steps`
    /// steps, then [`LrSchedule::Cosine`] decay over the next `decay_steps` (the schedule of
    /// fast CIFAR-10 trainers; Keras' `CosineDecay` with `warmup_steps`, warming up from
    /// almost zero).
    WarmupCosine {
        warmup_steps: u64,
        decay_steps: u64,
        alpha: f32,
    },
}

impl LrSchedule {
    /// The learning rate of step `t` (0-based), computed in f64 and rounded once.
    pub fn lr_at(&self, base: f32, t: u64) -> f32 {
        let base = base as f64;
        let lr = match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { every, gamma } => {
                let k = (t / every.max(1)).min(i32::MAX as u64) as i32;
                base * (gamma as f64).powi(k)
            }
            LrSchedule::Cosine { decay_steps, alpha } => {
                let progress = t.min(decay_steps) as f64 / decay_steps.max(1) as f64;
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                base * ((1.0 - alpha as f64) * cosine + alpha as f64)
            }
            LrSchedule::WarmupCosine {
                warmup_steps,
                decay_steps,
                alpha,
            } => {
                if t < warmup_steps {
                    base * (t + 1) as f64 / warmup_steps as f64
                } else {
                    let decay = LrSchedule::Cosine { decay_steps, alpha };
                    return decay.lr_at(base as f32, t - warmup_steps);
                }
            }
        };
        lr as f32
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            LrSchedule::Constant => true,
            LrSchedule::Step { every, gamma } => every > 0 && gamma.is_finite() && gamma >= 0.0,
            LrSchedule::Cosine { decay_steps, alpha }
            | LrSchedule::WarmupCosine {
                decay_steps, alpha, ..
            } => decay_steps > 0 && (0.0..=1.0).contains(&alpha),
        };
        if !ok {
            return Err(Error::invalid(
                "lr schedule",
                format!("{self:?}: need every > 0 and a finite gamma >= 0 (step), decay_steps > 0 and alpha in [0, 1] (cosine, warm-up cosine)"),
            ));
        }
        Ok(())
    }
}
