//! Layer configurations (`Dense`, `Conv2d`, `Residual`, the `Layer` enum) and what
//! models need to know of them: names, summary titles, the architecture string.

use crate::graph::Init;
use crate::ops::Activation;

/// A fully connected layer: `activation(x W + b)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A sample's axis order for [`Layer::Permute`], Keras' 1-based `dims` (up to 4 axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Permutation {
    dims: [u8; 4],
    len: u8,
}

impl Permutation {
    /// Keras' `dims`, 1-based (up to 4; checked when the model is built).
    pub fn dims(&self) -> Vec<usize> {
        self.dims[..self.len as usize]
            .iter()
            .map(|&d| d as usize)
            .collect()
    }
}

/// A layer of a [`Sequential`](super::Sequential) or [`Functional`](super::Functional) model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Layer {
    Dense(Dense),
    Activation(Activation),
    /// Softmax over the last axis (a final softmax is fused into the loss while training).
    Softmax,
    /// (batch, d1, d2, ...) to (batch, d1 * d2 * ...).
    Flatten,
    /// Keras' `Permute(dims)`: the sample's axes reordered, output axis i (1-based, the batch
    /// axis left out) being input axis `dims[i - 1]`. `Permute((3, 1, 2))` turns
    /// channels-last images into channels-first ones. Made by [`Layer::permute`].
    Permute(Permutation),
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
    /// variance ([`Sequential::layer_norm`](super::Sequential::layer_norm) uses Keras' 1e-3).
    LayerNorm {
        eps: f32,
    },
    /// Batch normalization over the channels of (batch, channels, h, w) or the features of
    /// (batch, features), with a learned scale (`gamma`, starting at 1) and shift (`beta`,
    /// starting at 0) and running statistics (`running_mean` from 0, `running_var` from 1)
    /// that training moves by `momentum` and evaluation uses. PyTorch's convention
    /// ([`Sequential::batch_norm`](super::Sequential::batch_norm): momentum 0.1, eps 1e-5); Keras' `momentum=0.99` is
    /// PyTorch's 0.01.
    BatchNorm {
        eps: f32,
        momentum: f32,
    },
    /// A residual block ([`Residual`]).
    Residual(Residual),
    /// The elementwise sum of several tensors, broadcast (functional models only:
    /// [`add`](super::add)).
    Add,
    /// The elementwise product of several tensors, broadcast (functional models only:
    /// [`multiply`](super::multiply)).
    Multiply,
    /// Several tensors side by side along axis 1, features or channels (functional models
    /// only: [`concatenate`](super::concatenate)).
    Concatenate,
}

impl From<Dense> for Layer {
    fn from(d: Dense) -> Layer {
        Layer::Dense(d)
    }
}

impl From<Conv2d> for Layer {
    fn from(c: Conv2d) -> Layer {
        Layer::Conv2d(c)
    }
}

impl From<Residual> for Layer {
    fn from(r: Residual) -> Layer {
        Layer::Residual(r)
    }
}

impl Layer {
    /// Whether the layer combines several tensors.
    pub fn is_merge(&self) -> bool {
        matches!(self, Layer::Add | Layer::Multiply | Layer::Concatenate)
    }

    /// The stem of automatic names (`dense` for `dense_0`), which is also the prefix of
    /// parameter names.
    pub(super) fn stem(&self) -> &'static str {
        match self {
            Layer::Dense(_) => "dense",
            Layer::Conv2d(_) => "conv",
            Layer::LayerNorm { .. } => "layer_norm",
            Layer::BatchNorm { .. } => "batch_norm",
            Layer::Residual(_) => "residual",
            Layer::Activation(_) => "activation",
            Layer::Softmax => "softmax",
            Layer::Flatten => "flatten",
            Layer::Permute(_) => "permute",
            Layer::Dropout(_) => "dropout",
            Layer::MaxPool2d { .. } => "max_pool",
            Layer::AvgPool2d { .. } => "avg_pool",
            Layer::GlobalAvgPool => "global_avg_pool",
            Layer::Add => "add",
            Layer::Multiply => "multiply",
            Layer::Concatenate => "concatenate",
        }
    }

    /// The type column of a summary (`Dense, relu`).
    pub(super) fn kind(&self) -> String {
        let act = |a: &Option<Activation>| {
            a.map(|a| format!(", {a:?}").to_lowercase())
                .unwrap_or_default()
        };
        match self {
            Layer::Dense(d) => format!("Dense{}", act(&d.activation)),
            Layer::Conv2d(c) => format!("Conv2D{}", act(&c.activation)),
            Layer::LayerNorm { .. } => "LayerNorm".into(),
            Layer::BatchNorm { .. } => "BatchNorm".into(),
            Layer::Residual(r) => format!("Residual s{}", r.stride),
            Layer::Activation(a) => format!("{a:?}"),
            Layer::Softmax => "Softmax".into(),
            Layer::Flatten => "Flatten".into(),
            Layer::Permute(_) => "Permute".into(),
            Layer::Dropout(rate) => format!("Dropout {rate}"),
            Layer::MaxPool2d { .. } => "MaxPooling2D".into(),
            Layer::AvgPool2d { .. } => "AveragePooling2D".into(),
            Layer::GlobalAvgPool => "GlobalAvg".into(),
            Layer::Add => "Add".into(),
            Layer::Multiply => "Multiply".into(),
            Layer::Concatenate => "Concatenate".into(),
        }
    }

    /// The layer as checkpoints record it: kind, sizes and activation (initializers and
    /// dropout rates, which do not change what the weights mean, are left out).
    pub(super) fn architecture(&self) -> String {
        let act = |a: &Option<Activation>| a.map_or("linear", |a| a.name());
        match self {
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
            Layer::Permute(p) => format!("permute{:?}", p.dims()).replace(' ', ""),
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
            Layer::Add => "add".into(),
            Layer::Multiply => "multiply".into(),
            Layer::Concatenate => "concatenate".into(),
        }
    }
}

impl Layer {
    /// Keras' `Permute(dims)`: `dims` are 1-based sample axes, e.g. `&[3, 1, 2]` for
    /// channels-last images to channels-first. An order that is not a permutation of
    /// `1..=rank` is an error when the model is built.
    pub fn permute(dims: &[usize]) -> Layer {
        let mut p = Permutation {
            dims: [0; 4],
            // More than 4 axes is recorded as too many, and refused at build.
            len: dims.len().min(5) as u8,
        };
        for (slot, &d) in p.dims.iter_mut().zip(dims) {
            *slot = d.min(u8::MAX as usize) as u8;
        }
        Layer::Permute(p)
    }

    /// The variant's name (`Dense`, `Conv2d`), as Sequential's errors have always put it:
    /// the Debug form up to its fields.
    pub(super) fn variant_name(&self) -> String {
        format!("{self:?}")
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect()
    }
}
