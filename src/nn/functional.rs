//! Functional models (Keras' functional API): symbolic [`Tensor`]s made by [`Input::new`]
//! and by applying layers to tensors, and a [`Functional`] model from its inputs to its
//! outputs. [`super::Sequential`] is a builder of the same thing: a chain of layer calls
//! from one input (ARCHITECTURE.md, "Models").
//!
//! ```
//! use wgtrain::nn::{self, Conv2d, Dense, Functional, Input, Layer, LayerRef};
//! use wgtrain::ops::Activation;
//!
//! let image = Input::new(&[1, 28, 28]);
//! let conv = Conv2d::new(8, 3).same().activation(Activation::Relu);
//! let a = conv.on(&image);
//! let b = Conv2d::new(8, 3).same().on(&a);
//! let sum = nn::add(&[&a, &b]); // a residual connection
//! let h = Layer::Flatten.on(&Layer::GlobalAvgPool.on(&sum));
//! let shared = LayerRef::new(Dense::new(10)); // one set of weights, used twice
//! let logits = nn::add(&[&shared.call(&h), &shared.call(&h)]);
//! let model = Functional::new(&[&image], &[&logits])?;
//! println!("{}", model.summary());
//! # Ok::<(), wgtrain::Error>(())
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use super::{Built, Conv2d, Dense, Layer, Residual};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Init, NodeId};
use crate::ops::Activation;

/// A symbolic tensor of a functional model: one of its inputs, or the output of a layer
/// applied to tensors. Cloning is cheap and keeps the identity.
#[derive(Debug, Clone)]
pub struct Tensor(Arc<Source>);

#[derive(Debug)]
enum Source {
    Input {
        shape: Vec<usize>,
        name: Option<String>,
    },
    Call {
        layer: LayerRef,
        inputs: Vec<Tensor>,
    },
}

impl Tensor {
    fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// A model input (Keras' `keras.Input`): the shape of one sample, without the batch axis.
pub struct Input;

impl Input {
    /// An input of samples shaped `shape` (e.g. `[784]`, or `[3, 32, 32]` for images).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(shape: &[usize]) -> Tensor {
        Tensor(Arc::new(Source::Input {
            shape: shape.to_vec(),
            name: None,
        }))
    }

    /// A named input (the name appears in the summary and in errors).
    pub fn named(name: &str, shape: &[usize]) -> Tensor {
        Tensor(Arc::new(Source::Input {
            shape: shape.to_vec(),
            name: Some(name.to_string()),
        }))
    }
}

/// One layer with its own weights: every [`LayerRef::call`] of the same `LayerRef` (or of a
/// clone) shares them, as calling one Keras layer object twice does.
#[derive(Debug, Clone)]
pub struct LayerRef(Arc<Instance>);

#[derive(Debug)]
struct Instance {
    layer: Layer,
    name: Option<String>,
}

impl LayerRef {
    /// A layer whose weights all its calls share, named automatically (`dense_0`, ...).
    pub fn new(layer: impl Into<Layer>) -> Self {
        LayerRef(Arc::new(Instance {
            layer: layer.into(),
            name: None,
        }))
    }

    /// A layer with a chosen name: its parameters are `<name>.weight` and so on.
    pub fn named(name: &str, layer: impl Into<Layer>) -> Self {
        LayerRef(Arc::new(Instance {
            layer: layer.into(),
            name: Some(name.to_string()),
        }))
    }

    /// The layer's output for `x`.
    pub fn call(&self, x: &Tensor) -> Tensor {
        self.call_many(&[x])
    }

    /// The layer's output for several inputs (the merge layers: [`Layer::Add`],
    /// [`Layer::Multiply`], [`Layer::Concatenate`]).
    pub fn call_many(&self, xs: &[&Tensor]) -> Tensor {
        Tensor(Arc::new(Source::Call {
            layer: self.clone(),
            inputs: xs.iter().map(|&t| t.clone()).collect(),
        }))
    }

    /// The layer's configuration.
    pub fn layer(&self) -> &Layer {
        &self.0.layer
    }

