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

pub use checkpoint::Named;
mod model;

pub use crate::optim::LrSchedule;
pub use model::{
    Device, EarlyStopping, EpochLog, FitConfig, History, Metric, Model, Monitor, Prediction,
    Preprocess,
};

use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Init, NodeId};
use crate::ops::Activation;

/// A fully connected layer: `activation(x W + b)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dense {
    pub units: usize,
    pub activation: Option<Activation>,
    /// The weight initializer (Glorot uniform, as in Keras, by default).
    pub init: Init,
}

impl Dense {
    /// `units` outputs, no activation.
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            activation: None,
            init: Init::GlorotUniform,
        }
    }

    /// Applies `act` to the outputs.
    pub fn activation(mut self, act: Activation) -> Self {
        self.activation = Some(act);
        self
    }

    /// Another weight initializer.
    pub fn init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }
}

/// A 2-D convolution over (channels, height, width) inputs: `filters` output channels,
/// `kernel` x `kernel` windows, then an optional activation. Weights are (filters, channels,
/// kernel, kernel), as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2d {
    pub filters: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Zero padding on every side (0 is Keras' "valid").
    pub padding: usize,
    pub activation: Option<Activation>,
    pub init: Init,
}

impl Conv2d {
    /// `filters` channels of `kernel` x `kernel`, stride 1, no padding, Glorot uniform.
    pub fn new(filters: usize, kernel: usize) -> Self {
        Conv2d {
            filters,
            kernel,
            stride: 1,
            padding: 0,
            activation: None,
            init: Init::GlorotUniform,
        }
    }

    /// Moves the window by `stride`.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Pads every side with `padding` zeros.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Keras' "same" padding for odd kernels at stride 1: the output keeps the input's size.
    pub fn same(self) -> Self {
        let k = self.kernel;
        self.padding(k / 2)
    }

    /// Applies `act` to the outputs.
    pub fn activation(mut self, act: Activation) -> Self {
        self.activation = Some(act);
        self
    }

    /// Another weight initializer.
    pub fn init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }
}

/// A residual block of two 3x3 convolutions (He et al. 2015, "basic block"):
/// `relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`, where the first convolution moves by
/// `stride` and the shortcut is `x` itself when the shape is kept, else a 1x1 convolution
/// with that stride followed by batch normalization (the paper's option B). Convolutions
/// are He-normal initialized; batch normalization takes PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Residual {
    pub filters: usize,
    pub stride: usize,
    /// Batch normalization after each convolution (true by default).
    pub batch_norm: bool,
}

impl Residual {
    /// `filters` output channels at stride 1, with batch normalization.
    pub fn new(filters: usize) -> Self {
        Residual {
            filters,
            stride: 1,
            batch_norm: true,
        }
    }

    /// The same block without batch normalization (for comparisons, or where a batch is too
    /// small for batch statistics).
    pub fn without_batch_norm(mut self) -> Self {
        self.batch_norm = false;
        self
    }

    /// Moves the first convolution (and the shortcut) by `stride`: 2 halves height and width.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
}

/// A layer of a [`Sequential`] model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    Dense(Dense),
    Activation(Activation),
    /// Softmax over the last axis (a final softmax is fused into the loss while training).
    Softmax,
    /// (batch, d1, d2, ...) to (batch, d1 * d2 * ...).
    Flatten,
    /// Zeroes each input with this probability while training and scales the rest by
    /// `1 / (1 - rate)`; the identity when evaluating. Masks are seeded from the model's seed.
    Dropout(f32),
    Conv2d(Conv2d),
    /// Max pooling over `size` x `size` windows moved by `stride`.
    MaxPool2d {
        size: usize,
        stride: usize,
    },
    /// Average pooling over `size` x `size` windows moved by `stride`.
    AvgPool2d {
        size: usize,
        stride: usize,
    },
    /// The mean over all positions: (channels, h, w) to (channels).
    GlobalAvgPool,
    /// Layer normalization over the features of (batch, features) with a learned scale
    /// (`gamma`, starting at 1) and shift (`beta`, starting at 0); `eps` is added to the
    /// variance ([`Sequential::layer_norm`] uses Keras' 1e-3).
    LayerNorm {
        eps: f32,
    },
    /// Batch normalization over the channels of (batch, channels, h, w) or the features of
    /// (batch, features), with a learned scale (`gamma`, starting at 1) and shift (`beta`,
    /// starting at 0) and running statistics (`running_mean` from 0, `running_var` from 1)
    /// that training moves by `momentum` and evaluation uses. PyTorch's convention
    /// ([`Sequential::batch_norm`]: momentum 0.1, eps 1e-5); Keras' `momentum=0.99` is
    /// PyTorch's 0.01.
    BatchNorm {
        eps: f32,
        momentum: f32,
    },
    /// A residual block ([`Residual`]).
    Residual(Residual),
}

