//! Runs a graph with the `cpu` reference functions, in f32 or f64.

use std::collections::HashMap;

use ndarray::{Array1, ArrayD, IxDyn};

use super::rules::{self, metric_kind, CpuArgs, Value};
use super::{Executor, Feed, Graph, NodeId, Op};
use crate::cpu::Scalar;
use crate::error::{Error, Result};
use crate::graph::ShapeOp;
use crate::ops::{ErrorSums, MetricKind, MetricTotals};

/// Parameter and buffer values, and the evaluation of a graph on the CPU.
#[derive(Debug, Clone)]
pub struct CpuRun<T> {
    pub params: HashMap<NodeId, ArrayD<T>>,
    /// Non-trainable state ([`Graph::buffer`]).
    pub buffers: HashMap<NodeId, ArrayD<T>>,
    /// The optimizer step dropout draws its masks for (1-based, like the executors count),
    /// or `None` when evaluating (dropout is the identity).
    pub training_step: Option<u64>,
}

impl<T: Scalar> CpuRun<T> {
    /// Parameters and buffers initialized from `seed` (parameter `i` from `seed + i`, buffer
    /// `j` from `seed + 2^32 + j`): the values the GPU executor starts from.
    pub fn new(graph: &Graph, seed: u64) -> Self {
        let values = |ids: Vec<NodeId>| -> HashMap<NodeId, ArrayD<T>> {
            ids.into_iter()
                .map(|id| {
                    let shape: Vec<usize> = graph.concrete_shapes(1)[id.0].clone();
                    let v = graph.initial_values(id, seed);
                    let v = v.into_iter().map(|x| T::of(x as f64)).collect();
                    let a = ArrayD::from_shape_vec(IxDyn(&shape), v).expect("init fills the shape");
                    (id, a)
                })
                .collect()
        };
        CpuRun {
            params: values(graph.params()),
            buffers: values(graph.buffers()),
            training_step: None,
        }
    }

    /// Evaluates every node up to and including `last`, given values for the inputs and
    /// labels it reads. Returns each node's value (None for nodes not computed).
    pub fn eval(
        &self,
        graph: &Graph,
        feeds: &HashMap<NodeId, Value<T>>,
        last: NodeId,
    ) -> Result<Vec<Option<Value<T>>>> {
        self.eval_updates(graph, feeds, last).map(|(vals, _)| vals)
    }

    /// [`CpuRun::eval`], also returning the new values of the buffers a training step moves
    /// (batch normalization's running statistics; none when `training_step` is `None`), for
    /// [`CpuRun::store`].
    #[allow(clippy::type_complexity)]
    pub fn eval_updates(
        &self,
        graph: &Graph,
        feeds: &HashMap<NodeId, Value<T>>,
        last: NodeId,
    ) -> Result<(Vec<Option<Value<T>>>, Vec<(NodeId, ArrayD<T>)>)> {
        if !graph.contains(last) {
            return Err(Error::invalid(
                "cpu graph",
                format!("node #{} is not in this graph", last.0),
            ));
        }
        let batch = feeds
            .values()
            .map(|v| match v {
                Value::Float(a) => a.shape().first().copied().unwrap_or(1),
                Value::Labels(l) => l.len(),
            })
            .next()
            .unwrap_or(1);
        let shapes = graph.concrete_shapes(batch);
        let mut vals: Vec<Option<Value<T>>> = vec![None; last.0 + 1];
        let updates = std::cell::RefCell::new(Vec::new());
        for i in 0..=last.0 {
            let node = &graph.nodes()[i];
            let value = match &node.op {
                Op::Shape(ShapeOp::Input) | Op::Shape(ShapeOp::Labels) => {
                    let v = feeds.get(&graph.id_at(i)).ok_or_else(|| {
                        Error::invalid(
                            "cpu graph",
                            format!("no value fed for input `{}`", node.name),
                        )
                    })?;
                    let got: Vec<usize> = match v {
                        Value::Float(a) => a.shape().to_vec(),
                        Value::Labels(l) => vec![l.len()],
                    };
                    if got != shapes[i] {
                        return Err(Error::shape(
                            "cpu graph",
                            format!(
                                "input `{}` should be {:?}, got {:?}",
                                node.name, shapes[i], got
                            ),
                        ));
                    }
                    v.clone()
                }
                Op::Shape(ShapeOp::Param(_)) => Value::Float(self.params[&graph.id_at(i)].clone()),
                Op::Shape(ShapeOp::Buffer(_)) => {
                    Value::Float(self.buffers[&graph.id_at(i)].clone())
                }
                _ => rules::eval_cpu(&CpuArgs {
                    node,
                    shape: &shapes[i],
                    vals: &vals,
                    training_step: self.training_step,
                    updates: &updates,
                })?,
            };
            vals[i] = Some(value);
        }
        Ok((vals, updates.into_inner()))
    }