    fn same(&self, other: &LayerRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Layer {
    /// This layer, with weights of its own, applied to `x` (`Dense::new(64).on(&x)`; a
    /// [`LayerRef`] shares weights between calls).
    pub fn on(self, x: &Tensor) -> Tensor {
        LayerRef::new(self).call(x)
    }
}

impl Dense {
    /// This layer, with weights of its own, applied to `x`.
    pub fn on(self, x: &Tensor) -> Tensor {
        Layer::Dense(self).on(x)
    }
}

impl Conv2d {
    /// This layer, with weights of its own, applied to `x`.
    pub fn on(self, x: &Tensor) -> Tensor {
        Layer::Conv2d(self).on(x)
    }
}

impl Residual {
    /// This block, with weights of its own, applied to `x`.
    pub fn on(self, x: &Tensor) -> Tensor {
        Layer::Residual(self).on(x)
    }
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

/// The elementwise sum of `xs` (Keras' `layers.add`): every input must have the same shape
/// (no broadcasting).
pub fn add(xs: &[&Tensor]) -> Tensor {
    Layer::Add.on_many(xs)
}

/// The elementwise product of `xs` (Keras' `layers.multiply`): every input must have the
/// same shape (no broadcasting).
pub fn multiply(xs: &[&Tensor]) -> Tensor {
    Layer::Multiply.on_many(xs)
}

/// `xs` side by side along the features (matrices) or channels (images) (Keras'
/// `layers.concatenate` on the channels-first axis 1): every other axis must agree.
pub fn concatenate(xs: &[&Tensor]) -> Tensor {
    Layer::Concatenate.on_many(xs)
}

impl Layer {
    /// This merge layer applied to `xs`.
    pub fn on_many(self, xs: &[&Tensor]) -> Tensor {
        LayerRef::new(self).call_many(xs)
    }

    /// Whether the layer combines several tensors.
    pub fn is_merge(&self) -> bool {
        matches!(self, Layer::Add | Layer::Multiply | Layer::Concatenate)
    }

    /// The stem of automatic names (`dense` for `dense_0`), which is also the prefix of
    /// parameter names.
    fn stem(&self) -> &'static str {
        match self {
            Layer::Dense(_) => "dense",
            Layer::Conv2d(_) => "conv",
            Layer::LayerNorm { .. } => "layer_norm",
            Layer::BatchNorm { .. } => "batch_norm",
            Layer::Residual(_) => "residual",
            Layer::Activation(_) => "activation",
            Layer::Softmax => "softmax",
            Layer::Flatten => "flatten",
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

/// Where a call's input comes from: model input `k`, or the output of call `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Src {
    Input(usize),
    Call(usize),
}

/// One layer call, in an order where every call follows the calls it reads.
#[derive(Debug, Clone)]
struct Call {
    /// Index into `Functional::layers`.
    layer: usize,
    inputs: Vec<Src>,
}

/// A model from its inputs to its outputs through the layers applied between them (Keras'
/// `keras.Model(inputs, outputs)`), checked for shapes when made; [`Functional::compile`]
/// makes it a trainable [`super::Model`].
///
/// Several inputs are fed from one sample row holding each input's values in turn (in the
/// order of `inputs`, each flattened); several outputs are predicted as one row holding each
/// output's values in turn, and trained with the loss over that whole row (the mean over all
/// outputs' values; Keras sums per-output means instead, which weighs outputs by 1/width).
#[derive(Debug, Clone)]
pub struct Functional {
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    input_shapes: Vec<Vec<usize>>,
    input_names: Vec<String>,
    /// Distinct layers, in order of first call, with their names.
    layers: Vec<(LayerRef, String)>,
    calls: Vec<Call>,
    /// The call producing each output.
    output_calls: Vec<Src>,
    /// Parameters whose names contain one of these take no weight decay.
    pub(super) no_weight_decay: Vec<String>,
    /// Made by [`super::Sequential`]: errors name layers by position (`layer 2`).
    pub(super) sequential: bool,
}

impl Functional {
    /// The model computing `outputs` from `inputs`. Every layer between them is included;
    /// an output that needs an input not listed, an input that reaches no output, a tensor
    /// listed twice, a merge of fewer than two tensors and shapes that do not fit are
    /// errors naming the layers involved.
    pub fn new(inputs: &[&Tensor], outputs: &[&Tensor]) -> Result<Self> {
        let f = Self::trace(inputs, outputs, false)?;
        f.build(false, 0)?;
        Ok(f)
    }

    /// [`Functional::new`] without the shape check (Sequential checks when built).
    pub(super) fn trace(inputs: &[&Tensor], outputs: &[&Tensor], sequential: bool) -> Result<Self> {
        let err = |detail: String| Error::invalid("Functional", detail);
        if inputs.is_empty() || outputs.is_empty() {
            return Err(err("a model needs at least one input and one output".into()));
        }
        let mut input_shapes = Vec::new();
        let mut input_names = Vec::new();
        for (k, x) in inputs.iter().enumerate() {
            if inputs[..k].iter().any(|y| y.same(x)) {
                return Err(err(format!("input {k} is listed twice")));
            }
            match &*x.0 {
                Source::Input { shape, name } => {
                    if shape.is_empty() || shape.contains(&0) {
                        return Err(err(format!(
                            "input {k} has shape {shape:?}; every axis needs at least one entry"
                        )));
                    }
                    input_shapes.push(shape.clone());
                    input_names.push(name.clone().unwrap_or_else(|| {
                        if inputs.len() == 1 {
                            "input".into()
                        } else {
                            format!("input_{k}")
                        }
                    }));
                }
                Source::Call { layer, .. } => {
                    return Err(err(format!(
                        "input {k} is the output of a {} layer, not an Input (make inputs with \
                         Input::new)",
                        layer.layer().kind()
                    )))
                }
            }
        }
        let mut f = Functional {
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
            outputs: outputs.iter().map(|&t| t.clone()).collect(),
            input_shapes,
            input_names,
            layers: Vec::new(),
            calls: Vec::new(),
            output_calls: Vec::new(),
            no_weight_decay: Vec::new(),
            sequential,
        };
        // Depth-first from the outputs, iteratively (deep models would overflow a recursive
        // walk): a tensor is placed after everything it reads.
        let mut placed: HashMap<usize, Src> = HashMap::new();
        for (k, x) in inputs.iter().enumerate() {
            placed.insert(x.key(), Src::Input(k));
        }
        let mut stack: Vec<(Tensor, bool)> =
            outputs.iter().rev().map(|&t| (t.clone(), false)).collect();
        let mut on_path: HashMap<usize, ()> = HashMap::new();
        while let Some((t, ready)) = stack.pop() {
            if placed.contains_key(&t.key()) {
                continue;
            }
            let Source::Call {
                layer,
                inputs: args,
            } = &*t.0
            else {
                return Err(err(format!(
                    "an output depends on an Input ({}) that is not among the model's inputs",
                    match &*t.0 {
                        Source::Input { name: Some(n), .. } => format!("`{n}`"),
                        Source::Input { shape, .. } => format!("shape {shape:?}"),
                        Source::Call { .. } => unreachable!(),
                    }
                )));
            };
            if ready {
                on_path.remove(&t.key());
                let li = match f.layers.iter().position(|(l, _)| l.same(layer)) {
                    Some(i) => i,
                    None => {
                        f.layers.push((layer.clone(), String::new()));
                        f.layers.len() - 1
                    }
                };
                let from = args.iter().map(|a| placed[&a.key()]).collect();
                f.calls.push(Call {
                    layer: li,
                    inputs: from,
                });
                placed.insert(t.key(), Src::Call(f.calls.len() - 1));
                continue;
            }
            on_path.insert(t.key(), ());
            stack.push((t.clone(), true));
            for a in args.iter().rev() {
                if !placed.contains_key(&a.key()) {
                    stack.push((a.clone(), false));
                }
            }
        }
        f.output_calls = outputs.iter().map(|t| placed[&t.key()]).collect();
        for (k, o) in f.output_calls.iter().enumerate() {
            if f.output_calls[..k].contains(o) {
                return Err(err(format!("output {k} is listed twice")));
            }
        }
        // Inputs that reach no output.
        for k in 0..inputs.len() {
            let used = f.calls.iter().any(|c| c.inputs.contains(&Src::Input(k)))
                || f.output_calls.contains(&Src::Input(k));
            if !used {
                return Err(err(format!(
                    "input {k} (`{}`) reaches no output",
                    f.input_names[k]
                )));
            }
        }
        // Names: chosen ones must be unique; the others are `<stem>_<k>` per stem, in order
        // of first call (so a Sequential's names are the historic ones).
        let mut per_stem: HashMap<&str, usize> = HashMap::new();
        for i in 0..f.layers.len() {
            let (l, _) = &f.layers[i];
            let name = match &l.0.name {
                Some(n) => n.clone(),
                None => {
                    let stem = l.layer().stem();
                    let k = per_stem.entry(stem).or_insert(0);
                    *k += 1;
                    format!("{stem}_{}", *k - 1)
                }
            };
            if f.layers[..i].iter().any(|(_, n)| *n == name) || f.input_names.contains(&name) {
                return Err(err(format!("two layers are named `{name}`")));
            }
            f.layers[i].1 = name;
        }
        Ok(f)
    }

    /// Exempts from the optimizer's weight decay every parameter whose name contains one of
    /// `names` (see [`super::Sequential::exclude_from_weight_decay`]).
    pub fn exclude_from_weight_decay(mut self, names: &[&str]) -> Self {
        self.no_weight_decay
            .extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Each input's sample shape.
    pub fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }

    /// The input tensors.
    pub fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }

    /// The output tensors.
    pub fn outputs(&self) -> &[Tensor] {
        &self.outputs
    }

    /// The name of each distinct layer, in order of first call.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|(_, n)| n.as_str()).collect()
    }

    /// The architecture as checkpoints record it: each input's shape, then each call as
    /// `name=layer<-its inputs`, separated by `|`.
    pub fn architecture(&self) -> String {
        let mut parts: Vec<String> = self
            .input_shapes
            .iter()
            .map(|s| format!("input{s:?}").replace(' ', ""))
            .collect();
        for c in &self.calls {
            let (l, name) = &self.layers[c.layer];
            let from: Vec<String> = c.inputs.iter().map(|f| self.source_name(*f)).collect();
            parts.push(format!(
                "{name}={}<-{}",
                l.layer().architecture(),
                from.join(",")
            ));
        }
        let outs: Vec<String> = self
            .output_calls
            .iter()
            .map(|f| self.source_name(*f))
            .collect();
        parts.push(format!("outputs={}", outs.join(",")));
        parts.join("|")
    }

    /// The name of a tensor: an input's, or its layer's with the call's position among that
    /// layer's calls when it has several (`dense_0[1]`).
    fn source_name(&self, f: Src) -> String {
        match f {
            Src::Input(k) => self.input_names[k].clone(),
            Src::Call(c) => {
                let li = self.calls[c].layer;
                let calls: Vec<usize> = (0..self.calls.len())
                    .filter(|&j| self.calls[j].layer == li)
                    .collect();
                let name = &self.layers[li].1;
                if calls.len() > 1 {
                    let k = calls.iter().position(|&j| j == c).unwrap_or(0);
                    format!("{name}[{k}]")
                } else {
                    name.clone()
                }
            }
        }
    }

    /// What errors call a layer: its name, or its position in a Sequential.
    fn label(&self, call: usize) -> String {
        if self.sequential {
            format!("layer {call}")
        } else {
            self.layers[self.calls[call].layer].1.clone()
        }
    }

    /// The graph of the model up to its outputs: with several outputs, `logits` is their
    /// flattened concatenation. A final softmax is left out of a single output when
    /// `fuse_softmax` (the loss fuses it); dropout call `k` draws masks from `seed + k`.
    pub fn build(&self, fuse_softmax: bool, seed: u64) -> Result<Built> {
        let op = if self.sequential {
            "Sequential"
        } else {
            "Functional"
        };
        let mut b = Builder {
            g: Graph::new(),
            params: Vec::new(),
            buffers: Vec::new(),
            created: Vec::new(),
            reuse: None,
            op,
            who: String::new(),
        };
        let inputs: Vec<NodeId> = self
            .input_shapes
            .iter()
            .zip(&self.input_names)
            .map(|(shape, name)| {
                let mut dims = vec![Dim::Batch];
                dims.extend(shape.iter().map(|&d| Dim::Fixed(d)));
                b.g.input(name, &dims)
            })
            .collect();
        // Parameters and buffers each layer made on its first call, for its later calls.
        let mut made: Vec<Option<(Vec<NodeId>, crate::graph::Shape)>> =
            vec![None; self.layers.len()];
        let mut outs: Vec<NodeId> = Vec::with_capacity(self.calls.len());
        let mut dropout_index = 0u64;
        let single_output = self.output_calls.len() == 1;
        for (i, call) in self.calls.iter().enumerate() {
            let (lref, name) = &self.layers[call.layer];
            let layer = *lref.layer();
            let args: Vec<NodeId> = call
                .inputs
                .iter()
                .map(|f| match f {
                    Src::Input(k) => inputs[*k],
                    Src::Call(c) => outs[*c],
                })
                .collect();
            b.who = format!("{} ({})", self.label(i), layer.kind());
            if self.sequential {
                // The historic wording: `layer 2 (Dense)`.
                b.who = format!("{} ({})", self.label(i), layer.stem_title());
            }
            let is_output_softmax =
                single_output && self.output_calls[0] == Src::Call(i) && layer == Layer::Softmax;
            if fuse_softmax && is_output_softmax {
                outs.push(args[0]);
                continue;
            }
            if layer.is_merge() {
                outs.push(b.merge(layer, &args, &call.inputs, self)?);
                continue;
            }
            if args.len() != 1 {
                return Err(Error::invalid(
                    op,
                    format!("{} takes one input, was called on {}", b.who, args.len()),
                ));
            }
            let x = args[0];
            let shape = b.g.node(x).shape.clone();
            let before = b.created.len();
            if let Some((nodes, first_shape)) = &made[call.layer] {
                if *first_shape != shape {
                    return Err(Error::Shape {
                        op,
                        detail: format!(
                            "{} is shared: its first call took {}, this call takes {} (a shared \
                             layer's calls take inputs of one shape)",
                            b.who,
                            crate::graph::show(first_shape),
                            crate::graph::show(&shape)
                        ),
                    });
                }
                b.reuse = Some(nodes.iter().rev().copied().collect());
            }
            let seed = seed.wrapping_add(dropout_index);
            if matches!(layer, Layer::Dropout(_)) {
                dropout_index += 1;
            }
            let y = b.apply(&layer, name, x, seed)?;
            b.reuse = None;
            if made[call.layer].is_none() {
                let nodes = b.created[before..].to_vec();
                made[call.layer] = Some((nodes, shape));
            }
            outs.push(y);
        }
        let out_nodes: Vec<NodeId> = self
            .output_calls
            .iter()
            .map(|f| match f {
                Src::Input(k) => inputs[*k],
                Src::Call(c) => outs[*c],
            })
            .collect();
        let logits = if out_nodes.len() == 1 {
            out_nodes[0]
        } else {
            let flat = out_nodes
                .iter()
                .map(|&o| match b.g.node(o).shape.len() {
                    2 => Ok(o),
                    _ => b.g.flatten(o),
                })
                .collect::<Result<Vec<_>>>()?;
            b.g.concat(&flat)?
        };
        let no_decay = crate::optim::ParamOptions {
            weight_decay: Some(0.0),
            ..Default::default()
        };
        for (name, p) in &b.params {
            if self
                .no_weight_decay
                .iter()
                .any(|n| name.contains(n.as_str()))
            {
                b.g.set_param_options(*p, no_decay)?;
            }
        }
        Ok(Built {
            graph: b.g,
            input: inputs[0],
            inputs,
            logits,
            outputs: out_nodes,
            params: b.params,
            buffers: b.buffers,
            layer_outputs: outs,
        })
    }

    /// A Keras-like table of layers, output shapes, parameter counts and (for models that
    /// are not a plain stack) the tensors each layer was called on, as Keras' "Connected to"
    /// (or, for a model whose shapes do not fit, the error naming the layer).
    pub fn summary(&self) -> String {
        let built = match self.build(false, 0) {
            Ok(b) => b,
            Err(e) => return format!("the model does not build: {e}\n"),
        };
        let g = &built.graph;
        let dims = |node: NodeId| {
            let d: Vec<String> = g
                .node(node)
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Batch => "None".to_string(),
                    Dim::Fixed(n) => n.to_string(),
                })
                .collect();
            format!("({})", d.join(", "))
        };
        let connected = !self.sequential;
        let width = if connected { 96 } else { 60 };
        let mut out = format!(
            "{:<28} {:<20} {:>10}",
            "Layer (type)", "Output Shape", "Param #"
        );
        if connected {
            out.push_str("  Connected to");
        }
        out.push('\n');
        out.push_str(&"=".repeat(width));
        out.push('\n');
        let mut rows: Vec<(String, String, usize, String)> = Vec::new();
        if connected {
            for (k, name) in self.input_names.iter().enumerate() {
                rows.push((
                    format!("{name} (InputLayer)"),
                    dims(built.inputs[k]),
                    0,
                    String::new(),
                ));
            }
        }
        let mut total = 0;
        for (li, (lref, name)) in self.layers.iter().enumerate() {
            let calls: Vec<usize> = (0..self.calls.len())
                .filter(|&c| self.calls[c].layer == li)
                .collect();
            let params = count(&built, name);
            total += params;
            let shapes: Vec<String> = calls
                .iter()
                .map(|&c| dims(built.layer_outputs[c]))
                .collect();
            let shape = if shapes.iter().all(|s| *s == shapes[0]) {
                shapes[0].clone()
            } else {
                "multiple".to_string()
            };
            let from: Vec<String> = calls
                .iter()
                .flat_map(|&c| self.calls[c].inputs.iter().map(|f| self.source_name(*f)))
                .collect();
            let title = if self.sequential {
                lref.layer().summary_name(name)
            } else {
                format!("{name} ({})", lref.layer().kind())
            };
            rows.push((title, shape, params, from.join(", ")));
        }
        for (title, shape, params, from) in rows {
            out.push_str(&format!("{title:<28} {shape:<20} {params:>10}"));
            if connected {
                out.push_str(&format!("  {from}"));
            }
            out.push('\n');
        }
        out.push_str(&"=".repeat(width));
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
        loss: super::Loss,
        optimizer: crate::optim::Optimizer,
        device: super::Device,
        seed: u64,
    ) -> Result<super::Model> {
        let arch = self.architecture();
        super::Model::new(self, arch, loss, optimizer, device, seed)
    }
}