/// What a model is trained to minimize. Datasets hold integer labels; the dense losses
/// compare the outputs with targets made from them (one-hot, or the label itself for a
/// single output).
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// The graph of a model: its input, its output (logits) and its parameters by layer.
#[derive(Debug, Clone)]
pub struct Built {
    pub graph: Graph,
    pub input: NodeId,
    pub logits: NodeId,
    /// (name, node) of every parameter, e.g. `dense_0.weight`.
    pub params: Vec<(String, NodeId)>,
    /// (name, node) of every buffer (non-trainable state), e.g. `batch_norm_0.running_mean`.
    pub buffers: Vec<(String, NodeId)>,
    /// The output of each layer, in order.
    pub layer_outputs: Vec<NodeId>,
}

/// A residual block being built: its convolutions and batch normalizations add their
/// parameters and buffers under `prefix`.
struct Block<'a> {
    g: &'a mut Graph,
    prefix: String,
    /// Whether each convolution is followed by batch normalization.
    batch_norm: bool,
    params: &'a mut Vec<(String, NodeId)>,
    buffers: &'a mut Vec<(String, NodeId)>,
}

impl Block<'_> {
    /// A `kernel` x `kernel` convolution from `c_in` to `c_out` channels ("same" padding),
    /// then batch normalization (when the block has it): `<prefix>.<conv>.weight` / `.bias`,
    /// `<prefix>.<bn>.gamma`, `.beta`, `.running_mean`, `.running_var`.
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        x: NodeId,
        (c_in, c_out, kernel): (usize, usize, usize),
        stride: usize,
    ) -> Result<NodeId> {
        let name = |layer: &str, part: &str| format!("{}.{layer}.{part}", self.prefix);
        let w = self.g.param(
            &name(conv, "weight"),
            &[c_out, c_in, kernel, kernel],
            Init::HeNormal,
        );
        let b = self.g.param(&name(conv, "bias"), &[c_out], Init::Zeros);
        for (part, id) in [("weight", w), ("bias", b)] {
            self.params.push((name(conv, part), id));
        }
        let y = self.g.conv2d(x, w, b, stride, kernel / 2)?;
        if !self.batch_norm {
            return Ok(y);
        }
        let gamma = self
            .g
            .param(&name(bn, "gamma"), &[c_out], Init::Constant(1.0));
        let beta = self.g.param(&name(bn, "beta"), &[c_out], Init::Zeros);
        let mean = self
            .g
            .buffer(&name(bn, "running_mean"), &[c_out], Init::Zeros);
        let var = self
            .g
            .buffer(&name(bn, "running_var"), &[c_out], Init::Constant(1.0));
        for (part, id) in [("gamma", gamma), ("beta", beta)] {
            self.params.push((name(bn, part), id));
        }
        for (part, id) in [("running_mean", mean), ("running_var", var)] {
            self.buffers.push((name(bn, part), id));
        }
        self.g.batch_norm(y, (gamma, beta), (mean, var), 1e-5, 0.1)
    }
}