    /// Stores buffer values from [`CpuRun::eval_updates`].
    pub fn store(&mut self, updates: Vec<(NodeId, ArrayD<T>)>) {
        for (b, value) in updates {
            self.buffers.insert(b, value);
        }
    }

    /// The scalar value of a loss node.
    pub fn scalar(vals: &[Option<Value<T>>], id: NodeId) -> Option<T> {
        vals.get(id.0)?.as_ref()?.float()?.iter().next().copied()
    }
}

/// Training on the CPU reference: the same differentiated graph, optimizer and metrics as
/// [`super::GpuExecutor`], slow but correct, for machines without a GPU.
pub struct CpuExecutor {
    graph: Graph,
    loss: NodeId,
    grads: super::Gradients,
    run: CpuRun<f32>,
    optimizer: crate::optim::Optimizer,
    /// Each parameter's optimizer state, one array per slot.
    state: HashMap<NodeId, Vec<Array1<f32>>>,
    step: u64,
    metrics: MetricTotals,
    clip: Option<f32>,
    /// Every node's value of a batch whose gradients are not yet applied. Kept whole until
    /// the update: dropping the activations between the halves of a step let the allocator
    /// return their pages and fault them in again every step (16% slower on a 512-wide MLP).
    pending: Option<Vec<Option<Value<f32>>>>,
}

impl CpuExecutor {
    /// Differentiates `graph` from `loss` and initializes parameters from `seed` (the same
    /// values the GPU executor starts from).
    pub fn new(
        mut graph: Graph,
        loss: NodeId,
        optimizer: crate::optim::Optimizer,
        seed: u64,
    ) -> Result<Self> {
        optimizer.validate()?;
        graph.check_leaf_sizes("CpuExecutor")?;
        let grads = graph.backward(loss)?;
        let run = CpuRun::new(&graph, seed);
        Ok(CpuExecutor {
            graph,
            loss,
            grads,
            run,
            optimizer,
            state: HashMap::new(),
            step: 0,
            metrics: MetricTotals::default(),
            clip: None,
            pending: None,
        })
    }

    fn feeds(
        &self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
    ) -> Result<HashMap<NodeId, Value<f32>>> {
        let shapes = self.graph.concrete_shapes(batch);
        let mut out = HashMap::new();
        for &(id, feed) in feeds {
            let i = self.graph.index(id);
            if !self.graph.contains(id) {
                return Err(Error::invalid(
                    "step",
                    format!("node #{i} is not in this graph"),
                ));
            }
            let node = self.graph.node(id);
            let len: usize = shapes[i].iter().product();
            let value = match (feed, &node.op) {
                (super::Feed::F32(d), Op::Shape(ShapeOp::Input)) if d.len() == len => Value::Float(
                    ArrayD::from_shape_vec(IxDyn(&shapes[i]), d.to_vec()).expect("length checked"),
                ),
                (super::Feed::U32(d), Op::Shape(ShapeOp::Labels)) if d.len() == len => {
                    Value::Labels(Array1::from(d.to_vec()))
                }
                _ => {
                    return Err(Error::shape(
                        "step",
                        format!(
                            "input `{}` needs {len} values of its type at batch {batch}",
                            node.name
                        ),
                    ))
                }
            };
            out.insert(id, value);
        }
        Ok(out)
    }