impl Layer {
    /// The historic Sequential summary names (`dense_0 (Dense, relu)`, `flatten
    /// (Flatten)`): layers without weights are not numbered.
    fn summary_name(&self, name: &str) -> String {
        match self {
            Layer::Dense(_)
            | Layer::Conv2d(_)
            | Layer::LayerNorm { .. }
            | Layer::BatchNorm { .. }
            | Layer::Residual(_) => format!("{name} ({})", self.kind()),
            Layer::Activation(a) => format!("activation ({a:?})"),
            Layer::Dropout(rate) => format!("dropout (Dropout {rate})"),
            other => format!("{} ({})", other.stem(), other.kind()),
        }
    }

    /// The variant's name (`Dense`, `Conv2d`), as Sequential's errors have always put it.
    fn stem_title(&self) -> &'static str {
        match self {
            Layer::Dense(_) => "Dense",
            Layer::Conv2d(_) => "Conv2d",
            Layer::LayerNorm { .. } => "LayerNorm",
            Layer::BatchNorm { .. } => "BatchNorm",
            Layer::Residual(_) => "Residual",
            Layer::Activation(_) => "Activation",
            Layer::Softmax => "Softmax",
            Layer::Flatten => "Flatten",
            Layer::Dropout(_) => "Dropout",
            Layer::MaxPool2d { .. } => "MaxPool2d",
            Layer::AvgPool2d { .. } => "AvgPool2d",
            Layer::GlobalAvgPool => "GlobalAvgPool",
            Layer::Add => "Add",
            Layer::Multiply => "Multiply",
            Layer::Concatenate => "Concatenate",
        }
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

/// The graph being built: its parameters and buffers by name, and (for a shared layer's
/// later calls) the nodes its first call made, handed out again in the same order.
struct Builder {
    g: Graph,
    params: Vec<(String, NodeId)>,
    buffers: Vec<(String, NodeId)>,
    /// Every parameter and buffer, in the order made.
    created: Vec<NodeId>,
    /// Nodes to hand out instead of making new ones (last first).
    reuse: Option<Vec<NodeId>>,
    op: &'static str,
    /// The call being built, for errors (`dense_1 (Dense)`, `layer 2 (Dense)`).
    who: String,
}

impl Builder {
    /// A parameter of the layer being built (or, on a shared layer's later call, the one its
    /// first call made).
    fn param(&mut self, name: String, shape: &[usize], init: Init) -> NodeId {
        if let Some(n) = self.reuse.as_mut().and_then(|r| r.pop()) {
            return n;
        }
        let id = self.g.param(&name, shape, init);
        self.params.push((name, id));
        self.created.push(id);
        id
    }

