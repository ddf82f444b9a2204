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

mod builder;

use builder::Builder;

use super::{Built, Conv2d, Dense, Layer, Residual};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, NodeId};

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

/// The elementwise sum of `xs` (Keras' `layers.add`). Shapes broadcast: on each axis the
/// sizes agree or one is 1 (repeated), and a (batch, channels) tensor among images counts as
/// (batch, channels, 1, 1), per-channel as in squeeze-and-excitation.
pub fn add(xs: &[&Tensor]) -> Tensor {
    Layer::Add.on_many(xs)
}

/// The elementwise product of `xs` (Keras' `layers.multiply`), with [`add`]'s
/// broadcasting: `multiply(&[&features, &gates])` scales each channel of (batch, c, h, w)
/// features by (batch, c) gates.
pub fn multiply(xs: &[&Tensor]) -> Tensor {
    Layer::Multiply.on_many(xs)
}

/// `xs` side by side along the features (matrices) or channels (images) (Keras'
/// `layers.concatenate` on the channels-first axis 1): every other axis must agree.
pub fn concatenate(xs: &[&Tensor]) -> Tensor {
    Layer::Concatenate.on_many(xs)
}

/// Where a call's input comes from: model input `k`, or the output of call `k`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
enum Src {
    Input(usize),
    Call(usize),
}

/// A functional model as checkpoints record it, so that [`super::load_model`] can rebuild it:
/// the inputs, every layer's name and full configuration, the calls in order and the outputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NetworkSpec {
    inputs: Vec<(String, Vec<usize>)>,
    layers: Vec<(String, Layer)>,
    calls: Vec<(usize, Vec<Src>)>,
    outputs: Vec<Src>,
    no_weight_decay: Vec<String>,
    sequential: bool,
}