    fn accumulate(&mut self, vals: &[Option<Value<f32>>]) {
        let loss = CpuRun::scalar(vals, self.loss).unwrap_or(f32::NAN);
        let node = self.graph.node(self.loss);
        let (outputs, targets) = (node.inputs[0], node.inputs[1]);
        let Some(Value::Float(z)) = &vals[outputs.0] else {
            unreachable!("the loss was computed from float outputs")
        };
        let rows = z.shape()[0];
        let cols = z.len() / rows.max(1);
        let z = z.as_standard_layout();
        let z = z.as_slice().expect("standard layout");
        let first_max = |row: &[f32]| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        };
        let (correct, predictions) = match (&vals[targets.0], metric_kind(&node.op, cols)) {
            (Some(Value::Labels(y)), _) => {
                let right = z
                    .chunks(cols)
                    .zip(y.iter())
                    .filter(|(row, &label)| first_max(row) as u32 == label)
                    .count();
                (right, rows)
            }
            (Some(Value::Float(t)), kind) => {
                let t = t.as_standard_layout();
                let t = t.as_slice().expect("standard layout");
                match kind {
                    MetricKind::Binary { threshold } => {
                        let right = z
                            .iter()
                            .zip(t)
                            .filter(|(&p, &t)| (p > threshold) == (t > 0.5))
                            .count();
                        (right, z.len())
                    }
                    _ => {
                        let right = z
                            .chunks(cols)
                            .zip(t.chunks(cols))
                            .filter(|(p, t)| first_max(p) == first_max(t))
                            .count();
                        (right, rows)
                    }
                }
            }
            _ => unreachable!("the loss was computed from its targets"),
        };
        self.metrics
            .add_step(loss, rows as u64, correct as u64, predictions as u64);
        if let Some(Value::Float(t)) = &vals[targets.0] {
            let t = t.as_standard_layout();
            let t = t.as_slice().expect("standard layout");
            self.metrics.add_errors(&ErrorSums::of(z, t));
        }
    }

    fn pending(&mut self, op: &'static str) -> Result<&mut Vec<Option<Value<f32>>>> {
        self.pending.as_mut().ok_or_else(|| {
            Error::invalid(op, "no gradients are pending; call compute_gradients first")
        })
    }

    /// (parameter, its gradient node's index), in parameter order.
    fn gradient_nodes(&self) -> Vec<(NodeId, usize)> {
        self.graph
            .params()
            .into_iter()
            .filter_map(|p| Some((p, self.grads.of(p)?.0)))
            .collect()
    }

    /// A parameter's values.
    pub fn param(&self, p: NodeId) -> Option<&ArrayD<f32>> {
        self.run.params.get(&p)
    }

    /// A parameter's optimizer state: one vector per slot the optimizer keeps, in the order
    /// of [`crate::optim::Optimizer::state_slots`] (zeros before the first step).
    pub fn state(&self, p: NodeId) -> Option<Vec<Vec<f32>>> {
        let n = self.run.params.get(&p)?.len();
        let slots = self.optimizer.state_slots().len();
        Some(match self.state.get(&p) {
            Some(state) => state.iter().map(|s| s.to_vec()).collect(),
            None => vec![vec![0.0; n]; slots],
        })
    }
}

fn not_a_parameter(op: &'static str) -> Error {
    Error::invalid(op, "the node is not a parameter of this graph")
}

impl Executor for CpuExecutor {
    /// One training step: [`Self::compute_gradients`], then [`Self::apply_gradients`].
    fn step(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        self.compute_gradients(batch, feeds)?;
        self.apply_gradients()
    }