    /// A buffer of the layer being built (see [`Builder::param`]).
    fn buffer(&mut self, name: String, shape: &[usize], init: Init) -> NodeId {
        if let Some(n) = self.reuse.as_mut().and_then(|r| r.pop()) {
            return n;
        }
        let id = self.g.buffer(&name, shape, init);
        self.buffers.push((name, id));
        self.created.push(id);
        id
    }

    /// A graph error, with the call named.
    fn named(&self, e: Error) -> Error {
        match e {
            Error::Shape { detail, .. } => Error::Shape {
                op: self.op,
                detail: format!("{}: {detail}", self.who),
            },
            Error::InvalidArgument { detail, .. } => Error::InvalidArgument {
                op: self.op,
                detail: format!("{}: {detail}", self.who),
            },
            other => other,
        }
    }

    fn shape_error(&self, detail: String) -> Error {
        Error::Shape {
            op: self.op,
            detail: format!("{} {detail}", self.who),
        }
    }

    /// Axis 1 of `x` when `x` has one of `ranks`.
    fn axis1(&self, x: NodeId, ranks: &[usize]) -> Option<usize> {
        let shape = &self.g.node(x).shape;
        match shape.get(1) {
            Some(Dim::Fixed(n)) if ranks.contains(&shape.len()) => Some(*n),
            _ => None,
        }
    }

