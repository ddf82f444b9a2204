//! Training: `Model::fit` with its configuration (epochs, validation, schedules, clipping,
//! checkpoints, early stopping) and what it returns (per-epoch logs, curves).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::Model;
use crate::data::{Augment, Dataset, Loader, LoaderConfig, Normalize};
use crate::error::{Error, Result};
use crate::optim::LrSchedule;

/// The figure early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
    Loss,
}

/// Stop when the monitored figure has not improved by more than `min_delta` for `patience`
/// epochs; with `restore_best`, go back to the best epoch's parameters and optimizer state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub patience: usize,
    pub min_delta: f32,
    pub restore_best: bool,
}

impl EarlyStopping {
    /// Watches `monitor` with `patience` epochs, restoring the best epoch at the end.
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        EarlyStopping {
            monitor,
            patience,
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// Train until this epoch number (Keras semantics, with `initial_epoch`).
    pub epochs: usize,
    /// The epoch to start from when resuming (epochs `initial_epoch..epochs` are trained).
    pub initial_epoch: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Hold out the last fraction of the data for validation, as Keras does.
    pub validation_split: f64,
    /// Validate on this data after every epoch instead (not together with a split).
    pub validation_data: Option<Arc<Dataset>>,
    /// Show a progress bar per epoch and print each epoch's figures (Keras' `verbose=1`).
    pub progress: bool,
    pub normalize: Normalize,
    pub augment: Option<Augment>,
    pub early_stopping: Option<EarlyStopping>,
    /// The learning rate by optimizer step (the optimizer's rate is the base).
    pub lr_schedule: LrSchedule,
    /// Scale each step's gradients to a global L2 norm of at most this.
    pub clip_global_norm: Option<f32>,
    /// Save a checkpoint here after every epoch (atomically; a failed epoch leaves the
    /// previous one in place).
    pub checkpoint: Option<PathBuf>,
}

impl FitConfig {
    /// `epochs` epochs of shuffled batches of `batch_size`, inputs scaled to [0, 1].
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        FitConfig {
            epochs,
            initial_epoch: 0,
            batch_size,
            shuffle: true,
            seed: 0,
            validation_split: 0.0,
            validation_data: None,
            progress: false,
            normalize: Normalize::Unit,
            augment: None,
            early_stopping: None,
            lr_schedule: LrSchedule::Constant,
            clip_global_norm: None,
            checkpoint: None,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Time the training loop spent waiting for the loader thread.
    pub loader_wait_seconds: f64,
}

/// `loss 0.4512, accuracy 0.8410[, val_loss .., val_accuracy ..], 41234 samples/s, 1.5 s,
/// loader wait 0.003 s`: what `fit` prints after `epoch i/n: `.
impl std::fmt::Display for EpochLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loss {:.4}, accuracy {:.4}", self.loss, self.accuracy)?;
        if let Some(l) = self.val_loss {
            write!(f, ", val_loss {l:.4}")?;
        }
        if let Some(a) = self.val_accuracy {
            write!(f, ", val_accuracy {a:.4}")?;
        }
        write!(
            f,
            ", {:.0} samples/s, {:.1} s, loader wait {:.3} s",
            self.samples_per_sec, self.seconds, self.loader_wait_seconds
        )
    }
}

/// Per-epoch metrics of a `fit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLog>,
    /// The epoch after which early stopping ended training.
    pub stopped_early: Option<usize>,
    /// The best epoch by the early-stopping monitor.
    pub best_epoch: Option<usize>,
}

impl History {
    /// Samples per second over all epochs (time-weighted), or None before any epoch.
    pub fn samples_per_sec(&self) -> Option<f64> {
        let seconds: f64 = self.epochs.iter().map(|e| e.seconds).sum();
        let samples: f64 = self
            .epochs
            .iter()
            .map(|e| e.samples_per_sec * e.seconds)
            .sum();
        (seconds > 0.0).then(|| samples / seconds)
    }

