//! Keras-style models: a `Sequential` stack of layers that only adds nodes to a graph,
//! compiled with a loss and an optimizer onto a device, then `fit`, `evaluate`, `predict`.
//!
//! ```no_run
//! use wgtrain::nn::{Device, Loss, Sequential, Dense, FitConfig};
//! use wgtrain::ops::Activation;
//! use wgtrain::optim::{AdamConfig, Optimizer};
//!
//! let model = Sequential::new(&[28, 28])
//!     .flatten()
//!     .dense(Dense::new(128).activation(Activation::Relu))
//!     .dense(Dense::new(10));
//! println!("{}", model.summary());
//! let device = Device::gpu()?;
//! let mut model = model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::Adam(AdamConfig::adam(1e-3)), device, 0)?;
//! # let (train, test): (wgtrain::data::Dataset, wgtrain::data::Dataset) = unimplemented!();
//! let history = model.fit(&train, &FitConfig::new(3, 128))?;
//! let result = model.evaluate(&test, 512)?;
//! println!("test accuracy {:.3}", result.accuracy);
//! # Ok::<(), wgtrain::Error>(())
//! ```

mod checkpoint;

pub use checkpoint::{load_model, load_model_on};
mod functional;
mod layer;

pub use layer::{Conv2d, Dense, Layer, Permutation, Residual};

pub use functional::{add, concatenate, multiply, Functional, Input, LayerRef, Tensor};

mod model;

pub use crate::optim::LrSchedule;
pub use model::{
    Device, EarlyStopping, EpochLog, FitConfig, History, Metric, Model, Monitor, Named, Prediction,
    Preprocess,
};

use crate::error::{Error, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::Activation;

/// What a model is trained to minimize. Datasets hold integer labels; the dense losses
/// compare the outputs with targets made from them (one-hot, or the label itself for a
/// single output).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Loss {
    /// Softmax cross-entropy against integer labels (the model outputs logits, or a final
    /// softmax that training fuses into the loss). Metric: accuracy.
    SparseCategoricalCrossentropy,
    /// Softmax cross-entropy against one-hot targets, smoothed toward the uniform
    /// distribution by `label_smoothing` in [0, 1) (Keras' `label_smoothing`: the target is
    /// `(1 - label_smoothing) * onehot + label_smoothing / classes`; 0 is plain
    /// cross-entropy). With integer labels the one-hot target has a single 1, so this is
    /// computed as the sparse form. Metric: accuracy.
    CategoricalCrossentropy { label_smoothing: f32 },
    /// Binary cross-entropy: one output per sample against labels 0/1 (or several outputs
    /// against one-hot targets). `from_logits: false` expects a final sigmoid.
    /// Metric: binary accuracy.
    BinaryCrossentropy { from_logits: bool },
    /// Mean squared error against real-valued targets ([`crate::data::ArrayDataset`]), or
    /// against the label (one output) or its one-hot row (several) for class labels.
    MeanSquaredError,
    /// Mean absolute error, against targets as [`Loss::MeanSquaredError`] takes them.
    MeanAbsoluteError,
    /// Huber loss with delta 1 (Keras' and PyTorch's default): squared error within 1 of the
    /// target, absolute error beyond; targets as [`Loss::MeanSquaredError`] takes them.
    Huber,
}

impl Loss {
    /// Whether the loss compares outputs with real values (its metrics are errors, not
    /// accuracy, unless asked otherwise).
    pub fn is_regression(&self) -> bool {
        matches!(
            self,
            Loss::MeanSquaredError | Loss::MeanAbsoluteError | Loss::Huber
        )
    }

    fn is_softmax_xent(&self) -> bool {
        matches!(
            self,
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy { .. }
        )
    }
}

/// A stack of layers over an input shape (without the batch dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequential {
    input_shape: Vec<usize>,
    layers: Vec<Layer>,
    /// Parameters whose names contain one of these take no weight decay.
    no_weight_decay: Vec<String>,
}

/// The graph of a model: its inputs, its outputs and its parameters by layer.
#[derive(Debug, Clone)]
pub struct Built {
    pub graph: Graph,
    /// The first input.
    pub input: NodeId,
    /// Every input, in the model's order.
    pub inputs: Vec<NodeId>,
    /// The output, or with several outputs their concatenation (each flattened).
    pub logits: NodeId,
    /// Every output, in the model's order.
    pub outputs: Vec<NodeId>,
    /// (name, node) of every parameter, e.g. `dense_0.weight`.
    pub params: Vec<(String, NodeId)>,
    /// (name, node) of every buffer (non-trainable state), e.g. `batch_norm_0.running_mean`.
    pub buffers: Vec<(String, NodeId)>,
    /// The output of each layer call, in order.
    pub layer_outputs: Vec<NodeId>,
}

impl Sequential {
    /// An empty model for inputs of `input_shape` (e.g. `[28, 28]` or `[784]`).
    pub fn new(input_shape: &[usize]) -> Self {
        Sequential {
            input_shape: input_shape.to_vec(),
            layers: Vec::new(),
            no_weight_decay: Vec::new(),
        }
    }