    fn rank(&self, x: NodeId) -> usize {
        self.g.node(x).shape.len()
    }

    /// A merge of `args` (the tensors `from` of `f`), with errors naming both layers.
    fn merge(
        &mut self,
        layer: Layer,
        args: &[NodeId],
        from: &[Src],
        f: &Functional,
    ) -> Result<NodeId> {
        if args.len() < 2 {
            return Err(Error::invalid(
                self.op,
                format!("{} merges at least 2 tensors, got {}", self.who, args.len()),
            ));
        }
        let shown: Vec<String> = (0..args.len())
            .map(|k| {
                format!(
                    "{} {}",
                    f.source_name(from[k]),
                    crate::graph::show(&self.g.node(args[k]).shape)
                )
            })
            .collect();
        let described = |k: usize| shown[k].clone();
        let mut y = args[0];
        match layer {
            Layer::Concatenate => {
                for k in 1..args.len() {
                    let (a, b) = (&self.g.node(args[0]).shape, &self.g.node(args[k]).shape);
                    if a.len() != b.len() || a.len() < 2 || a[2..] != b[2..] {
                        return Err(self.shape_error(format!(
                            "cannot concatenate {} and {}: only axis 1 (features or channels) \
                             may differ",
                            described(0),
                            described(k)
                        )));
                    }
                }
                y = self.g.concat(args).map_err(|e| self.named(e))?;
            }
            _ => {
                for k in 1..args.len() {
                    if self.g.node(args[0]).shape != self.g.node(args[k]).shape {
                        return Err(self.shape_error(format!(
                            "cannot {} {} and {}: the shapes must be equal (no broadcasting)",
                            if layer == Layer::Add {
                                "add"
                            } else {
                                "multiply"
                            },
                            described(0),
                            described(k)
                        )));
                    }
                    y = match layer {
                        Layer::Add => self.g.add(y, args[k]),
                        _ => self.g.mul(y, args[k]),
                    }
                    .map_err(|e| self.named(e))?;
                }
            }
        }
        Ok(y)
    }

