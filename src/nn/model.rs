//! A compiled model on a device: evaluation and prediction; training is in `fit.rs`.

mod fit;

pub use fit::{EarlyStopping, EpochLog, FitConfig, History, Metric, Monitor};

use std::sync::Arc;

use ndarray::{Array2, ArrayBase, Data, Dimension};

use super::{Built, Functional, Loss};
use crate::data::{
    Affine, ArrayDataset, Loader, LoaderConfig, Normalize, Samples, TargetKind, Targets,
};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{CpuExecutor, Dim, Executor, Feed, GpuExecutor, NodeId, Replicated};
use crate::ops::{Metrics, PointwiseLoss};
use crate::optim::Optimizer;

/// Where a model runs.
#[derive(Debug, Clone)]
pub enum Device {
    Gpu(Arc<GpuContext>),
    /// The CPU reference (slow but correct; chosen explicitly).
    Cpu,
    /// Data parallelism in one process: one replica of the model per context, each training
    /// on its shard of every batch on its own thread; gradients are summed on the host in a
    /// fixed order and every replica applies the same update (see [`crate::graph::Replicated`]).
    Replicas(Vec<Arc<GpuContext>>),
    /// One rank of a data-parallel job started by `mpirun` (feature `mpi`): the model on
    /// this rank's GPU, its gradients summed over the ranks by MPI at every step (see
    /// [`crate::mpi`]).
    #[cfg(feature = "mpi")]
    Mpi {
        mpi: crate::mpi::Mpi,
        gpu: Arc<GpuContext>,
    },
}

impl Device {
    /// The best GPU adapter (or the one `WGTRAIN_ADAPTER` names).
    pub fn gpu() -> Result<Self> {
        Ok(Device::Gpu(Arc::new(GpuContext::new()?)))
    }

    /// The device a model trains on by default (Keras picks one the same way): the best GPU
    /// adapter; the CPU executor when no adapter can be opened, after a one-line notice naming
    /// the driver to install; and when the best adapter is a software rasterizer (lavapipe,
    /// llvmpipe, WARP, SwiftShader), whichever of it and the CPU executor trains this kind of
    /// model faster: the rasterizer for `convolutional` models, the CPU executor for dense
    /// ones (measured on lavapipe: docs/performance.md, "Choosing the default device").
    /// `WGTRAIN_ADAPTER` or `WGTRAIN_PLAN` set, or [`Device::gpu`], force the adapter; an
    /// adapter `WGTRAIN_ADAPTER` names that does not exist is an error, not a fallback.
    pub fn auto(convolutional: bool) -> Result<Self> {
        let forced = [crate::gpu::ADAPTER_ENV, crate::gpu::PLAN_ENV]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        match GpuContext::new() {
            Ok(ctx) if forced || convolutional || ctx.kind() == crate::gpu::AdapterKind::Gpu => {
                Ok(Device::Gpu(Arc::new(ctx)))
            }
            Ok(ctx) => {
                eprintln!(
                    "wgtrain: {} is a software rasterizer, and the CPU executor trains dense \
                     models faster, so this one trains there (Device::gpu() or {}=... uses the \
                     adapter)",
                    ctx.adapter_name(),
                    crate::gpu::ADAPTER_ENV
                );
                Ok(Device::Cpu)
            }
            Err(Error::NoAdapter { seen, .. }) if !forced => {
                let seen = if seen.is_empty() {
                    "none"
                } else {
                    seen.as_str()
                };
                eprintln!(
                    "wgtrain: no GPU adapter could be opened (adapters seen: {seen}); training \
                     on the CPU executor. Install your GPU's driver, or Mesa's software Vulkan \
                     driver: apt-get install mesa-vulkan-drivers"
                );
                Ok(Device::Cpu)
            }
            Err(e) => Err(e),
        }
    }

    /// `n` replicas, each on its own device opened on the best adapter (or the one
    /// `WGTRAIN_ADAPTER` names): several GPUs' worth of data parallelism, or, on one adapter,
    /// several devices sharing it.
    pub fn gpus(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("Device::gpus", "needs at least one replica"));
        }
        let contexts = (0..n)
            .map(|_| GpuContext::new().map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Device::Replicas(contexts))
    }

    /// This rank's GPU in an MPI job: the adapter `WGTRAIN_ADAPTER` names, or the best one;
    /// where several adapters of that kind match (a machine with several GPUs), the one at
    /// the rank's place on its machine (its local rank, modulo their number).
    #[cfg(feature = "mpi")]
    pub fn mpi(mpi: &crate::mpi::Mpi) -> Result<Self> {
        let options = crate::gpu::GpuOptions {
            ordinal: Some(mpi.local_rank()),
            ..Default::default()
        };
        Ok(Device::Mpi {
            mpi: mpi.clone(),
            gpu: Arc::new(GpuContext::with_options(options)?),
        })
    }

    /// A readable name: the adapter, or "CPU reference".
    pub fn name(&self) -> String {
        match self {
            Device::Gpu(ctx) => {
                format!("{} ({:?})", ctx.adapter_name(), ctx.adapter_info().backend)
            }
            Device::Cpu => "CPU reference".into(),
            Device::Replicas(ctxs) => match ctxs.first() {
                Some(ctx) => format!(
                    "{} replicas on {} ({:?})",
                    ctxs.len(),
                    ctx.adapter_name(),
                    ctx.adapter_info().backend
                ),
                None => "no replicas".into(),
            },
            #[cfg(feature = "mpi")]
            Device::Mpi { mpi, gpu } => format!(
                "rank {} of {} on {} ({:?})",
                mpi.rank(),
                mpi.size(),
                gpu.adapter_name(),
                gpu.adapter_info().backend
            ),
        }
    }
}