/// Parameters and buffers of the layer whose names start with `prefix.`.
fn count(built: &Built, prefix: &str) -> usize {
    built
        .params
        .iter()
        .chain(&built.buffers)
        .filter(|(n, _)| n.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
        .map(|(_, p)| {
            built
                .graph
                .node(*p)
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Batch => 1,
                })
                .product::<usize>()
        })
        .sum()
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
        let act = |a: &Option<Activation>| a.map_or("linear", |a| a.name());
        let mut parts = vec![format!("input{:?}", self.input_shape).replace(' ', "")];
        for layer in &self.layers {
            parts.push(match layer {
                Layer::Dense(d) => format!("dense({},{})", d.units, act(&d.activation)),
                Layer::Conv2d(c) => format!(
                    "conv2d({},{}x{},stride{},pad{},{})",
                    c.filters,
                    c.kernel,
                    c.kernel,
                    c.stride,
                    c.padding,
                    act(&c.activation)
                ),
                Layer::Activation(a) => format!("activation({})", a.name()),
                Layer::Softmax => "softmax".into(),
                Layer::Flatten => "flatten".into(),
                Layer::Dropout(_) => "dropout".into(),
                Layer::MaxPool2d { size, stride } => format!("max_pool({size},stride{stride})"),
                Layer::AvgPool2d { size, stride } => format!("avg_pool({size},stride{stride})"),
                Layer::GlobalAvgPool => "global_avg_pool".into(),
                Layer::LayerNorm { eps } => format!("layer_norm(eps{eps})"),
                Layer::BatchNorm { eps, .. } => format!("batch_norm(eps{eps})"),
                Layer::Residual(r) => format!(
                    "residual({},stride{}{})",
                    r.filters,
                    r.stride,
                    if r.batch_norm { "" } else { ",no_bn" }
                ),
            });
        }
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

    /// The graph of the model up to its logits (a final softmax left out when `fuse_softmax`);
    /// dropout layer `k` draws its masks from `seed + k`.
    pub fn build(&self, fuse_softmax: bool, seed: u64) -> Result<Built> {
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(Error::invalid(
                "Sequential",
                format!("input shape {:?}", self.input_shape),
            ));
        }
        let mut g = Graph::new();
        let mut dims = vec![Dim::Batch];
        dims.extend(self.input_shape.iter().map(|&d| Dim::Fixed(d)));
        let input = g.input("input", &dims);
        let mut h = input;
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        let mut batch_norm_index = 0;
        let mut residual_index = 0;
        let mut dense_index = 0;
        let mut conv_index = 0;
        let mut dropout_index = 0;
        let mut norm_index = 0;
        let mut layer_outputs = Vec::new();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let named = |e: Error| match e {
                Error::Shape { detail, .. } => Error::Shape {
                    op: "Sequential",
                    detail: format!("layer {i} ({layer:?}): {detail}"),
                },
                other => other,
            };
            match layer {
                Layer::Flatten => h = g.flatten(h).map_err(named)?,
                Layer::Dense(d) => {
                    if d.units == 0 {
                        return Err(Error::invalid(
                            "Sequential",
                            format!("layer {i} (Dense): units must be at least 1, got 0"),
                        ));
                    }
                    let shape = &g.node(h).shape;
                    let Some(&Dim::Fixed(fan_in)) = shape.get(1).filter(|_| shape.len() == 2)
                    else {
                        return Err(Error::Shape {
                            op: "Sequential",
                            detail: format!("layer {i} (Dense) needs (batch, features) inputs; add Flatten first (got {} dimensions)", shape.len()),
                        });
                    };
                    let w_name = format!("dense_{dense_index}.weight");
                    let b_name = format!("dense_{dense_index}.bias");
                    let w = g.param(&w_name, &[fan_in, d.units], d.init);
                    let b = g.param(&b_name, &[d.units], Init::Zeros);
                    params.push((w_name, w));
                    params.push((b_name, b));
                    dense_index += 1;
                    let z = g.matmul(h, w).map_err(named)?;
                    h = g.bias_add(z, b).map_err(named)?;
                    if let Some(act) = d.activation {
                        h = g.activation(h, act).map_err(named)?;
                    }
                }
                Layer::Conv2d(c) => {
                    if c.filters == 0 || c.kernel == 0 || c.stride == 0 {
                        return Err(Error::invalid(
                            "Sequential",
                            format!(
                                "layer {i} (Conv2d): filters, kernel size and stride must be at \
                                 least 1, got {} filters, kernel {}, stride {}",
                                c.filters, c.kernel, c.stride
                            ),
                        ));
                    }
                    let shape = &g.node(h).shape;
                    let Some(&Dim::Fixed(channels)) = shape.get(1).filter(|_| shape.len() == 4)
                    else {
                        return Err(Error::Shape {
                            op: "Sequential",
                            detail: format!("layer {i} (Conv2d) needs (batch, channels, height, width) inputs; give Sequential::new a [channels, height, width] input shape (got {} dimensions)", shape.len()),
                        });
                    };
                    let w_name = format!("conv_{conv_index}.weight");
                    let b_name = format!("conv_{conv_index}.bias");
                    let w = g.param(&w_name, &[c.filters, channels, c.kernel, c.kernel], c.init);
                    let b = g.param(&b_name, &[c.filters], Init::Zeros);
                    params.push((w_name, w));
                    params.push((b_name, b));
                    conv_index += 1;
                    h = g.conv2d(h, w, b, c.stride, c.padding).map_err(named)?;
                    if let Some(act) = c.activation {
                        h = g.activation(h, act).map_err(named)?;
                    }
                }
                Layer::MaxPool2d { size, stride } => {
                    h = g.max_pool2d(h, *size, *stride).map_err(named)?
                }
                Layer::AvgPool2d { size, stride } => {
                    h = g.avg_pool2d(h, *size, *stride).map_err(named)?
                }
                Layer::GlobalAvgPool => h = g.global_avg_pool(h).map_err(named)?,
                Layer::LayerNorm { eps } => {
                    let shape = &g.node(h).shape;
                    let Some(&Dim::Fixed(features)) = shape.get(1).filter(|_| shape.len() == 2)
                    else {
                        return Err(Error::Shape {
                            op: "Sequential",
                            detail: format!("layer {i} (LayerNorm) needs (batch, features) inputs; add Flatten first (got {} dimensions)", shape.len()),
                        });
                    };
                    let g_name = format!("layer_norm_{norm_index}.gamma");
                    let b_name = format!("layer_norm_{norm_index}.beta");
                    let gamma = g.param(&g_name, &[features], Init::Constant(1.0));
                    let beta = g.param(&b_name, &[features], Init::Zeros);
                    params.push((g_name, gamma));
                    params.push((b_name, beta));
                    norm_index += 1;
                    h = g.layer_norm(h, gamma, beta, *eps).map_err(|e| match e {
                        Error::InvalidArgument { detail, .. } => Error::InvalidArgument {
                            op: "Sequential",
                            detail: format!("layer {i} (LayerNorm): {detail}"),
                        },
                        other => named(other),
                    })?;
                }
                Layer::BatchNorm { eps, momentum } => {
                    let shape = &g.node(h).shape;
                    let Some(&Dim::Fixed(channels)) = shape
                        .get(1)
                        .filter(|_| shape.len() == 2 || shape.len() == 4)
                    else {
                        return Err(Error::Shape {
                            op: "Sequential",
                            detail: format!("layer {i} (BatchNorm) needs (batch, features) or (batch, channels, height, width) inputs (got {} dimensions)", shape.len()),
                        });
                    };
                    let name = |part: &str| format!("batch_norm_{batch_norm_index}.{part}");
                    let gamma = g.param(&name("gamma"), &[channels], Init::Constant(1.0));
                    let beta = g.param(&name("beta"), &[channels], Init::Zeros);
                    let mean = g.buffer(&name("running_mean"), &[channels], Init::Zeros);
                    let var = g.buffer(&name("running_var"), &[channels], Init::Constant(1.0));
                    params.push((name("gamma"), gamma));
                    params.push((name("beta"), beta));
                    buffers.push((name("running_mean"), mean));
                    buffers.push((name("running_var"), var));
                    batch_norm_index += 1;
                    h = g
                        .batch_norm(h, (gamma, beta), (mean, var), *eps, *momentum)
                        .map_err(|e| match e {
                            Error::InvalidArgument { detail, .. } => Error::InvalidArgument {
                                op: "Sequential",
                                detail: format!("layer {i} (BatchNorm): {detail}"),
                            },
                            other => named(other),
                        })?;
                }
                Layer::Residual(r) => {
                    let shape = &g.node(h).shape;
                    let Some(&Dim::Fixed(channels)) = shape.get(1).filter(|_| shape.len() == 4)
                    else {
                        return Err(Error::Shape {
                            op: "Sequential",
                            detail: format!("layer {i} (Residual) needs (batch, channels, height, width) inputs (got {} dimensions)", shape.len()),
                        });
                    };
                    if r.filters == 0 || r.stride == 0 {
                        return Err(Error::invalid(
                            "Sequential",
                            format!("layer {i} (Residual): filters and stride must be at least 1, got {} filters, stride {}", r.filters, r.stride),
                        ));
                    }
                    let mut block = Block {
                        g: &mut g,
                        prefix: format!("residual_{residual_index}"),
                        batch_norm: r.batch_norm,
                        params: &mut params,
                        buffers: &mut buffers,
                    };
                    let x = h;
                    let a = block
                        .conv_bn("conv1", "bn1", x, (channels, r.filters, 3), r.stride)
                        .map_err(named)?;
                    let a = block.g.activation(a, Activation::Relu).map_err(named)?;
                    let a = block
                        .conv_bn("conv2", "bn2", a, (r.filters, r.filters, 3), 1)
                        .map_err(named)?;
                    let shortcut = if r.stride == 1 && channels == r.filters {
                        x
                    } else {
                        block
                            .conv_bn(
                                "shortcut",
                                "shortcut_bn",
                                x,
                                (channels, r.filters, 1),
                                r.stride,
                            )
                            .map_err(named)?
                    };
                    let sum = g.add(a, shortcut).map_err(named)?;
                    h = g.activation(sum, Activation::Relu).map_err(named)?;
                    residual_index += 1;
                }
                Layer::Activation(act) => h = g.activation(h, *act).map_err(named)?,
                Layer::Dropout(rate) => {
                    let seed = seed.wrapping_add(dropout_index);
                    h = g.dropout(h, *rate, seed).map_err(|e| match e {
                        Error::InvalidArgument { detail, .. } => Error::InvalidArgument {
                            op: "Sequential",
                            detail: format!("layer {i} (Dropout): {detail}"),
                        },
                        other => named(other),
                    })?;
                    dropout_index += 1;
                }
                Layer::Softmax if fuse_softmax && i == last => {}
                Layer::Softmax => h = g.softmax(h).map_err(named)?,
            }
            layer_outputs.push(h);
        }
        let no_decay = crate::optim::ParamOptions {
            weight_decay: Some(0.0),
            ..Default::default()
        };
        for (name, p) in &params {
            if self
                .no_weight_decay
                .iter()
                .any(|n| name.contains(n.as_str()))
            {
                g.set_param_options(*p, no_decay)?;
            }
        }
        Ok(Built {
            graph: g,
            input,
            logits: h,
            params,
            buffers,
            layer_outputs,
        })
    }

    /// A Keras-like table of layers, output shapes and parameter counts (or, for a model
    /// whose shapes do not fit, the error naming the layer).
    pub fn summary(&self) -> String {
        let built = match self.build(false, 0) {
            Ok(b) => b,
            Err(e) => return format!("the model does not build: {e}\n"),
        };
        let g = &built.graph;
        let mut out = format!(
            "{:<28} {:<20} {:>10}\n",
            "Layer (type)", "Output Shape", "Param #"
        );
        out.push_str(&"=".repeat(60));
        out.push('\n');
        let mut total = 0;
        let (mut dense, mut conv, mut norm, mut batch_norm, mut residual) = (0, 0, 0, 0, 0);
        let lower = |a: &Option<Activation>| {
            a.map(|a| format!(", {a:?}").to_lowercase())
                .unwrap_or_default()
        };
        for (layer, &node) in self.layers.iter().zip(&built.layer_outputs) {
            let (name, params) = match layer {
                Layer::Flatten => ("flatten (Flatten)".to_string(), 0),
                Layer::Dense(d) => {
                    dense += 1;
                    let name = format!("dense_{}", dense - 1);
                    (
                        format!("{name} (Dense{})", lower(&d.activation)),
                        count(&built, &name),
                    )
                }
                Layer::Conv2d(c) => {
                    conv += 1;
                    let name = format!("conv_{}", conv - 1);
                    (
                        format!("{name} (Conv2D{})", lower(&c.activation)),
                        count(&built, &name),
                    )
                }
                Layer::MaxPool2d { .. } => ("max_pool (MaxPooling2D)".to_string(), 0),
                Layer::AvgPool2d { .. } => ("avg_pool (AveragePooling2D)".to_string(), 0),
                Layer::GlobalAvgPool => ("global_avg_pool (GlobalAvg)".to_string(), 0),
                Layer::Activation(a) => (format!("activation ({a:?})"), 0),
                Layer::Softmax => ("softmax (Softmax)".to_string(), 0),
                Layer::Dropout(rate) => (format!("dropout (Dropout {rate})"), 0),
                Layer::LayerNorm { .. } => {
                    norm += 1;
                    let name = format!("layer_norm_{}", norm - 1);
                    (format!("{name} (LayerNorm)"), count(&built, &name))
                }
                Layer::BatchNorm { .. } => {
                    batch_norm += 1;
                    let name = format!("batch_norm_{}", batch_norm - 1);
                    (format!("{name} (BatchNorm)"), count(&built, &name))
                }
                Layer::Residual(r) => {
                    residual += 1;
                    let name = format!("residual_{}", residual - 1);
                    (
                        format!("{name} (Residual s{})", r.stride),
                        count(&built, &name),
                    )
                }
            };
            total += params;
            let dims: Vec<String> = g
                .node(node)
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Batch => "None".to_string(),
                    Dim::Fixed(n) => n.to_string(),
                })
                .collect();
            out.push_str(&format!(
                "{name:<28} {:<20} {params:>10}\n",
                format!("({})", dims.join(", "))
            ));
        }
        out.push_str(&"=".repeat(60));
        let frozen: usize = built
            .buffers
            .iter()
            .map(|(_, b)| g.concrete_shapes(1)[g.index(*b)].iter().product::<usize>())
            .sum();
        out.push_str(&format!("\nTotal params: {total}\n"));
        if frozen > 0 {
            out.push_str(&format!(
                "Trainable params: {}\nNon-trainable params: {frozen}\n",
                total - frozen
            ));
        }
        out
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
        Model::new(self, loss, optimizer, device, seed)
    }
}
