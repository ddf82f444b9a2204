//! The words both executors speak: activations, losses, windows, GEMM epilogues and metric
//! kinds. Plain data with their shape rules; the CPU arithmetic on them lives in `cpu/`, the
//! kernel codes in `gpu/`. This file imports neither (ARCHITECTURE.md, "Layers").

/// The elementwise activations. A backward rule reads the forward output `y = f(x)` where it
/// can (so `x` need not stay alive), else the input `x`: see
/// [`Activation::backward_reads_input`] and ARCHITECTURE.md, "Gradients".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    Identity,
    /// GELU in its tanh form (PyTorch's `gelu(approximate='tanh')`, Keras'
    /// `gelu(approximate=True)`): `x sigmoid(2u)`, u = sqrt(2/pi) (x + 0.044715 x^3); its
    /// gradient reads x. For |x| >= 10 it is ReLU (the two agree there to f32 precision).
    Gelu,
    /// SiLU (swish): `x sigmoid(x)`; its gradient reads x.
    Silu,
    /// Leaky ReLU with slope 0.01 below zero (PyTorch's default `negative_slope`).
    LeakyRelu,
    /// ELU with alpha 1 (Keras' and PyTorch's default): `x` above zero, `exp(x) - 1` below.
    Elu,
    /// Softplus `ln(1 + exp(x))`, computed as `max(x, 0) + ln(1 + exp(-|x|))`; its gradient
    /// (sigmoid(x)) reads x.
    Softplus,
}

/// Leaky ReLU's slope below zero.
pub const LEAKY_RELU_SLOPE: f64 = 0.01;

impl Activation {
    /// The name used in op names, summaries and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Identity => "identity",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Elu => "elu",
            Activation::Softplus => "softplus",
        }
    }

    /// Whether the gradient is computed from the input `x` rather than the output `y`: the
    /// value the backward pass keeps for this activation.
    pub fn backward_reads_input(self) -> bool {
        match self {
            Activation::Relu
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Identity
            | Activation::LeakyRelu
            | Activation::Elu => false,
            Activation::Gelu | Activation::Silu | Activation::Softplus => true,
        }
    }
}

/// Elementwise losses between a prediction and a target of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointwiseLoss {
    /// (p - t)^2
    MeanSquaredError,
    /// -(t log p + (1 - t) log(1 - p)) on probabilities, p clamped to [1e-7, 1 - 1e-7]
    BinaryCrossEntropy,
    /// binary cross-entropy on logits x: max(x, 0) - x t + log(1 + exp(-|x|))
    BinaryCrossEntropyWithLogits,
    /// |p - t|, with gradient sign(p - t) (0 at p = t)
    MeanAbsoluteError,
    /// Huber with delta 1 (Keras' and PyTorch's default): (p - t)^2 / 2 where |p - t| <= 1,
    /// |p - t| - 1/2 beyond
    Huber,
}

impl PointwiseLoss {
    /// The name used in op names and reports.
    pub fn name(self) -> &'static str {
        match self {
            PointwiseLoss::MeanSquaredError => "mse",
            PointwiseLoss::BinaryCrossEntropy => "bce",
            PointwiseLoss::BinaryCrossEntropyWithLogits => "bce_with_logits",
            PointwiseLoss::MeanAbsoluteError => "mae",
            PointwiseLoss::Huber => "huber",
        }
    }
}

/// A convolution's or pooling window's geometry (PyTorch's conventions: zero padding `pad`
/// on every side, output size `(h + 2 pad - kh) / stride + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// A square `k` x `k` window.
    pub fn square(k: usize, stride: usize, pad: usize) -> Self {
        Window {
            kh: k,
            kw: k,
            stride,
            pad,
        }
    }

    /// Output (height, width) for an input of (h, w), or None when the window does not fit.
    pub fn output(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (ph, pw) = (h + 2 * self.pad, w + 2 * self.pad);
        if self.stride == 0 || self.kh == 0 || self.kw == 0 || ph < self.kh || pw < self.kw {
            return None;
        }
        Some((
            (ph - self.kh) / self.stride + 1,
            (pw - self.kw) / self.stride + 1,
        ))
    }

    /// The input coordinate of output `o` and kernel offset `k` (may fall in the padding).
    pub fn input(&self, o: usize, k: usize) -> isize {
        (o * self.stride + k) as isize - self.pad as isize
    }
}

/// What a GEMM does to each output after `alpha * op(A) op(B) + beta * C`. The CPU reference
/// ([`crate::cpu::gemm`]) and the GPU kernels apply the same epilogues, so a fused plan can be
/// checked against an unfused one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Epilogue {
    #[default]
    None,
    /// `+ bias[col]`
    Bias,
    /// `+ bias[col]`, then ReLU
    BiasRelu,
    /// ReLU
    Relu,
    /// ReLU's backward: C where `y > 0`, else 0, with y (the ReLU's output, C's stored
    /// layout) in the bias slot: a `dY W^T` GEMM that is also the ReLU gradient.
    ReluGrad,
}

impl Epilogue {
    /// Whether the epilogue is elementwise (no per-column bias), so C may be stored
    /// transposed without changing its meaning.
    pub fn elementwise(self) -> bool {
        !self.has_bias()
    }

    /// Whether the epilogue reads a bias vector.
    pub fn has_bias(self) -> bool {
        matches!(self, Epilogue::Bias | Epilogue::BiasRelu)
    }
}

/// How a step's correct predictions are counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricKind {
    /// u32 labels: a row is right when its first maximal output is at its label.
    Sparse,
    /// f32 targets (one-hot or soft): a row is right when its first maximal output is at the
    /// target's first maximum.
    Argmax,
    /// f32 targets in {0, 1}: each element is right when `(output > threshold) == (target > 0.5)`.
    Binary { threshold: f32 },
}

impl MetricKind {
    /// The count for a loss: against labels for softmax cross-entropy (`pointwise` is None);
    /// for a pointwise loss, binary accuracy when there is one output per sample (threshold 0
    /// on logits, 0.5 on probabilities), else the argmax of the outputs against the argmax of
    /// the targets.
    pub fn for_loss(pointwise: Option<PointwiseLoss>, outputs_per_sample: usize) -> Self {
        match pointwise {
            Some(kind) if outputs_per_sample == 1 => MetricKind::Binary {
                threshold: if kind == PointwiseLoss::BinaryCrossEntropyWithLogits {
                    0.0
                } else {
                    0.5
                },
            },
            Some(_) => MetricKind::Argmax,
            None => MetricKind::Sparse,
        }
    }
}
