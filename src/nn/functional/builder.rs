//! Lowering a functional model's layer calls to graph nodes: each layer kind's parameters,
//! buffers and ops, and the parameter reuse that makes a shared layer share its weights.

use super::{Functional, Src};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Init, NodeId};
use crate::nn::Layer;
use crate::ops::Activation;

/// The graph being built: its parameters and buffers by name, and (for a shared layer's
/// later calls) the nodes its first call made, handed out again in the same order.
pub(super) struct Builder {
    pub(super) g: Graph,
    pub(super) params: Vec<(String, NodeId)>,
    pub(super) buffers: Vec<(String, NodeId)>,
    /// Every parameter and buffer, in the order made.
    pub(super) created: Vec<NodeId>,
    /// Nodes to hand out instead of making new ones (last first).
    pub(super) reuse: Option<Vec<NodeId>>,
    pub(super) op: &'static str,
    /// The call being built, for errors (`dense_1 (Dense)`, `layer 2 (Dense)`).
    pub(super) who: String,
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
    pub(super) fn merge(
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
        let y = match layer {
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
                self.g.concat(args).map_err(|e| self.named(e))?
            }
            _ => {
                let verb = if layer == Layer::Add {
                    "add"
                } else {
                    "multiply"
                };
                let args = self.broadcast_all(args, verb, &described)?;
                let mut y = args[0];
                for &x in &args[1..] {
                    y = match layer {
                        Layer::Add => self.g.add(y, x),
                        _ => self.g.mul(y, x),
                    }
                    .map_err(|e| self.named(e))?;
                }
                y
            }
        };
        Ok(y)
    }

    /// `args` brought to one shape for an elementwise merge (ARCHITECTURE.md, "Models"): a
    /// (batch, channels) tensor among images is viewed as (batch, channels, 1, 1); then on
    /// each axis the sizes must agree or be 1, and inputs are repeated along their 1s.
    fn broadcast_all(
        &mut self,
        args: &[NodeId],
        verb: &str,
        described: &dyn Fn(usize) -> String,
    ) -> Result<Vec<NodeId>> {
        let rank = args.iter().map(|&a| self.rank(a)).max().unwrap_or(0);
        let mut shaped = Vec::with_capacity(args.len());
        for &a in args {
            let shape = self.g.node(a).shape.clone();
            shaped.push(if shape.len() == 2 && rank == 4 {
                let view = [shape[0], shape[1], Dim::Fixed(1), Dim::Fixed(1)];
                self.g.reshape(a, &view).map_err(|e| self.named(e))?
            } else {
                a
            });
        }
        let mut out = self.g.node(shaped[0]).shape.clone();
        for (k, &x) in shaped.iter().enumerate() {
            let s = &self.g.node(x).shape;
            let clash = s.len() != out.len()
                || s.iter().zip(out.iter_mut()).any(|(a, o)| match (*a, *o) {
                    (a, o) if a == o || a == Dim::Fixed(1) => false,
                    (a, Dim::Fixed(1)) => {
                        *o = a;
                        false
                    }
                    _ => true,
                });
            if clash {
                return Err(self.shape_error(format!(
                    "cannot {verb} {} and {}: on each axis the sizes must agree or one must be \
                     1 (a (batch, channels) tensor counts as (batch, channels, 1, 1) among \
                     images)",
                    described(0),
                    described(k)
                )));
            }
        }
        shaped
            .into_iter()
            .map(|a| {
                if self.g.node(a).shape == out {
                    Ok(a)
                } else {
                    self.g.broadcast(a, &out).map_err(|e| self.named(e))
                }
            })
            .collect()
    }

    /// One call of a single-input layer named `name`.
    pub(super) fn apply(
        &mut self,
        layer: &Layer,
        name: &str,
        x: NodeId,
        seed: u64,
    ) -> Result<NodeId> {
        let who = self.who.clone();
        Ok(match layer {
            Layer::Add | Layer::Multiply | Layer::Concatenate => unreachable!("merged by merge()"),
            Layer::Flatten => self.g.flatten(x).map_err(|e| self.named(e))?,
            Layer::Permute(p) => {
                let dims = p.dims();
                let rank = self.g.node(x).shape.len() - 1;
                let mut sorted = dims.clone();
                sorted.sort_unstable();
                if dims.len() > 4 || sorted != (1..=rank).collect::<Vec<_>>() {
                    return Err(self.shape_error(format!(
                        "Permute({dims:?}) must order the {rank} sample axes 1..={rank}, each \
                         once"
                    )));
                }
                let perm: Vec<usize> = std::iter::once(0).chain(dims).collect();
                self.g.permute(x, &perm).map_err(|e| self.named(e))?
            }
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
                let z = self.g.matmul(x, w).map_err(|e| self.named(e))?;
                let mut h = self.g.bias_add(z, b).map_err(|e| self.named(e))?;
                if let Some(act) = d.activation {
                    h = self.g.activation(h, act).map_err(|e| self.named(e))?;
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
                    .map_err(|e| self.named(e))?;
                if let Some(act) = c.activation {
                    h = self.g.activation(h, act).map_err(|e| self.named(e))?;
                }
                h
            }
            Layer::MaxPool2d { size, stride } => self
                .g
                .max_pool2d(x, *size, *stride)
                .map_err(|e| self.named(e))?,
            Layer::AvgPool2d { size, stride } => self
                .g
                .avg_pool2d(x, *size, *stride)
                .map_err(|e| self.named(e))?,
            Layer::GlobalAvgPool => self.g.global_avg_pool(x).map_err(|e| self.named(e))?,
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
                    .map_err(|e| self.named(e))?
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
                    .map_err(|e| self.named(e))?;
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
                let sum = self.g.add(a, shortcut).map_err(|e| self.named(e))?;
                self.g
                    .activation(sum, Activation::Relu)
                    .map_err(|e| self.named(e))?
            }
            Layer::Activation(act) => self.g.activation(x, *act).map_err(|e| self.named(e))?,
            Layer::Dropout(rate) => self.g.dropout(x, *rate, seed).map_err(|e| self.named(e))?,
            Layer::Softmax => self.g.softmax(x).map_err(|e| self.named(e))?,
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