    /// One call of a single-input layer named `name`.
    fn apply(&mut self, layer: &Layer, name: &str, x: NodeId, seed: u64) -> Result<NodeId> {
        let who = self.who.clone();
        let named = |b: &Self, e: Error| b.named(e);
        Ok(match layer {
            Layer::Add | Layer::Multiply | Layer::Concatenate => unreachable!("merged by merge()"),
            Layer::Flatten => self.g.flatten(x).map_err(|e| named(self, e))?,
            Layer::Dense(d) => {
                if d.units == 0 {
                    return Err(Error::invalid(
                        self.op,
                        format!("{who}: units must be at least 1, got 0"),
                    ));
                }
                let Some(fan_in) = self.axis1(x, &[2]) else {
                    return Err(self.shape_error(format!(
                        "needs (batch, features) inputs; add Flatten first (got {} dimensions)",
                        self.rank(x)
                    )));
                };
                let w = self.param(format!("{name}.weight"), &[fan_in, d.units], d.init);
                let b = self.param(format!("{name}.bias"), &[d.units], Init::Zeros);
                let z = self.g.matmul(x, w).map_err(|e| named(self, e))?;
                let mut h = self.g.bias_add(z, b).map_err(|e| named(self, e))?;
                if let Some(act) = d.activation {
                    h = self.g.activation(h, act).map_err(|e| named(self, e))?;
                }
                h
            }
            Layer::Conv2d(c) => {
                if c.filters == 0 || c.kernel == 0 || c.stride == 0 {
                    return Err(Error::invalid(
                        self.op,
                        format!(
                            "{who}: filters, kernel size and stride must be at least 1, got {} \
                             filters, kernel {}, stride {}",
                            c.filters, c.kernel, c.stride
                        ),
                    ));
                }
                let Some(channels) = self.axis1(x, &[4]) else {
                    return Err(self.shape_error(format!(
                        "needs (batch, channels, height, width) inputs; give the model a \
                         [channels, height, width] input shape (got {} dimensions)",
                        self.rank(x)
                    )));
                };
                let w = self.param(
                    format!("{name}.weight"),
                    &[c.filters, channels, c.kernel, c.kernel],
                    c.init,
                );
                let b = self.param(format!("{name}.bias"), &[c.filters], Init::Zeros);
                let mut h = self
                    .g
                    .conv2d(x, w, b, c.stride, c.padding)
                    .map_err(|e| named(self, e))?;
                if let Some(act) = c.activation {
                    h = self.g.activation(h, act).map_err(|e| named(self, e))?;
                }
                h
            }
            Layer::MaxPool2d { size, stride } => self
                .g
                .max_pool2d(x, *size, *stride)
                .map_err(|e| named(self, e))?,
            Layer::AvgPool2d { size, stride } => self
                .g
                .avg_pool2d(x, *size, *stride)
                .map_err(|e| named(self, e))?,
            Layer::GlobalAvgPool => self.g.global_avg_pool(x).map_err(|e| named(self, e))?,
            Layer::LayerNorm { eps } => {
                let Some(features) = self.axis1(x, &[2]) else {
                    return Err(self.shape_error(format!(
                        "needs (batch, features) inputs; add Flatten first (got {} dimensions)",
                        self.rank(x)
                    )));
                };
                let gamma = self.param(format!("{name}.gamma"), &[features], Init::Constant(1.0));
                let beta = self.param(format!("{name}.beta"), &[features], Init::Zeros);
                self.g
                    .layer_norm(x, gamma, beta, *eps)
                    .map_err(|e| named(self, e))?
            }
            Layer::BatchNorm { eps, momentum } => {
                let Some(channels) = self.axis1(x, &[2, 4]) else {
                    return Err(self.shape_error(format!(
                        "needs (batch, features) or (batch, channels, height, width) inputs \
                         (got {} dimensions)",
                        self.rank(x)
                    )));
                };
                self.batch_norm(name, x, channels, *eps, *momentum)?
            }
            Layer::Residual(r) => {
                let Some(channels) = self.axis1(x, &[4]) else {
                    return Err(self.shape_error(format!(
                        "needs (batch, channels, height, width) inputs (got {} dimensions)",
                        self.rank(x)
                    )));
                };
                if r.filters == 0 || r.stride == 0 {
                    return Err(Error::invalid(
                        self.op,
                        format!(
                            "{who}: filters and stride must be at least 1, got {} filters, \
                             stride {}",
                            r.filters, r.stride
                        ),
                    ));
                }
                let bn = r.batch_norm;
                let a = self.conv_bn(
                    name,
                    ("conv1", "bn1", bn),
                    x,
                    (channels, r.filters, 3),
                    r.stride,
                )?;
                let a = self
                    .g
                    .activation(a, Activation::Relu)
                    .map_err(|e| named(self, e))?;
                let a =
                    self.conv_bn(name, ("conv2", "bn2", bn), a, (r.filters, r.filters, 3), 1)?;
                let shortcut = if r.stride == 1 && channels == r.filters {
                    x
                } else {
                    self.conv_bn(
                        name,
                        ("shortcut", "shortcut_bn", bn),
                        x,
                        (channels, r.filters, 1),
                        r.stride,
                    )?
                };
                let sum = self.g.add(a, shortcut).map_err(|e| named(self, e))?;
                self.g
                    .activation(sum, Activation::Relu)
                    .map_err(|e| named(self, e))?
            }
            Layer::Activation(act) => self.g.activation(x, *act).map_err(|e| named(self, e))?,
            Layer::Dropout(rate) => self.g.dropout(x, *rate, seed).map_err(|e| named(self, e))?,
            Layer::Softmax => self.g.softmax(x).map_err(|e| named(self, e))?,
        })
    }

