//! A compiled model on a device: evaluation and prediction; training is in `fit.rs`.

mod fit;

pub use fit::{EarlyStopping, EpochLog, FitConfig, History, Monitor};

use std::sync::Arc;

use super::{Built, Loss, Sequential};
use crate::data::{Dataset, Loader, LoaderConfig, Normalize};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{CpuExecutor, Dim, Executor, Feed, GpuExecutor, GpuSession, Metrics, NodeId};
use crate::ops::PointwiseLoss;
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

/// Class probabilities (softmax of the logits for cross-entropy, sigmoid for binary
/// cross-entropy on logits, the outputs themselves otherwise) and the predicted class of each
/// sample (the argmax, or `p > 0.5` for a single output).
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
    pub(super) exec: Box<dyn Executor>,
    device: Device,
    features: usize,
    classes: usize,
    loss: Loss,
    /// Dense targets made from a batch's labels (for the losses that compare with targets).
    targets: Vec<f32>,
    /// The compiled optimizer (its learning rate is the schedules' base).
    pub(super) optimizer: Optimizer,
    /// Epochs trained so far (saved in checkpoints, so a resumed `fit` knows where it is).
    pub(super) epoch: usize,
    /// How inputs are scaled: set by `fit`, used by `evaluate`.
    normalize: Normalize,
}

impl Model {
    pub(super) fn new(
        spec: Sequential,
        loss: Loss,
        optimizer: Optimizer,
        device: Device,
        seed: u64,
    ) -> Result<Self> {
        // Cross-entropy fuses a final softmax into the loss (build leaves it out).
        let built = spec.build(loss.is_softmax_xent(), seed)?;
        let mut graph = built.graph.clone();
        let logits_shape = graph.node(built.logits).shape.clone();
        let classes = match logits_shape.as_slice() {
            [_, crate::graph::Dim::Fixed(c)] => *c,
            other => {
                return Err(Error::Shape {
                    op: "Sequential",
                    detail: format!(
                        "a classifier ends in (batch, outputs), this model ends in {} dimensions",
                        other.len()
                    ),
                })
            }
        };
        let (labels, loss_node) = if loss.is_softmax_xent() {
            let labels = graph.labels("labels");
            (labels, graph.softmax_xent(built.logits, labels)?)
        } else {
            let kind = match loss {
                Loss::BinaryCrossentropy { from_logits: true } => {
                    PointwiseLoss::BinaryCrossEntropyWithLogits
                }
                Loss::BinaryCrossentropy { from_logits: false } => {
                    PointwiseLoss::BinaryCrossEntropy
                }
                _ => PointwiseLoss::MeanSquaredError,
            };
            let targets = graph.input("targets", &[Dim::Batch, Dim::Fixed(classes)]);
            (targets, graph.loss(kind, built.logits, targets)?)
        };
        let features = spec.input_shape.iter().product();
        let exec: Box<dyn Executor> = match &device {
            Device::Gpu(ctx) => Box::new(GpuSession {
                ctx: ctx.clone(),
                exec: GpuExecutor::new(ctx, graph, loss_node, optimizer, seed)?,
            }),
            Device::Cpu => Box::new(CpuExecutor::new(graph, loss_node, optimizer, seed)?),
        };
        Ok(Model {
            spec,
            built,
            labels,
            exec,
            device,
            features,
            classes,
            optimizer,
            loss,
            targets: Vec::new(),
            epoch: 0,
            normalize: Normalize::Unit,
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

    /// Epochs trained so far (restored by [`Model::load`]); a resumed `fit` passes it as
    /// `initial_epoch`.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.exec.set_lr(lr)
    }

    fn set_clip(&mut self, clip: Option<f32>) -> Result<()> {
        self.exec.set_clip_global_norm(clip)
    }

    fn peek_metrics(&mut self) -> Result<Metrics> {
        self.exec.metrics()
    }

    fn check(&self, data: &Dataset) -> Result<()> {
        data.validate()?;
        if data.is_empty() {
            return Err(Error::invalid("fit", "the dataset holds no samples"));
        }
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
        if self.classes == 1 && data.num_classes > 2 {
            return Err(Error::Shape {
                op: "fit",
                detail: format!(
                    "a model with one output learns two classes (labels 0 and 1), the data has {}",
                    data.num_classes
                ),
            });
        }
        if self.classes > 1 && data.num_classes > self.classes {
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
        let labels = if self.loss.is_softmax_xent() {
            Feed::U32(y)
        } else {
            // One output: the label itself; several: one-hot.
            let classes = self.classes;
            self.targets.clear();
            self.targets.resize(len * classes, 0.0);
            for (row, &label) in y.iter().enumerate() {
                if classes == 1 {
                    self.targets[row] = label as f32;
                } else {
                    self.targets[row * classes + label as usize] = 1.0;
                }
            }
            Feed::F32(&self.targets)
        };
        let feeds = [(self.built.input, Feed::F32(x)), (self.labels, labels)];
        if train {
            self.exec.step(len, &feeds)
        } else {
            self.exec.evaluate_batch(len, &feeds)
        }
    }

    fn take_metrics(&mut self) -> Result<Metrics> {
        let m = self.exec.metrics()?;
        self.exec.reset_metrics()?;
        Ok(m)
    }

    /// Trains on `data`; metrics are accumulated on the device and read once per epoch.
    fn evaluate_indices(
        &mut self,
        data: &Dataset,
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
        std::thread::scope(|scope| {
            let mut loader = Loader::scoped(scope, data, Some(indices), cfg)?;
            while let Some(batch) = loader.next_batch() {
                let batch = batch?;
                self.run_batch(false, batch.len, &batch.inputs, &batch.labels)?;
                loader.recycle(batch);
            }
            self.take_metrics()
        })
    }

    /// Mean loss and accuracy over `data`, with inputs scaled as the last `fit` scaled them
    /// (x / 255 before any).
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Metrics> {
        self.check(data)?;
        let all = (0..data.len()).collect();
        let normalize = self.normalize.clone();
        self.evaluate_indices(data, all, batch_size, &normalize)
    }

    /// How `evaluate` scales inputs (and `predict` expects them scaled).
    pub fn normalize(&self) -> &Normalize {
        &self.normalize
    }

    /// Class probabilities for `inputs`: `n` samples of the model's input size, already
    /// normalized like the training data.
    pub fn predict(&mut self, inputs: &[f32], n: usize) -> Result<Prediction> {
        if n.checked_mul(self.features) != Some(inputs.len()) {
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
            let zero_labels = vec![0u32; len];
            let zero_targets = vec![0f32; len * classes];
            let targets = if self.loss.is_softmax_xent() {
                Feed::U32(&zero_labels)
            } else {
                Feed::F32(&zero_targets)
            };
            let feeds = [(self.built.input, Feed::F32(x)), (self.labels, targets)];
            let outputs = self.exec.forward(len, &feeds, self.built.logits)?;
            match self.loss {
                Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => {
                    for row in outputs.chunks(classes) {
                        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let e: Vec<f32> = row.iter().map(|&v| (v - m).exp()).collect();
                        let s: f32 = e.iter().sum();
                        probabilities.extend(e.iter().map(|v| v / s));
                    }
                }
                Loss::BinaryCrossentropy { from_logits: true } => {
                    probabilities.extend(outputs.iter().map(|&z| 1.0 / (1.0 + (-z).exp())))
                }
                _ => probabilities.extend_from_slice(&outputs),
            }
        }
        self.take_metrics()?;
        let classes_out = probabilities
            .chunks(classes)
            .map(|p| {
                if classes == 1 {
                    return (p[0] > 0.5) as u32;
                }
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