    /// Appends a layer (Keras' `model.add`).
    pub fn push(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Appends a dense layer.
    pub fn dense(self, d: Dense) -> Self {
        self.push(Layer::Dense(d))
    }

    /// Appends a flatten layer.
    pub fn flatten(self) -> Self {
        self.push(Layer::Flatten)
    }

    /// Takes images in Keras' default layout: the input shape is (height, width, channels)
    /// as `Sequential::new(&[h, w, c])` gave it, and data arrive as (n, h, w, c); the first
    /// layer is `Permute((3, 1, 2))`, which turns each batch channels-first on the device
    /// (no copy on the host). Call it right after `new`.
    pub fn channels_last(self) -> Self {
        self.push(Layer::permute(&[3, 1, 2]))
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Appends a convolution.
    pub fn conv2d(self, c: Conv2d) -> Self {
        self.push(Layer::Conv2d(c))
    }

    /// Appends max pooling over `size` x `size` windows with stride `size`.
    pub fn max_pool2d(self, size: usize) -> Self {
        self.push(Layer::MaxPool2d { size, stride: size })
    }

    /// Appends average pooling over `size` x `size` windows with stride `size`.
    pub fn avg_pool2d(self, size: usize) -> Self {
        self.push(Layer::AvgPool2d { size, stride: size })
    }

    /// Appends global average pooling.
    pub fn global_avg_pool(self) -> Self {
        self.push(Layer::GlobalAvgPool)
    }

    /// Appends layer normalization over the features (Keras' `LayerNormalization()`:
    /// epsilon 1e-3, gamma from 1, beta from 0); its input must be (batch, features).
    pub fn layer_norm(self) -> Self {
        self.push(Layer::LayerNorm { eps: 1e-3 })
    }

    /// The architecture as checkpoints record it: the input shape and each layer's kind,
    /// sizes and activation, separated by `|` (initializers and dropout rates, which do not
    /// change what the weights mean, are left out).
    pub fn architecture(&self) -> String {
        let mut parts = vec![format!("input{:?}", self.input_shape).replace(' ', "")];
        parts.extend(self.layers.iter().map(Layer::architecture));
        parts.join("|")
    }

    /// Exempts from the optimizer's weight decay every parameter whose name contains one of
    /// `names` (Keras' `exclude_from_weight_decay`): `&["bias"]` keeps AdamW or SGD's decay off
    /// the biases. The parameters form their own group ([`crate::optim::ParamOptions`]).
    pub fn exclude_from_weight_decay(mut self, names: &[&str]) -> Self {
        self.no_weight_decay
            .extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Appends batch normalization over the channels (images) or features (after Flatten or
    /// a dense layer), PyTorch's `BatchNorm2d()` / `BatchNorm1d()` defaults: momentum 0.1,
    /// eps 1e-5.
    pub fn batch_norm(self) -> Self {
        self.push(Layer::BatchNorm {
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Appends a residual block ([`Residual`]).
    pub fn residual(self, r: Residual) -> Self {
        self.push(Layer::Residual(r))
    }

    /// ResNet-(6n+2) for small images, as He et al. 2015 built it for CIFAR-10 (n = 3 is
    /// ResNet-20): a 3x3 convolution to 16 channels with batch normalization and ReLU, three
    /// stages of `n` residual blocks with 16, 32 and 64 filters (the second and third stages
    /// start at stride 2), global average pooling and a dense layer to `classes` logits.
    /// The shortcuts that change shape are 1x1 convolutions (the paper's option B; its
    /// CIFAR-10 networks used zero padding, option A), and every convolution has a bias.
    pub fn resnet(input_shape: &[usize], n: usize, classes: usize) -> Self {
        let mut s = Sequential::new(input_shape)
            .conv2d(Conv2d::new(16, 3).same().init(Init::HeNormal))
            .batch_norm()
            .push(Layer::Activation(Activation::Relu));
        for (stage, filters) in [16, 32, 64].into_iter().enumerate() {
            for block in 0..n {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                s = s.residual(Residual::new(filters).stride(stride));
            }
        }
        s.global_avg_pool().dense(Dense::new(classes))
    }

    /// Appends a dropout layer.
    pub fn dropout(self, rate: f32) -> Self {
        self.push(Layer::Dropout(rate))
    }

    /// The same model as a [`Functional`]: one input, each layer called on the previous
    /// layer's output. Merge layers, which take several tensors, are an error here.
    pub fn functional(&self) -> Result<Functional> {
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(Error::invalid(
                "Sequential",
                format!("input shape {:?}", self.input_shape),
            ));
        }
        if let Some((i, l)) = self.layers.iter().enumerate().find(|(_, l)| l.is_merge()) {
            return Err(Error::invalid(
                "Sequential",
                format!(
                    "layer {i} ({}) merges several tensors; build the model with the functional \
                     API (nn::Input, nn::Functional)",
                    l.kind()
                ),
            ));
        }
        let input = Input::new(&self.input_shape);
        let mut h = input.clone();
        for layer in &self.layers {
            h = layer.on(&h);
        }
        let mut f = Functional::trace(&[&input], &[&h], true)?;
        f.no_weight_decay = self.no_weight_decay.clone();
        Ok(f)
    }

    /// The graph of the model up to its logits (a final softmax left out when `fuse_softmax`);
    /// dropout layer `k` draws its masks from `seed + k`.
    pub fn build(&self, fuse_softmax: bool, seed: u64) -> Result<Built> {
        self.functional()?.build(fuse_softmax, seed)
    }

    /// A Keras-like table of layers, output shapes and parameter counts (or, for a model
    /// whose shapes do not fit, the error naming the layer).
    pub fn summary(&self) -> String {
        match self.functional() {
            Ok(f) => f.summary(),
            Err(e) => format!("the model does not build: {e}\n"),
        }
    }

    /// Compiles the model with a loss and an optimizer onto `device`; parameters are
    /// initialized from `seed`.
    pub fn compile(
        self,
        loss: Loss,
        optimizer: crate::optim::Optimizer,
        device: Device,
        seed: u64,
    ) -> Result<Model> {
        let arch = self.architecture();
        Model::new(self.functional()?, arch, loss, optimizer, device, seed)
    }
}