    /// Batch normalization of `x` over `channels`: `<name>.gamma`, `.beta`,
    /// `.running_mean`, `.running_var`.
    fn batch_norm(
        &mut self,
        name: &str,
        x: NodeId,
        channels: usize,
        eps: f32,
        momentum: f32,
    ) -> Result<NodeId> {
        let gamma = self.param(format!("{name}.gamma"), &[channels], Init::Constant(1.0));
        let beta = self.param(format!("{name}.beta"), &[channels], Init::Zeros);
        let mean = self.buffer(format!("{name}.running_mean"), &[channels], Init::Zeros);
        let var = self.buffer(
            format!("{name}.running_var"),
            &[channels],
            Init::Constant(1.0),
        );
        self.g
            .batch_norm(x, (gamma, beta), (mean, var), eps, momentum)
            .map_err(|e| self.named(e))
    }

    /// A residual block's `kernel` x `kernel` convolution from `c_in` to `c_out` channels
    /// ("same" padding, He normal), then batch normalization when `bn`:
    /// `<block>.<conv>.weight` / `.bias`, `<block>.<bn>.gamma`, ...
    fn conv_bn(
        &mut self,
        block: &str,
        (conv, bn_name, bn): (&str, &str, bool),
        x: NodeId,
        (c_in, c_out, kernel): (usize, usize, usize),
        stride: usize,
    ) -> Result<NodeId> {
        let w = self.param(
            format!("{block}.{conv}.weight"),
            &[c_out, c_in, kernel, kernel],
            Init::HeNormal,
        );
        let b = self.param(format!("{block}.{conv}.bias"), &[c_out], Init::Zeros);
        let y = self
            .g
            .conv2d(x, w, b, stride, kernel / 2)
            .map_err(|e| self.named(e))?;
        if !bn {
            return Ok(y);
        }
        self.batch_norm(&format!("{block}.{bn_name}"), y, c_out, 1e-5, 0.1)
    }
}