impl NetworkSpec {
    /// The layers' configurations.
    pub(crate) fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().map(|(_, l)| l)
    }
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
                    if shape
                        .iter()
                        .try_fold(1usize, |n, &d| n.checked_mul(d))
                        .is_none()
                    {
                        return Err(err(format!(
                            "input {k} has shape {shape:?}, more values per sample than can be \
                             counted"
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

    /// The model as checkpoints record it.
    pub(crate) fn spec(&self) -> NetworkSpec {
        NetworkSpec {
            inputs: self
                .input_names
                .iter()
                .cloned()
                .zip(self.input_shapes.iter().cloned())
                .collect(),
            layers: self
                .layers
                .iter()
                .map(|(l, n)| (n.clone(), *l.layer()))
                .collect(),
            calls: self
                .calls
                .iter()
                .map(|c| (c.layer, c.inputs.clone()))
                .collect(),
            outputs: self.output_calls.clone(),
            no_weight_decay: self.no_weight_decay.clone(),
            sequential: self.sequential,
        }
    }

    /// The model a [`NetworkSpec`] describes: the same layers, names and wiring (a spec that
    /// refers to a layer, input or call it does not hold is an error, not a panic).
    pub(crate) fn from_spec(spec: &NetworkSpec) -> Result<Self> {
        let bad =
            |what: String| Error::invalid("load_model", format!("the model description {what}"));
        let inputs: Vec<Tensor> = spec
            .inputs
            .iter()
            .map(|(name, shape)| Input::named(name, shape))
            .collect();
        let layers: Vec<LayerRef> = spec
            .layers
            .iter()
            .map(|(name, layer)| LayerRef::named(name, *layer))
            .collect();
        let mut made: Vec<Tensor> = Vec::with_capacity(spec.calls.len());
        let pick = |made: &[Tensor], s: Src| -> Result<Tensor> {
            match s {
                Src::Input(k) => inputs.get(k).cloned(),
                Src::Call(k) => made.get(k).cloned(),
            }
            .ok_or_else(|| bad(format!("reads {s:?}, which comes later or does not exist")))
        };
        for (layer, args) in &spec.calls {
            let layer = layers
                .get(*layer)
                .ok_or_else(|| bad(format!("calls layer {layer} of {}", layers.len())))?;
            let args = args
                .iter()
                .map(|&s| pick(&made, s))
                .collect::<Result<Vec<_>>>()?;
            made.push(layer.call_many(&args.iter().collect::<Vec<_>>()));
        }
        let outputs = spec
            .outputs
            .iter()
            .map(|&s| pick(&made, s))
            .collect::<Result<Vec<_>>>()?;
        let mut f = Self::trace(
            &inputs.iter().collect::<Vec<_>>(),
            &outputs.iter().collect::<Vec<_>>(),
            spec.sequential,
        )?;
        f.no_weight_decay = spec.no_weight_decay.clone();
        Ok(f)
    }

    /// Each input's sample shape.
    pub fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }

    /// Whether a single input's first call is `Permute((3, 1, 2))`, so images arrive
    /// channels last ([`super::Sequential::channels_last`]).
    pub fn channels_last(&self) -> bool {
        let first = self.calls.first();
        self.input_shapes.len() == 1
            && first.is_some_and(|c| {
                c.inputs == [Src::Input(0)]
                    && *self.layers[c.layer].0.layer() == Layer::permute(&[3, 1, 2])
            })
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

    /// The epsilon of the batch normalization layer named `name`.
    pub(super) fn batch_norm_eps(&self, name: &str) -> Option<f32> {
        self.layers.iter().find_map(|(l, n)| match l.layer() {
            Layer::BatchNorm { eps, .. } if n == name => Some(*eps),
            _ => None,
        })
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
        self.build_layers(fuse_softmax, seed)
            .map_err(|e| self.layout_hint(e))
    }

    /// A shape error on a model whose input shape looks like Keras' channels-last image
    /// layout, (height, width, channels), with the channels-first shape to write instead.
    fn layout_hint(&self, e: Error) -> Error {
        let Error::Shape { op, detail } = e else {
            return e;
        };
        let hint = self.input_shapes.iter().find_map(|s| match s.as_slice() {
            &[h, w, c] if c <= 4 && h > 4 && w > 4 => Some(format!(
                "; the input shape ({h}, {w}, {c}) looks like Keras' channels-last layout \
                 (height, width, channels): wgtrain's images are channels first, so write \
                 ({c}, {h}, {w}) and give the data in that layout, or keep Keras' layout with \
                 Sequential::new(&[{h}, {w}, {c}]).channels_last()"
            )),
            _ => None,
        });
        Error::Shape {
            op,
            detail: detail + &hint.unwrap_or_default(),
        }
    }

    fn build_layers(&self, fuse_softmax: bool, seed: u64) -> Result<Built> {
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
                b.who = format!("{} ({})", self.label(i), layer.variant_name());
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

    /// The same model with every batch normalization that directly follows a convolution
    /// or dense layer without activation removed, and the pairs to fold (ARCHITECTURE.md,
    /// "Models"): evaluation-mode batch normalization is a per-channel affine map, which the
    /// layer before it can absorb. Residual blocks lose theirs the same way. A pair is folded
    /// only when neither layer is shared and nothing else reads the layer's output. Every
    /// layer keeps its name, so the remaining weights keep theirs.
    pub(super) fn fold_batch_norm(&self) -> Result<(Functional, Vec<Fold>)> {
        let calls_of = |li: usize| self.calls.iter().filter(|c| c.layer == li).count();
        let mut readers = vec![0; self.calls.len()];
        for c in &self.calls {
            for f in &c.inputs {
                if let Src::Call(j) = f {
                    readers[*j] += 1;
                }
            }
        }
        let mut folds = Vec::new();
        // One new layer per old one (so shared layers stay shared), named as before.
        let mut renamed: Vec<Option<LayerRef>> = vec![None; self.layers.len()];
        let mut out: Vec<Tensor> = Vec::with_capacity(self.calls.len());
        for call in &self.calls {
            let (lref, name) = &self.layers[call.layer];
            let args: Vec<Tensor> = call
                .inputs
                .iter()
                .map(|f| match f {
                    Src::Input(k) => self.inputs[*k].clone(),
                    Src::Call(j) => out[*j].clone(),
                })
                .collect();
            if let (Layer::BatchNorm { .. }, [Src::Call(j)]) = (lref.layer(), &call.inputs[..]) {
                let (prev, prev_name) = &self.layers[self.calls[*j].layer];
                let foldable = match prev.layer() {
                    Layer::Conv2d(c) => c.activation.is_none(),
                    Layer::Dense(d) => d.activation.is_none(),
                    _ => false,
                } && calls_of(call.layer) == 1
                    && calls_of(self.calls[*j].layer) == 1
                    && readers[*j] == 1
                    && !self.output_calls.contains(&Src::Call(*j));
                if foldable {
                    folds.push(Fold {
                        layer: prev_name.clone(),
                        bn: name.clone(),
                        dense: matches!(prev.layer(), Layer::Dense(_)),
                    });
                    out.push(args[0].clone());
                    continue;
                }
            }
            let new = renamed[call.layer].get_or_insert_with(|| match lref.layer() {
                Layer::Residual(r) if r.batch_norm => {
                    for (conv, bn) in [
                        ("conv1", "bn1"),
                        ("conv2", "bn2"),
                        ("shortcut", "shortcut_bn"),
                    ] {
                        folds.push(Fold {
                            layer: format!("{name}.{conv}"),
                            bn: format!("{name}.{bn}"),
                            dense: false,
                        });
                    }
                    LayerRef::named(name, r.without_batch_norm())
                }
                other => LayerRef::named(name, *other),
            });
            let refs: Vec<&Tensor> = args.iter().collect();
            out.push(new.call_many(&refs));
        }
        let outputs: Vec<Tensor> = self
            .output_calls
            .iter()
            .map(|f| match f {
                Src::Input(k) => self.inputs[*k].clone(),
                Src::Call(j) => out[*j].clone(),
            })
            .collect();
        let inputs: Vec<&Tensor> = self.inputs.iter().collect();
        let outputs: Vec<&Tensor> = outputs.iter().collect();
        let mut f = Functional::trace(&inputs, &outputs, self.sequential)?;
        f.input_names = self.input_names.clone();
        f.no_weight_decay = self.no_weight_decay.clone();
        Ok((f, folds))
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
        for (k, name) in self.input_names.iter().enumerate() {
            rows.push((
                format!("{name} (InputLayer)"),
                dims(built.inputs[k]),
                0,
                String::new(),
            ));
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
            let title = format!("{name} ({})", lref.layer().kind());
            rows.push((title, shape, params, from.join(", ")));
        }
        for (title, shape, params, from) in rows {
            out.push_str(&format!("{title:<28} {shape:<20} {params:>10}"));
            if connected && !from.is_empty() {
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
}

/// A convolution or dense layer (`layer`, e.g. `conv_0` or `residual_1.conv1`) and the batch
/// normalization after it (`bn`) that [`Functional::fold_batch_norm`] removed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fold {
    pub layer: String,
    pub bn: String,
    /// A dense layer (weights (in, out)) rather than a convolution (weights (out, ...)).
    pub dense: bool,
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

// Calling a layer on tensors (the functional API's verbs on the layer configurations).

impl Layer {
    /// This merge layer applied to `xs`.
    pub fn on_many(self, xs: &[&Tensor]) -> Tensor {
        LayerRef::new(self).call_many(xs)
    }

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
