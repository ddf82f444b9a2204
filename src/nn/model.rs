//! A compiled model on a device: training loop, evaluation, prediction.

use std::sync::Arc;
use std::time::Instant;

use super::{Built, Loss, Sequential};
use crate::data::{Augment, Dataset, Loader, LoaderConfig, Normalize};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{CpuExecutor, Feed, GpuExecutor, Metrics, NodeId};
use crate::optim::Optimizer;

/// Where a model runs.
#[derive(Debug, Clone)]
pub enum Device {
    Gpu(Arc<GpuContext>),
    /// The CPU reference (slow but correct; chosen explicitly).
    Cpu,
}

impl Device {
    /// The best GPU adapter (or the one `WGTRAIN_ADAPTER` names).
    pub fn gpu() -> Result<Self> {
        Ok(Device::Gpu(Arc::new(GpuContext::new()?)))
    }

    /// A readable name: the adapter, or "CPU reference".
    pub fn name(&self) -> String {
        match self {
            Device::Gpu(ctx) => {
                format!("{} ({:?})", ctx.adapter_name(), ctx.adapter_info().backend)
            }
            Device::Cpu => "CPU reference".into(),
        }
    }
}

pub(super) enum Exec {
    Gpu(Arc<GpuContext>, Box<GpuExecutor>),
    Cpu(Box<CpuExecutor>),
}

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
    /// Show a progress bar per epoch.
    pub progress: bool,
    pub normalize: Normalize,
    pub augment: Option<Augment>,
    pub early_stopping: Option<EarlyStopping>,
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
            progress: false,
            normalize: Normalize::Unit,
            augment: None,
            early_stopping: None,
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

/// Per-epoch metrics of a `fit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLog>,
    /// The epoch after which early stopping ended training.
    pub stopped_early: Option<usize>,
    /// The best epoch by the early-stopping monitor.
    pub best_epoch: Option<usize>,
}

/// Class probabilities and the most probable class of each sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// (samples, classes)
    pub probabilities: Vec<f32>,
    pub classes: Vec<u32>,
}

/// A [`Sequential`] compiled with a loss and an optimizer onto a device.
pub struct Model {
    spec: Sequential,
    pub(super) built: Built,
    labels: NodeId,
    pub(super) exec: Exec,
    device: Device,
    features: usize,
    classes: usize,
}

impl Model {
    pub(super) fn new(
        spec: Sequential,
        loss: Loss,
        optimizer: Optimizer,
        device: Device,
        seed: u64,
    ) -> Result<Self> {
        // The only loss: a final softmax is fused into it (build(true) leaves it out).
        let Loss::SparseCategoricalCrossentropy = loss;
        let built = spec.build(true)?;
        let mut graph = built.graph.clone();
        let logits_shape = graph.node(built.logits).shape.clone();
        let classes = match logits_shape.as_slice() {
            [_, crate::graph::Dim::Fixed(c)] => *c,
            other => {
                return Err(Error::Shape {
                    op: "Sequential",
                    detail: format!(
                        "a classifier ends in (batch, classes), this model ends in {} dimensions",
                        other.len()
                    ),
                })
            }
        };
        let labels = graph.labels("labels");
        let loss_node = graph.softmax_xent(built.logits, labels)?;
        let features = spec.input_shape.iter().product();
        let exec = match &device {
            Device::Gpu(ctx) => Exec::Gpu(
                ctx.clone(),
                Box::new(GpuExecutor::new(ctx, graph, loss_node, optimizer, seed)?),
            ),
            Device::Cpu => Exec::Cpu(Box::new(CpuExecutor::new(
                graph, loss_node, optimizer, seed,
            )?)),
        };
        Ok(Model {
            spec,
            built,
            labels,
            exec,
            device,
            features,
            classes,
        })
    }

    /// The layer stack.
    pub fn spec(&self) -> &Sequential {
        &self.spec
    }