    /// Saves the loss and accuracy curves by epoch (train, and validation when there was
    /// one) as a PNG.
    pub fn save_plot(&self, path: &std::path::Path) -> Result<()> {
        use crate::data::picture::{save_line_plots, Panel, Series};
        const TRAIN: [u8; 3] = [31, 119, 180];
        const VAL: [u8; 3] = [255, 127, 14];
        let collect = |f: &dyn Fn(&EpochLog) -> Option<f32>| -> Vec<f32> {
            self.epochs.iter().filter_map(f).collect()
        };
        let panel = |title: &str, train: Vec<f32>, val: Vec<f32>| {
            let mut series = vec![Series {
                label: "train".into(),
                values: train,
                color: TRAIN,
            }];
            if !val.is_empty() {
                series.push(Series {
                    label: "val".into(),
                    values: val,
                    color: VAL,
                });
            }
            Panel {
                title: title.into(),
                first_epoch: self.epochs.first().map_or(1, |e| e.epoch),
                series,
            }
        };
        save_line_plots(
            path,
            &[
                panel(
                    "loss by epoch",
                    collect(&|e| Some(e.loss)),
                    collect(&|e| e.val_loss),
                ),
                panel(
                    "accuracy by epoch",
                    collect(&|e| Some(e.accuracy)),
                    collect(&|e| e.val_accuracy),
                ),
            ],
        )
    }
}

fn non_finite(step: u64, epoch: usize, in_epoch: u64, loss: f32) -> Error {
    Error::invalid(
        "fit",
        format!(
            "the training loss became non-finite ({loss}) at step {step} (epoch {}, batch {in_epoch}). \
             The labels, the pixel data and the normalization were checked before training \
             (Dataset::validate, the loader), so the likely cause is the optimization: lower \
             the learning rate or clip gradients (clip_global_norm); for a model built with the \
             graph API, also check inputs fed directly and the parameter initialization. \
             Checkpoints saved after earlier epochs are untouched",
            epoch + 1
        ),
    )
}

impl Model {
    pub fn fit(&mut self, data: &Dataset, cfg: &FitConfig) -> Result<History> {
        self.check(data)?;
        cfg.lr_schedule.validate()?;
        if !(0.0..1.0).contains(&cfg.validation_split) {
            return Err(Error::invalid(
                "fit",
                format!("validation_split {} is not in [0, 1)", cfg.validation_split),
            ));
        }
        let (train, validation) = if cfg.validation_split > 0.0 {
            if cfg.validation_data.is_some() {
                return Err(Error::invalid(
                    "fit",
                    "give validation_split or validation_data, not both",
                ));
            }
            let (t, v) = data.split_last(cfg.validation_split)?;
            (t, Some((data, v)))
        } else if let Some(v) = &cfg.validation_data {
            self.check(v)?;
            let all = (0..v.len()).collect();
            ((0..data.len()).collect(), Some((&**v, all)))
        } else {
            ((0..data.len()).collect(), None)
        };
        if train.is_empty() {
            return Err(Error::invalid(
                "fit",
                "no training samples left after the validation split",
            ));
        }
        if let Some(es) = &cfg.early_stopping {
            if es.monitor != Monitor::Loss && validation.is_none() {
                return Err(Error::invalid(
                    "fit",
                    format!(
                        "early stopping on {:?} needs validation_split or validation_data",
                        es.monitor
                    ),
                ));
            }
        }
        self.set_clip(cfg.clip_global_norm)?;
        self.normalize = cfg.normalize.clone();
        // The loader thread borrows `data` inside this scope: nothing is copied.
        std::thread::scope(|scope| {
            let loader = Loader::scoped(
                scope,
                data,
                Some(train),
                LoaderConfig {
                    batch_size: cfg.batch_size,
                    shuffle: cfg.shuffle,
                    seed: cfg.seed,
                    drop_last: false,
                    prefetch: 4,
                    epochs: cfg.epochs.saturating_sub(cfg.initial_epoch),
                    first_epoch: cfg.initial_epoch,
                    normalize: cfg.normalize.clone(),
                    augment: cfg.augment,
                },
            )?;
            self.train_epochs(loader, validation, cfg)
        })
    }