    /// The first half of a step (ARCHITECTURE.md, "The training step"): forward pass,
    /// metrics and backward pass; the gradients wait at the seam for
    /// [`Self::apply_gradients`].
    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        if self.pending.is_some() {
            return Err(Error::invalid(
                "compute_gradients",
                "the gradients of the last batch were computed but not applied; call \
                 apply_gradients first",
            ));
        }
        let feeds = self.feeds(batch, feeds)?;
        let last = self.graph.last().expect("a differentiated graph has nodes");
        self.run.training_step = Some(self.step + 1);
        let vals = self.run.eval_updates(&self.graph, &feeds, last);
        self.run.training_step = None;
        let (vals, updates) = vals?;
        self.run.store(updates);
        self.accumulate(&vals);
        self.pending = Some(vals);
        Ok(())
    }

    /// The seam: the pending gradients, flat in [`Graph::param_layout`]'s layout.
    fn read_gradients(&mut self) -> Result<Vec<f32>> {
        let (layout, len) = self.graph.param_layout();
        let nodes = self.gradient_nodes();
        let vals = self.pending("read_gradients")?;
        let mut flat = vec![0.0; len];
        for (p, g) in nodes {
            let &(_, off, n) = layout.iter().find(|l| l.0 == p).expect("p is a parameter");
            let g = vals[g].as_ref().and_then(|v| v.float());
            let g = g.expect("gradients are computed");
            flat[off..off + n]
                .iter_mut()
                .zip(g.iter())
                .for_each(|(d, s)| *d = *s);
        }
        Ok(flat)
    }

    /// The seam: replaces the pending gradients, flat in [`Graph::param_layout`]'s layout.
    fn write_gradients(&mut self, grads: &[f32]) -> Result<()> {
        let (layout, len) = self.graph.param_layout();
        let what = "a gradient layout";
        super::check_host_values("write_gradients", what, "gradient", len, grads)?;
        let nodes = self.gradient_nodes();
        let vals = self.pending("write_gradients")?;
        for (p, g) in nodes {
            let &(_, off, n) = layout.iter().find(|l| l.0 == p).expect("p is a parameter");
            let Some(Value::Float(g)) = vals[g].as_mut() else {
                unreachable!("gradients are computed")
            };
            g.iter_mut()
                .zip(&grads[off..off + n])
                .for_each(|(d, s)| *d = *s);
        }
        Ok(())
    }

    /// The second half of a step: clipping (when set) and the optimizer update from the
    /// pending gradients; counts the step.
    fn apply_gradients(&mut self) -> Result<()> {
        self.pending("apply_gradients")?;
        let nodes = self.gradient_nodes();
        let mut vals = self.pending.take().expect("checked above");
        // Each parameter's gradient, moved out of the step's values (one node per parameter).
        let mut grads: Vec<(NodeId, ArrayD<f32>)> = nodes
            .into_iter()
            .map(|(p, g)| match vals[g].take() {
                Some(Value::Float(a)) => (p, a),
                _ => unreachable!("gradients are computed"),
            })
            .collect();
        self.step += 1;
        if let Some(clip) = self.clip {
            // Summed in f64; the GPU sums in f32 in another order, so the two agree to rounding.
            let sumsq: f64 = grads
                .iter()
                .flat_map(|(_, g)| g.iter())
                .map(|&x| x as f64 * x as f64)
                .sum();
            let norm = sumsq.sqrt() as f32;
            let scale = if norm.is_finite() {
                clip / norm.max(clip)
            } else {
                f32::NAN
            };
            for (_, g) in &mut grads {
                g.mapv_inplace(|x| x * scale);
            }
        }
        for (p, g) in grads {
            let param = self
                .run
                .params
                .get_mut(&p)
                .expect("every parameter has a value");
            let n = param.len();
            let slots = self.optimizer.state_slots().len();
            let state = self
                .state
                .entry(p)
                .or_insert_with(|| vec![Array1::zeros(n); slots]);
            let mut state: Vec<_> = state.iter_mut().map(|s| s.view_mut()).collect();
            let pv = param
                .as_slice_mut()
                .expect("parameters are contiguous")
                .into();
            let gv = g.as_slice().expect("gradients are contiguous").into();
            self.optimizer
                .for_group(&self.graph.param_options(p))
                .cpu_step(self.step, pv, gv, &mut state)?;
        }
        Ok(())
    }

    /// Clips the gradients of every step to a global L2 norm of at most `max_norm`
    /// (`None`: no clipping).
    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        if let Some(c) = max_norm.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(Error::invalid(
                "clip_global_norm",
                format!("the norm limit must be finite and positive, got {c}"),
            ));
        }
        self.clip = max_norm;
        Ok(())
    }

    /// Forward pass and metrics only.
    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        let feeds = self.feeds(batch, feeds)?;
        let vals = self.run.eval(&self.graph, &feeds, self.loss)?;
        self.accumulate(&vals);
        Ok(())
    }

    /// The values of `node` for a batch (forward only; no metrics, no update).
    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>> {
        let feeds = self.feeds(batch, feeds)?;
        let vals = self.run.eval(&self.graph, &feeds, node)?;
        let v = vals[node.0]
            .as_ref()
            .and_then(|v| v.float())
            .ok_or_else(|| Error::invalid("forward", "the node holds no float values"))?;
        Ok(v.iter().copied().collect())
    }

    /// The differentiated graph (forward nodes, then gradient nodes).
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn metric_totals(&self) -> Result<MetricTotals> {
        Ok(self.metrics)
    }

    /// Zeroes the metrics.
    fn reset_metrics(&mut self) -> Result<()> {
        self.metrics = MetricTotals::default();
        Ok(())
    }

    /// Optimizer steps taken.
    fn steps(&self) -> u64 {
        self.step
    }

    /// Sets the optimizer step count (when resuming).
    fn set_steps(&mut self, steps: u64) -> Result<()> {
        self.step = steps;
        Ok(())
    }

    /// Overwrites a parameter's values.
    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()> {
        let param = self
            .run
            .params
            .get_mut(&p)
            .ok_or_else(|| Error::invalid("write_param", "not a parameter"))?;
        if param.len() != values.len() {
            return Err(Error::shape(
                "write_param",
                format!("{} values for {} parameters", values.len(), param.len()),
            ));
        }
        param
            .as_slice_mut()
            .expect("parameters are contiguous")
            .copy_from_slice(values);
        Ok(())
    }

    /// Overwrites a parameter's optimizer state: one vector per slot, as `state` gives.
    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        let n = self
            .run
            .params
            .get(&p)
            .ok_or_else(|| Error::invalid("write_state", "not a parameter"))?
            .len();
        self.optimizer
            .check_state(&self.graph.node(p).name, n, state)?;
        let arrays = state.iter().map(|s| Array1::from(s.clone())).collect();
        self.state.insert(p, arrays);
        Ok(())
    }

    /// A buffer's values.
    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>> {
        let values = self.run.buffers.get(&b).ok_or_else(|| {
            Error::invalid("read_buffer", "the node is not a buffer of this graph")
        })?;
        Ok(values.iter().copied().collect())
    }

    /// Overwrites a buffer's values.
    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()> {
        let buffer = self.run.buffers.get_mut(&b).ok_or_else(|| {
            Error::invalid("write_buffer", "the node is not a buffer of this graph")
        })?;
        super::check_host_values("write_buffer", "a buffer", "buffer", buffer.len(), values)?;
        buffer
            .as_slice_mut()
            .expect("buffers are contiguous")
            .copy_from_slice(values);
        Ok(())
    }

    /// Changes the learning rate.
    fn set_lr(&mut self, lr: f32) -> Result<()> {
        let o = self.optimizer.with_lr(lr);
        o.validate()?;
        self.optimizer = o;
        Ok(())
    }

    fn read_param(&self, p: NodeId) -> Result<Vec<f32>> {
        let values = self.param(p).ok_or_else(|| not_a_parameter("read_param"))?;
        Ok(values.iter().copied().collect())
    }

    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>> {
        self.state(p).ok_or_else(|| not_a_parameter("read_state"))
    }
}