    /// Where the model runs.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn check(&self, data: &Dataset) -> Result<()> {
        if data.features() != self.features {
            return Err(Error::Shape {
                op: "fit",
                detail: format!(
                    "the model takes {} inputs per sample, the data has {}",
                    self.features,
                    data.features()
                ),
            });
        }
        if data.num_classes > self.classes {
            return Err(Error::Shape {
                op: "fit",
                detail: format!(
                    "the model outputs {} classes, the data has {}",
                    self.classes, data.num_classes
                ),
            });
        }
        Ok(())
    }

    fn run_batch(&mut self, train: bool, len: usize, x: &[f32], y: &[u32]) -> Result<()> {
        let feeds = [
            (self.built.input, Feed::F32(x)),
            (self.labels, Feed::U32(y)),
        ];
        match &mut self.exec {
            Exec::Gpu(ctx, e) if train => e.step(ctx, len, &feeds),
            Exec::Gpu(ctx, e) => e.evaluate_batch(ctx, len, &feeds),
            Exec::Cpu(e) if train => e.step(len, &feeds),
            Exec::Cpu(e) => e.evaluate_batch(len, &feeds),
        }
    }

    fn take_metrics(&mut self) -> Result<Metrics> {
        match &mut self.exec {
            Exec::Gpu(ctx, e) => {
                let m = e.metrics(ctx)?;
                e.reset_metrics(ctx)?;
                Ok(m)
            }
            Exec::Cpu(e) => {
                let m = e.metrics();
                e.reset_metrics();
                Ok(m)
            }
        }
    }

    /// Trains on `data`; metrics are accumulated on the device and read once per epoch.
    pub fn fit(&mut self, data: &Dataset, cfg: &FitConfig) -> Result<History> {
        self.check(data)?;
        let data = Arc::new(data.clone());
        let (train, validation) = if cfg.validation_split > 0.0 {
            data.split_last(cfg.validation_split)?
        } else {
            ((0..data.len()).collect(), Vec::new())
        };
        if train.is_empty() {
            return Err(Error::invalid(
                "fit",
                "no training samples left after the validation split",
            ));
        }
        if let Some(es) = &cfg.early_stopping {
            if es.monitor != Monitor::Loss && validation.is_empty() {
                return Err(Error::invalid(
                    "fit",
                    format!(
                        "early stopping on {:?} needs a validation_split",
                        es.monitor
                    ),
                ));
            }
        }
        let mut best: Option<(f32, usize)> = None;
        let mut best_state = None;
        let mut waited = 0;
        let mut loader = Loader::new(
            data.clone(),
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
        let per_epoch = loader.batches_per_epoch();
        let mut history = History::default();
        self.take_metrics()?;
        for epoch in cfg.initial_epoch..cfg.epochs {
            let bar = if cfg.progress {
                let bar = indicatif::ProgressBar::new(per_epoch as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "epoch {msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
                    )
                    .expect("the progress template is valid")
                    .progress_chars("=> "),
                );
                bar.set_message(format!("{}/{}", epoch + 1, cfg.epochs));
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            let start = Instant::now();
            let mut wait = 0.0;
            let mut samples = 0;
            for _ in 0..per_epoch {
                let t = Instant::now();
                let batch = loader.next_batch().ok_or_else(|| Error::Loader {
                    detail: "ran out of batches".into(),
                })??;
                wait += t.elapsed().as_secs_f64();
                self.run_batch(true, batch.len, &batch.inputs, &batch.labels)?;
                samples += batch.len;
                loader.recycle(batch);
                bar.inc(1);
            }
            let m = self.take_metrics()?;
            bar.finish_and_clear();
            if !m.mean_loss.is_finite() {
                return Err(Error::invalid(
                    "fit",
                    format!("the training loss became non-finite ({}) during epoch {}; lower the learning rate", m.mean_loss, epoch + 1),
                ));
            }
            let seconds = start.elapsed().as_secs_f64();
            let (val_loss, val_accuracy) = if validation.is_empty() {
                (None, None)
            } else {
                let v = self.evaluate_indices(
                    &data,
                    validation.clone(),
                    cfg.batch_size.max(256),
                    &cfg.normalize,
                )?;
                (Some(v.mean_loss), Some(v.accuracy))
            };
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

    fn evaluate_indices(
        &mut self,
        data: &Arc<Dataset>,
        indices: Vec<usize>,
        batch_size: usize,
        normalize: &Normalize,
    ) -> Result<Metrics> {
        self.take_metrics()?;
        let cfg = LoaderConfig {
            shuffle: false,
            normalize: normalize.clone(),
            ..LoaderConfig::new(batch_size)
        };
        let mut loader = Loader::new(data.clone(), Some(indices), cfg)?;
        while let Some(batch) = loader.next_batch() {
            let batch = batch?;
            self.run_batch(false, batch.len, &batch.inputs, &batch.labels)?;
            loader.recycle(batch);
        }
        self.take_metrics()
    }

    /// Mean loss and accuracy over `data` (inputs scaled to [0, 1]).
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Metrics> {
        self.check(data)?;
        let data = Arc::new(data.clone());
        let all = (0..data.len()).collect();
        self.evaluate_indices(&data, all, batch_size, &Normalize::Unit)
    }

    /// Class probabilities for `inputs`: `n` samples of the model's input size, already
    /// normalized like the training data.
    pub fn predict(&mut self, inputs: &[f32], n: usize) -> Result<Prediction> {
        if inputs.len() != n * self.features {
            return Err(Error::Shape {
                op: "predict",
                detail: format!(
                    "{} values for {n} samples of {} inputs",
                    inputs.len(),
                    self.features
                ),
            });
        }
        let classes = self.classes;
        let mut probabilities = Vec::with_capacity(n * classes);
        let chunk = 256;
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let x = &inputs[start * self.features..(start + len) * self.features];
            let zeros = vec![0u32; len];
            let logits = match &mut self.exec {
                Exec::Gpu(ctx, e) => {
                    e.evaluate_batch(
                        ctx,
                        len,
                        &[
                            (self.built.input, Feed::F32(x)),
                            (self.labels, Feed::U32(&zeros)),
                        ],
                    )?;
                    e.read_node(ctx, len, self.built.logits)?
                }
                Exec::Cpu(e) => e.forward(
                    len,
                    &[
                        (self.built.input, Feed::F32(x)),
                        (self.labels, Feed::U32(&zeros)),
                    ],
                    self.built.logits,
                )?,
            };
            for row in logits.chunks(classes) {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f32> = row.iter().map(|&v| (v - m).exp()).collect();
                let s: f32 = e.iter().sum();
                probabilities.extend(e.iter().map(|v| v / s));
            }
        }
        self.take_metrics()?;
        let classes_out = probabilities
            .chunks(classes)
            .map(|p| {
                p.iter()
                    .enumerate()
                    .fold(0, |best, (j, &v)| if v > p[best] { j } else { best })
                    as u32
            })
            .collect();
        Ok(Prediction {
            probabilities,
            classes: classes_out,
        })
    }
}