/// What [`Model::predict`] returns: the outputs (class probabilities: softmax of the logits
/// for cross-entropy, sigmoid for binary cross-entropy on logits; the outputs themselves
/// otherwise, in the targets' units), the predicted class of each sample (the argmax, or
/// `p > 0.5` for a single output) and the class names.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// One row per sample: class probabilities (softmax or sigmoid applied) for a
    /// classifier, values in the targets' own units for regression; with several outputs,
    /// each output's values in turn ([`Model::output_widths`]).
    pub outputs: Array2<f32>,
    /// The most likely class per sample (the largest output, or output > 0.5 for one
    /// output); empty for a model with several outputs, where one class per sample has no
    /// meaning.
    pub classes: Vec<u32>,
    /// The names of the classes of the data the model was fitted on (empty when they had
    /// none): `class_names[classes[i]]` names sample i's class.
    pub class_names: Vec<String>,
}

impl Prediction {
    /// Sample `i`'s class name, when the classes have names.
    pub fn class_name(&self, i: usize) -> Option<&str> {
        let c = *self.classes.get(i)? as usize;
        self.class_names.get(c).map(String::as_str)
    }
}

/// A named tensor: (checkpoint name, shape, values), as [`Model::weights`] returns them.
pub type Named = (String, Vec<usize>, Vec<f32>);

/// A [`super::Sequential`] or [`Functional`] model compiled with a loss and an optimizer
/// onto a device.
pub struct Model {
    pub(super) network: Functional,
    /// The architecture checkpoints record (a Sequential's in its historic form).
    pub(super) architecture: String,
    /// Values per sample of each input, in order (a sample row holds them in turn).
    input_widths: Vec<usize>,
    /// Values per sample of each output, in order (a prediction row holds them in turn).
    output_widths: Vec<usize>,
    /// Per-input copies of a batch, for models with several inputs.
    input_scratch: Vec<Vec<f32>>,
    pub(super) built: Built,
    labels: NodeId,
    pub(super) exec: Box<dyn Executor>,
    device: Device,
    features: usize,
    classes: usize,
    pub(super) loss: Loss,
    /// Dense targets made from a batch's labels (for the losses that compare with targets).
    targets: Vec<f32>,
    /// Labels made from a batch's one-hot rows (for the softmax cross-entropies).
    label_scratch: Vec<u32>,
    /// The compiled optimizer (its learning rate is the schedules' base).
    pub(super) optimizer: Optimizer,
    /// Epochs trained so far (saved in checkpoints, so a resumed `fit` knows where it is).
    pub(super) epoch: usize,
    /// How inputs are scaled: set by `fit`, used by `evaluate` and `predict`.
    pub(super) normalize: Normalize,
    /// Whether the last `fit` trained on u8 images (scaled by `normalize`), so that numeric
    /// arrays given to `predict_array` are in other units.
    pub(super) fitted_on_pixels: bool,
    /// Numeric data's scaling, fitted by `fit` on its training split and saved with the model.
    pub(super) preprocess: Preprocess,
    /// Class names of the data the model was fitted on (saved with the model).
    pub(super) class_names: Vec<String>,
    /// The figures reported besides the loss.
    pub(super) metrics: Vec<Metric>,
    /// Whether the user chose them (otherwise `fit` picks them from the loss and the data).
    pub(super) metrics_chosen: bool,
    /// The seed parameters and dropout masks were drawn from (checkpoints record it).
    pub(super) seed: u64,
}

/// The feeds of a batch `x` of a model's inputs: `x` itself for one input, else the
/// per-input copies [`Model::split_inputs`] made.
fn input_feeds<'a>(
    built: &Built,
    scratch: &'a [Vec<f32>],
    x: &'a [f32],
) -> Vec<(NodeId, Feed<'a>)> {
    if built.inputs.len() == 1 {
        return vec![(built.inputs[0], Feed::F32(x))];
    }
    built
        .inputs
        .iter()
        .zip(scratch)
        .map(|(&n, v)| (n, Feed::F32(v)))
        .collect()
}

