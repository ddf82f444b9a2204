//! Learning-rate schedules, by optimizer step.

use crate::error::{Error, Result};

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