    /// `fit`'s epochs over `loader`'s batches, validating on `validation` after each.
    fn train_epochs(
        &mut self,
        mut loader: Loader,
        validation: Option<(&Dataset, Vec<usize>)>,
        cfg: &FitConfig,
    ) -> Result<History> {
        let base_lr = self.optimizer.lr();
        let mut lr = f32::NAN;
        let mut best: Option<(f32, usize)> = None;
        let mut best_state = None;
        let mut waited = 0;
        let per_epoch = loader.batches_per_epoch();
        let mut history = History::default();
        self.take_metrics()?;
        for epoch in cfg.initial_epoch..cfg.epochs {
            let bar = if cfg.progress {
                let bar = indicatif::ProgressBar::new(per_epoch as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
                    )
                    .expect("the progress template is valid")
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            let start = Instant::now();
            let first_step = self.steps();
            let mut wait = 0.0;
            let mut samples = 0;
            for b in 0..per_epoch {
                let t = Instant::now();
                let batch = loader.next_batch().ok_or_else(|| Error::Loader {
                    detail: "ran out of batches".into(),
                })??;
                wait += t.elapsed().as_secs_f64();
                let scheduled = cfg.lr_schedule.lr_at(base_lr, self.steps());
                if scheduled != lr {
                    self.set_lr(scheduled)?;
                    lr = scheduled;
                }
                self.run_batch(true, batch.len, &batch.inputs, &batch.labels)?;
                samples += batch.len;
                loader.recycle(batch);
                bar.inc(1);
                // A cheap look at the running figures (5 floats) for the bar, and to stop
                // soon after the loss stops being finite.
                if (b + 1) % 100 == 0 || b + 1 == per_epoch {
                    let m = self.peek_metrics()?;
                    if let Some(k) = m.first_non_finite {
                        bar.abandon();
                        return Err(non_finite(first_step + k, epoch, k, m.mean_loss));
                    }
                    if cfg.progress {
                        bar.set_message(format!("loss {:.4} acc {:.4}", m.mean_loss, m.accuracy));
                    }
                }
            }
            let m = self.take_metrics()?;
            bar.finish_and_clear();
            if let Some(k) = m.first_non_finite {
                return Err(non_finite(first_step + k, epoch, k, m.mean_loss));
            }
            let seconds = start.elapsed().as_secs_f64();
            let (val_loss, val_accuracy) = match &validation {
                None => (None, None),
                Some((vdata, indices)) => {
                    let v = self.evaluate_indices(
                        vdata,
                        indices.clone(),
                        cfg.batch_size.max(256),
                        &cfg.normalize,
                    )?;
                    (Some(v.mean_loss), Some(v.accuracy))
                }
            };
            self.epoch = epoch + 1;
            history.epochs.push(EpochLog {
                epoch: epoch + 1,
                loss: m.mean_loss,
                accuracy: m.accuracy,
                val_loss,
                val_accuracy,
                seconds,
                samples_per_sec: samples as f64 / seconds,
                loader_wait_seconds: wait,
            });
            if cfg.progress {
                let e = history.epochs.last().expect("just pushed");
                println!("epoch {}/{}: {e}", e.epoch, cfg.epochs);
            }
            if let Some(path) = &cfg.checkpoint {
                self.save(path)?;
            }
            if let Some(es) = &cfg.early_stopping {
                // Larger is better for accuracy; compare on a "lower is better" scale.
                let score = match es.monitor {
                    Monitor::ValLoss => val_loss.unwrap_or(f32::INFINITY),
                    Monitor::ValAccuracy => -val_accuracy.unwrap_or(0.0),
                    Monitor::Loss => m.mean_loss,
                };
                if best.is_none_or(|(b, _)| score < b - es.min_delta) {
                    best = Some((score, epoch + 1));
                    waited = 0;
                    if es.restore_best {
                        best_state = Some(self.snapshot()?);
                    }
                } else {
                    waited += 1;
                    if waited >= es.patience {
                        history.stopped_early = Some(epoch + 1);
                        break;
                    }
                }
            }
        }
        history.best_epoch = best.map(|(_, e)| e);
        let last = history.epochs.last().map(|e| e.epoch);
        if let (Some(state), Some(b)) = (&best_state, history.best_epoch) {
            if Some(b) != last {
                self.restore(state)?;
            }
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::EpochLog;

    #[test]
    fn epoch_log_prints_validation_figures_only_when_present() {
        let mut e = EpochLog {
            epoch: 2,
            loss: 0.45123,
            accuracy: 0.84,
            val_loss: None,
            val_accuracy: None,
            seconds: 1.54,
            samples_per_sec: 41234.4,
            loader_wait_seconds: 0.0031,
        };
        assert_eq!(
            e.to_string(),
            "loss 0.4512, accuracy 0.8400, 41234 samples/s, 1.5 s, loader wait 0.003 s"
        );
        e.val_loss = Some(0.5);
        e.val_accuracy = Some(0.8);
        assert_eq!(
            e.to_string(),
            "loss 0.4512, accuracy 0.8400, val_loss 0.5000, val_accuracy 0.8000, \
             41234 samples/s, 1.5 s, loader wait 0.003 s"
        );
    }
}