/// The scaling of numeric features and targets a model was fitted with: `predict_array`
/// and `evaluate` apply it, and checkpoints keep it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preprocess {
    pub features: Option<Affine>,
    pub targets: Option<Affine>,
}

impl Model {
    pub(super) fn new(
        network: Functional,
        architecture: String,
        loss: Loss,
        optimizer: Optimizer,
        device: Device,
        seed: u64,
    ) -> Result<Self> {
        // Cross-entropy fuses a final softmax into the loss (build leaves it out).
        let built = network.build(loss.is_softmax_xent(), seed)?;
        let width = |graph: &crate::graph::Graph, n: NodeId| -> usize {
            graph.concrete_shapes(1)[graph.index(n)].iter().product()
        };
        let input_widths: Vec<usize> = built
            .inputs
            .iter()
            .map(|&n| width(&built.graph, n))
            .collect();
        let output_widths: Vec<usize> = built
            .outputs
            .iter()
            .map(|&n| width(&built.graph, n))
            .collect();
        if output_widths.len() > 1 && loss.is_softmax_xent() {
            return Err(Error::invalid(
                "compile",
                format!(
                    "{loss:?} trains one output against class labels; this model has {} \
                     outputs (train several outputs with a pointwise loss such as \
                     MeanSquaredError or BinaryCrossentropy over their values in turn)",
                    output_widths.len()
                ),
            ));
        }
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
        check_loss_fits_outputs(&graph, &built.outputs, loss, classes)?;
        let (labels, loss_node) = if loss.is_softmax_xent() {
            let labels = graph.labels("labels");
            let smoothing = match loss {
                Loss::CategoricalCrossentropy { label_smoothing } => label_smoothing,
                _ => 0.0,
            };
            let xent = graph
                .softmax_xent_smoothed(built.logits, labels, smoothing)
                .map_err(|e| match e {
                    Error::InvalidArgument { detail, .. } => Error::invalid("compile", detail),
                    other => other,
                })?;
            (labels, xent)
        } else {
            let kind = match loss {
                Loss::BinaryCrossentropy { from_logits: true } => {
                    PointwiseLoss::BinaryCrossEntropyWithLogits
                }
                Loss::BinaryCrossentropy { from_logits: false } => {
                    PointwiseLoss::BinaryCrossEntropy
                }
                Loss::MeanAbsoluteError => PointwiseLoss::MeanAbsoluteError,
                Loss::Huber => PointwiseLoss::Huber,
                _ => PointwiseLoss::MeanSquaredError,
            };
            let targets = graph.input("targets", &[Dim::Batch, Dim::Fixed(classes)]);
            (targets, graph.loss(kind, built.logits, targets)?)
        };
        let features = input_widths.iter().sum();
        let exec: Box<dyn Executor> = match &device {
            Device::Gpu(ctx) => Box::new(GpuExecutor::new(ctx, graph, loss_node, optimizer, seed)?),
            Device::Cpu => Box::new(CpuExecutor::new(graph, loss_node, optimizer, seed)?),
            Device::Replicas(ctxs) => {
                if ctxs.is_empty() {
                    return Err(Error::invalid(
                        "Device::Replicas",
                        "needs at least one context",
                    ));
                }
                let replicas = ctxs
                    .iter()
                    .map(|ctx| -> Result<Box<dyn Executor + Send>> {
                        Ok(Box::new(GpuExecutor::new(
                            ctx,
                            graph.clone(),
                            loss_node,
                            optimizer,
                            seed,
                        )?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Box::new(Replicated::new(replicas)?)
            }
            #[cfg(feature = "mpi")]
            Device::Mpi { mpi, gpu } => {
                let local = Box::new(GpuExecutor::new(gpu, graph, loss_node, optimizer, seed)?);
                Box::new(crate::mpi::MpiExecutor::new(local, mpi)?)
            }
        };
        Ok(Model {
            network,
            architecture,
            input_scratch: vec![Vec::new(); input_widths.len()],
            input_widths,
            output_widths,
            built,
            labels,
            exec,
            device,
            features,
            classes,
            optimizer,
            loss,
            targets: Vec::new(),
            label_scratch: Vec::new(),
            epoch: 0,
            normalize: Normalize::Unit,
            fitted_on_pixels: false,
            preprocess: Preprocess::default(),
            class_names: Vec::new(),
            metrics: if loss.is_regression() {
                vec![Metric::Mae]
            } else {
                vec![Metric::Accuracy]
            },
            metrics_chosen: false,
            seed,
        })
    }

    /// Unless chosen with [`Model::set_metrics`]: accuracy for class labels and for the
    /// cross-entropies, MAE for a regression loss against real-valued targets.
    pub(super) fn default_metrics(&mut self, targets: TargetKind) {
        if !self.metrics_chosen {
            let values = matches!(targets, TargetKind::Values(_));
            self.metrics = if self.loss.is_regression() && values {
                vec![Metric::Mae]
            } else {
                vec![Metric::Accuracy]
            };
        }
    }

    /// Chooses the figures reported besides the loss (Keras' `metrics=[...]`): by default
    /// accuracy for the cross-entropies and for class labels, MAE for a regression loss
    /// against real-valued targets. The error
    /// metrics (MAE, RMSE, R^2) need a loss against dense targets (not the sparse
    /// cross-entropy).
    pub fn set_metrics(&mut self, metrics: &[Metric]) -> Result<()> {
        if let Some(m) = metrics.iter().find(|m| **m != Metric::Accuracy) {
            if self.loss.is_softmax_xent() {
                return Err(Error::invalid(
                    "metrics",
                    format!(
                        "{} compares outputs with real-valued targets; {:?} trains against class \
                         indices (use accuracy)",
                        m.name(),
                        self.loss
                    ),
                ));
            }
        }
        let mut seen = Vec::new();
        for m in metrics {
            if seen.contains(m) {
                return Err(Error::invalid(
                    "metrics",
                    format!("{} is listed twice", m.name()),
                ));
            }
            seen.push(*m);
        }
        self.metrics = seen;
        self.metrics_chosen = true;
        Ok(())
    }

    /// [`Model::set_metrics`], as a builder.
    pub fn with_metrics(mut self, metrics: &[Metric]) -> Result<Self> {
        self.set_metrics(metrics)?;
        Ok(self)
    }

    /// The figures reported besides the loss.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Inputs per sample.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Outputs per sample (classes, or target values).
    pub fn outputs(&self) -> usize {
        self.classes
    }

    /// The loss the model was compiled with.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// The numeric scaling fitted by `fit` (or restored by `load`).
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The class names of the data the model was fitted on (empty when they had none).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The reported figures of `m`, in the order of [`Model::metrics`], with MAE and RMSE in
    /// the targets' own units when the targets were scaled.
    pub(super) fn named(&self, m: &Metrics) -> Vec<(Metric, f32)> {
        let m = self.in_target_units(*m);
        self.metrics
            .iter()
            .map(|&metric| {
                let e = m.errors;
                let v = match metric {
                    Metric::Accuracy => m.accuracy,
                    Metric::Mae => e.map_or(f32::NAN, |e| e.mae),
                    Metric::Rmse => e.map_or(f32::NAN, |e| e.rmse),
                    Metric::R2 => e.and_then(|e| e.r2).unwrap_or(f32::NAN),
                };
                (metric, v)
            })
            .collect()
    }

    /// `m` with MAE and RMSE in the targets' own units: with one scaled target column the
    /// scaling is one affine map, so errors divide by its |scale| (R^2 does not change).
    fn in_target_units(&self, mut m: Metrics) -> Metrics {
        if let (Some(e), Some(a)) = (&mut m.errors, &self.preprocess.targets) {
            if a.width() == 1 {
                e.mae /= a.scale[0].abs();
                e.rmse /= a.scale[0].abs();
            }
        }
        m
    }

    /// A copy for inference with batch normalization folded into the convolution or dense
    /// layer before it (each such pair, including those in residual blocks): with
    /// `s = gamma / sqrt(running_var + eps)`, the layer's weights for output channel `c` are
    /// scaled by `s[c]` and its bias becomes `(bias - running_mean) * s + beta`, computed in
    /// f64. The copy computes what this model computes in evaluation mode (to rounding)
    /// with one pass less per pair; `conv_bench -- --bn-inference R` measures the gain. It
    /// keeps the preprocessing, metrics and class names; training it trains the network
    /// without normalization. An error when no batch normalization can be folded.
    pub fn fold_batch_norm(&self) -> Result<Model> {
        let (network, folds) = self.network.fold_batch_norm()?;
        let weights = self.weights()?;
        let get = |name: &str| weights.iter().find(|w| w.0 == name);
        let folds: Vec<_> = folds
            .into_iter()
            .filter(|f| get(&format!("{}.weight", f.layer)).is_some())
            .collect();
        if folds.is_empty() {
            return Err(Error::invalid(
                "fold_batch_norm",
                "no batch normalization directly follows a convolution or dense layer \
                 without activation (or the layer is shared, or something else reads it)",
            ));
        }
        let architecture = network.architecture();
        let mut folded = Model::new(
            network,
            architecture,
            self.loss,
            self.optimizer,
            self.device.clone(),
            0,
        )?;
        let mut values = Vec::new();
        for (name, _, _) in folded.weights()? {
            let w = get(&name).ok_or_else(|| {
                Error::invalid(
                    "fold_batch_norm",
                    format!("`{name}` of the folded model has no source weight"),
                )
            })?;
            values.push(w.clone());
        }
        // A batch normalization layer's own epsilon; residual blocks use PyTorch's 1e-5.
        let eps = |bn: &str| -> f64 { self.network.batch_norm_eps(bn).map_or(1e-5, f64::from) };
        for f in &folds {
            let part = |layer: &str, p: &str| -> Result<Vec<f32>> {
                get(&format!("{layer}.{p}"))
                    .map(|w| w.2.clone())
                    .ok_or_else(|| Error::invalid("fold_batch_norm", format!("no `{layer}.{p}`")))
            };
            let (gamma, beta) = (part(&f.bn, "gamma")?, part(&f.bn, "beta")?);
            let (mean, var) = (part(&f.bn, "running_mean")?, part(&f.bn, "running_var")?);
            let e = eps(&f.bn);
            let scale: Vec<f64> = gamma
                .iter()
                .zip(&var)
                .map(|(&g, &v)| g as f64 / (v as f64 + e).sqrt())
                .collect();
            let channels = scale.len();
            let slot = |values: &[Named], name: String| values.iter().position(|w| w.0 == name);
            let wi = slot(&values, format!("{}.weight", f.layer)).expect("checked above");
            // Dense weights are (in, out): the channel is the column. Convolution weights are
            // (out, in, kh, kw): the channel is the leading axis.
            let per = values[wi].2.len() / channels;
            for (i, x) in values[wi].2.iter_mut().enumerate() {
                let c = if f.dense { i % channels } else { i / per };
                *x = (*x as f64 * scale[c]) as f32;
            }
            let bi =
                slot(&values, format!("{}.bias", f.layer)).expect("every layer here has a bias");
            for (c, b) in values[bi].2.iter_mut().enumerate() {
                *b = ((*b as f64 - mean[c] as f64) * scale[c] + beta[c] as f64) as f32;
            }
        }
        folded.set_weights(&values)?;
        folded.preprocess = self.preprocess.clone();
        folded.normalize = self.normalize.clone();
        folded.class_names = self.class_names.clone();
        folded.metrics = self.metrics.clone();
        folded.metrics_chosen = self.metrics_chosen;
        folded.epoch = self.epoch;
        Ok(folded)
    }

    /// The model's layers and how they connect.
    pub fn network(&self) -> &Functional {
        &self.network
    }

    /// The architecture checkpoints record and `load` compares.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Values per sample of each input: a sample row holds them in turn.
    pub fn input_widths(&self) -> &[usize] {
        &self.input_widths
    }

    /// Values per sample of each output: a prediction row holds them in turn.
    pub fn output_widths(&self) -> &[usize] {
        &self.output_widths
    }

    /// The feeds of a batch of `len` rows `x`: the one input, or each input's columns.
    fn split_inputs(&mut self, len: usize, x: &[f32]) {
        if self.input_widths.len() < 2 {
            return;
        }
        let total: usize = self.input_widths.iter().sum();
        let mut off = 0;
        for (k, &w) in self.input_widths.iter().enumerate() {
            let buf = &mut self.input_scratch[k];
            buf.clear();
            buf.extend(x.chunks(total).take(len).flat_map(|row| &row[off..off + w]));
            off += w;
        }
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

    /// Checks `data` and that its targets fit this model's outputs and loss.
    fn check<S: Samples + ?Sized>(&self, data: &S) -> Result<()> {
        data.check(&LoaderConfig::new(1))?;
        if data.is_empty() {
            return Err(Error::invalid("fit", "the dataset holds no samples"));
        }
        if data.sample_len() != self.features {
            return Err(Error::Shape {
                op: "fit",
                detail: format!(
                    "the model takes {} inputs per sample, the data has {}",
                    self.features,
                    data.sample_len()
                ),
            });
        }
        self.check_layout("fit", data)?;
        match data.target_kind() {
            TargetKind::Classes(n) => {
                if self.classes == 1 && n > 2 {
                    return Err(Error::Shape {
                        op: "fit",
                        detail: format!(
                            "a model with one output learns two classes (labels 0 and 1), the data has {n}"
                        ),
                    });
                }
                if self.classes > 1 && n > self.classes {
                    return Err(Error::Shape {
                        op: "fit",
                        detail: format!(
                            "the model outputs {} classes, the data has {n}",
                            self.classes
                        ),
                    });
                }
            }
            TargetKind::Values(width) => {
                if width != self.classes {
                    return Err(Error::Shape {
                        op: "fit",
                        detail: format!(
                            "the model has {} outputs, the targets have {width} values per sample",
                            self.classes
                        ),
                    });
                }
                let values = match data.as_arrays().map(|a| &a.targets) {
                    Some(Targets::Values { values, .. }) => &values[..],
                    _ => &[],
                };
                self.check_target_values(values, width)?;
            }
        }
        Ok(())
    }

    /// Real-valued targets against what the loss can learn from them.
    fn check_target_values(&self, values: &[f32], width: usize) -> Result<()> {
        let at = |i: usize| format!("sample {} (target {})", i / width, i % width);
        match self.loss {
            Loss::SparseCategoricalCrossentropy => Err(Error::invalid(
                "fit",
                format!(
                    "SparseCategoricalCrossentropy takes class indices; these targets are rows \
                     of {width} values (use CategoricalCrossentropy for one-hot rows)"
                ),
            )),
            Loss::CategoricalCrossentropy { .. } => {
                for (r, row) in values.chunks(width).enumerate() {
                    let ones = row.iter().filter(|&&v| v == 1.0).count();
                    if ones != 1 || row.iter().any(|&v| v != 0.0 && v != 1.0) {
                        return Err(Error::invalid(
                            "fit",
                            format!(
                                "CategoricalCrossentropy needs one-hot target rows; sample {r} is \
                                 {row:?} (soft labels are not supported)"
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Loss::BinaryCrossentropy { .. } => {
                match values.iter().position(|v| !(0.0..=1.0).contains(v)) {
                    Some(i) => Err(Error::invalid(
                        "fit",
                        format!(
                            "binary cross-entropy needs targets in [0, 1]; {} is {}",
                            at(i),
                            values[i]
                        ),
                    )),
                    None => Ok(()),
                }
            }
            Loss::MeanSquaredError | Loss::MeanAbsoluteError | Loss::Huber => Ok(()),
        }
    }

    fn run_batch(
        &mut self,
        train: bool,
        len: usize,
        x: &[f32],
        y: &[u32],
        t: &[f32],
    ) -> Result<()> {
        let classes = self.classes;
        self.split_inputs(len, x);
        let labels = if self.loss.is_softmax_xent() {
            if t.is_empty() {
                Feed::U32(y)
            } else {
                // One-hot rows (checked before training): the label is where the 1 is.
                self.label_scratch.clear();
                self.label_scratch.extend(
                    t.chunks(classes)
                        .map(|row| row.iter().position(|&v| v == 1.0).unwrap_or(0) as u32),
                );
                Feed::U32(&self.label_scratch)
            }
        } else if !t.is_empty() {
            Feed::F32(t)
        } else {
            // One output: the label itself; several: one-hot.
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
        let mut feeds = input_feeds(&self.built, &self.input_scratch, x);
        feeds.push((self.labels, labels));
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

    /// The loader configuration that scales `data` as this model does (pixels by
    /// `normalize`, numeric arrays by the fitted preprocessing).
    pub(super) fn scaling_config<S: Samples + ?Sized>(
        &self,
        data: &S,
        batch_size: usize,
        normalize: &Normalize,
    ) -> LoaderConfig {
        let numeric = data.as_arrays().is_some();
        let values = matches!(data.target_kind(), TargetKind::Values(_));
        LoaderConfig {
            normalize: if numeric {
                Normalize::Unit
            } else {
                normalize.clone()
            },
            feature_scaling: self
                .preprocess
                .features
                .clone()
                .filter(|_| numeric)
                .map(Arc::new),
            target_scaling: self
                .preprocess
                .targets
                .clone()
                .filter(|_| values)
                .map(Arc::new),
            shard: self.exec.shard(),
            ..LoaderConfig::new(batch_size)
        }
    }

    /// Whether this model prints and writes files: always, except on ranks other than 0 of
    /// a distributed job.
    pub fn is_root(&self) -> bool {
        self.exec.shard().is_none_or(|s| s.rank == 0)
    }

    /// Metrics over the samples `indices` of `data`, accumulated on the device.
    fn evaluate_indices<S: Samples + ?Sized>(
        &mut self,
        data: &S,
        indices: Vec<usize>,
        batch_size: usize,
        normalize: &Normalize,
    ) -> Result<Metrics> {
        self.take_metrics()?;
        let cfg = LoaderConfig {
            shuffle: false,
            ..self.scaling_config(data, batch_size, normalize)
        };
        std::thread::scope(|scope| {
            let mut loader = Loader::scoped(scope, data, Some(indices), cfg)?;
            while let Some(batch) = loader.next_batch() {
                let batch = batch?;
                self.run_batch(
                    false,
                    batch.len,
                    &batch.inputs,
                    &batch.labels,
                    &batch.targets,
                )?;
                loader.recycle(batch);
            }
            self.take_metrics()
        })
    }

    /// Checks that `data`'s samples have the model's input shape, not only its size: a model
    /// with a flat input takes any shape of that size, and axes of size 1 do not count, but
    /// (32, 32, 3) images are not (3, 32, 32) ones. Channels-last data for a channels-first
    /// model is named as such, with the fix.
    fn check_layout<S: Samples + ?Sized>(&self, op: &'static str, data: &S) -> Result<()> {
        let (model, given) = match self.network.input_shapes() {
            [model] => (model.as_slice(), data.sample_shape()),
            _ => return Ok(()),
        };
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if model.len() < 2 || given.len() < 2 || squeeze(model) == squeeze(&given) {
            return Ok(());
        }
        let mut detail = format!(
            "the model takes samples of shape {model:?}, the data's are {given:?} (the same \
             number of values in another layout)"
        );
        if let (&[h, w, c], true) = (model, self.network.channels_last()) {
            if given == [c, h, w] {
                detail.push_str(&format!(
                    "; the model takes channels-last images, (height, width, channels) (it \
                     starts with channels_last()), and the data are channels first: give them \
                     as (n, {h}, {w}, {c}), or drop channels_last() from the model"
                ));
            }
        } else if let &[c, h, w] = model {
            if given == [h, w, c] {
                detail.push_str(&format!(
                    "; the data are channels last, (height, width, channels) as Keras stores \
                     images, and the model takes channels first, (channels, height, width): \
                     transpose the array before making the dataset, e.g. \
                     x.permuted_axes([0, 3, 1, 2]).as_standard_layout() for (n, {h}, {w}, {c}), \
                     or take Keras' layout in the model with Sequential::new(&[{h}, {w}, \
                     {c}]).channels_last()"
                ));
            }
        }
        Err(Error::Shape { op, detail })
    }

    /// Mean loss, accuracy and (against real-valued targets) error figures over `data`, with
    /// inputs scaled as the last `fit` scaled them (x / 255 for images before any fit; numeric
    /// arrays by the fitted preprocessing). MAE and RMSE are in the targets' own units.
    pub fn evaluate<S: Samples + ?Sized>(
        &mut self,
        data: &S,
        batch_size: usize,
    ) -> Result<Metrics> {
        if batch_size == 0 {
            return Err(Error::invalid("evaluate", "batch_size is 0"));
        }
        let result = self.check(data).and_then(|_| {
            self.exec.agree("samples to evaluate", data.len() as u64)?;
            let all = (0..data.len()).collect();
            let normalize = self.normalize.clone();
            self.evaluate_indices(data, all, batch_size, &normalize)
        });
        if let Err(e) = &result {
            self.exec.abandon(e);
        }
        Ok(self.in_target_units(result?))
    }

    /// The model's outputs for every sample of `data`, in order, with the inputs scaled
    /// exactly as `fit` and `evaluate` scale them (the same loader: pixels by the fitted
    /// `normalize`, numeric arrays by the fitted preprocessing), regression outputs back in
    /// the targets' own units, and the class names of the data the model was fitted on.
    /// Targets in `data` are ignored. Keras' `model.predict(x)`.
    pub fn predict<S: Samples + ?Sized>(&mut self, data: &S) -> Result<Prediction> {
        data.check(&LoaderConfig::new(1))?;
        if data.sample_len() != self.features {
            return Err(Error::Shape {
                op: "predict",
                detail: format!(
                    "the model takes {} inputs per sample, the data has {}",
                    self.features,
                    data.sample_len()
                ),
            });
        }
        self.check_layout("predict", data)?;
        if data.is_empty() {
            return self.prediction(Vec::new(), 0);
        }
        let cfg = LoaderConfig {
            shuffle: false,
            // Every sample, on every rank: prediction is local.
            shard: None,
            ..self.scaling_config(data, PREDICT_BATCH, &self.normalize.clone())
        };
        let mut outputs = Vec::with_capacity(data.len() * self.classes);
        std::thread::scope(|scope| -> Result<()> {
            let all = (0..data.len()).collect();
            let mut loader = Loader::scoped(scope, data, Some(all), cfg)?;
            while let Some(batch) = loader.next_batch() {
                let batch = batch?;
                outputs.extend(self.predict_scaled(&batch.inputs, batch.len)?);
                loader.recycle(batch);
            }
            Ok(())
        })?;
        self.prediction(outputs, data.len())
    }

    /// [`Model::predict`] for numeric features `x` (first axis: samples; the rest one
    /// sample's shape, as `fit` took them), with no targets: scaled by the fitted
    /// preprocessing, outputs in the targets' own units. A flat slice of `n` samples is
    /// `ndarray::ArrayView2::from_shape((n, features), &slice)`.
    pub fn predict_array<S, D>(&mut self, x: &ArrayBase<S, D>) -> Result<Prediction>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        if self.fitted_on_pixels {
            return Err(Error::invalid(
                "predict_array",
                format!(
                    "this model was fitted on u8 images, which fit scaled by {:?}; predict on an \
                     image dataset with `predict(&data)` so they are scaled the same way",
                    self.normalize
                ),
            ));
        }
        let n = x.shape().first().copied().unwrap_or(0);
        let data = ArrayDataset::new(
            x,
            Targets::Classes {
                labels: vec![0; n],
                classes: 1,
            },
        )
        .map_err(|e| match e {
            Error::InvalidArgument { detail, .. } => Error::invalid("predict_array", detail),
            other => other,
        })?;
        if data.sample_shape.iter().product::<usize>() != self.features {
            return Err(Error::Shape {
                op: "predict_array",
                detail: format!(
                    "the model takes samples of {} inputs (an array of shape (n, {})), got shape \
                     {:?}",
                    self.features,
                    self.features,
                    x.shape()
                ),
            });
        }
        self.predict(&data)
    }

    /// How `evaluate` and `predict` scale image inputs.
    pub fn normalize(&self) -> &Normalize {
        &self.normalize
    }

    /// A [`Prediction`] of `n` samples from outputs in the model's own (scaled) units.
    fn prediction(&self, mut outputs: Vec<f32>, n: usize) -> Result<Prediction> {
        let classes = self.classes;
        let several = self.output_widths.len() > 1;
        let best = outputs
            .chunks(classes)
            .filter(|_| !several)
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
        if let Some(a) = &self.preprocess.targets {
            a.invert(&mut outputs);
        }
        Ok(Prediction {
            outputs: Array2::from_shape_vec((n, classes), outputs).map_err(|e| Error::Shape {
                op: "predict",
                detail: e.to_string(),
            })?,
            classes: best,
            class_names: self.class_names.clone(),
        })
    }

    /// The outputs for `inputs`: `n` samples of the model's input size, already scaled as
    /// the loader scales them (probabilities for the cross-entropies).
    pub(crate) fn predict_scaled(&mut self, inputs: &[f32], n: usize) -> Result<Vec<f32>> {
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
        for start in (0..n).step_by(PREDICT_BATCH) {
            let len = PREDICT_BATCH.min(n - start);
            let x = &inputs[start * self.features..(start + len) * self.features];
            let zero_labels = vec![0u32; len];
            let zero_targets = vec![0f32; len * classes];
            let targets = if self.loss.is_softmax_xent() {
                Feed::U32(&zero_labels)
            } else {
                Feed::F32(&zero_targets)
            };
            self.split_inputs(len, x);
            let mut feeds = input_feeds(&self.built, &self.input_scratch, x);
            feeds.push((self.labels, targets));
            let outputs = self.exec.forward(len, &feeds, self.built.logits)?;
            match self.loss {
                Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy { .. } => {
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
        // Local to this rank in a distributed job: nothing here may be a collective.
        self.exec.reset_metrics()?;
        Ok(probabilities)
    }
}

/// Refuses a loss that cannot train on what the model outputs: a softmax cross-entropy over
/// one output (its softmax is always 1, so the loss is constant), and binary cross-entropy on
/// outputs that are not probabilities (`from_logits: false` without a final sigmoid or
/// softmax), which Keras accepts and trains on garbage.
fn check_loss_fits_outputs(
    graph: &crate::graph::Graph,
    outputs: &[NodeId],
    loss: Loss,
    classes: usize,
) -> Result<()> {
    use crate::graph::{ElementwiseOp, LossOp, Op};
    use crate::ops::Activation;
    if loss.is_softmax_xent() && classes == 1 {
        return Err(Error::invalid(
            "compile",
            format!(
                "{loss:?} over one output: a softmax over one value is always 1, so the loss \
                 cannot change; for two classes end the model in one output with \
                 BinaryCrossentropy, or in two outputs"
            ),
        ));
    }
    if loss == (Loss::BinaryCrossentropy { from_logits: false }) {
        for &out in outputs {
            let probabilities = matches!(
                graph.node(out).op,
                Op::Elementwise(ElementwiseOp::Activation(Activation::Sigmoid))
                    | Op::Loss(LossOp::Softmax)
            );
            if !probabilities {
                return Err(Error::invalid(
                    "compile",
                    format!(
                        "BinaryCrossentropy {{ from_logits: false }} expects probabilities, but \
                         output `{}` has no sigmoid: end the model with \
                         .activation(Activation::Sigmoid), or train on the raw outputs with \
                         BinaryCrossentropy {{ from_logits: true }}",
                        graph.node(out).name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Samples per forward pass of `predict`.
const PREDICT_BATCH: usize = 256;

impl Functional {
    /// Compiles the model with a loss and an optimizer onto `device`; parameters are
    /// initialized from `seed`.
    pub fn compile(
        self,
        loss: Loss,
        optimizer: Optimizer,
        device: Device,
        seed: u64,
    ) -> Result<Model> {
        let arch = self.architecture();
        Model::new(self, arch, loss, optimizer, device, seed)
    }
}
