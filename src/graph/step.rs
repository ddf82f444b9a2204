//! The training-step contract both executors keep (ARCHITECTURE.md, "The training step"):
//! gradients are computed, wait at a seam where they can be read and replaced (a sum over
//! devices, an accumulation), then the update applies them. Code that trains (`nn::Model`,
//! a data-parallel driver) holds a `Box<dyn Executor>` and never asks which device it has.

use std::sync::Arc;

use super::{CpuExecutor, Feed, GpuExecutor, Graph, NodeId};
use crate::data::Shard;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::ops::{MetricTotals, Metrics};

/// A differentiated graph with its parameters, optimizer and metrics on some device.
pub trait Executor {
    /// The differentiated graph (forward nodes, then gradient nodes).
    fn graph(&self) -> &Graph;

    /// Forward pass, metrics and backward pass for a batch. The gradients then wait at the
    /// seam until [`Executor::apply_gradients`]; computing another batch first is an error.
    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()>;

    /// The seam: the pending gradients, flat in [`Graph::param_layout`]'s layout.
    fn read_gradients(&mut self) -> Result<Vec<f32>>;

    /// The seam: replaces the pending gradients (same layout; every value finite).
    fn write_gradients(&mut self, grads: &[f32]) -> Result<()>;

    /// Clipping (when set) and the optimizer update from the pending gradients; counts the
    /// step.
    fn apply_gradients(&mut self) -> Result<()>;

    /// One training step. On a GPU it is one submission: nothing waits at the seam.
    fn step(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        self.compute_gradients(batch, feeds)?;
        self.apply_gradients()
    }

    /// Forward pass and metrics only (evaluation; dropout is the identity).
    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()>;

    /// The values of `node` for a batch, evaluating (no metrics, no update).
    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>>;

    /// The running totals of the metrics accumulated since the last reset (replicas add
    /// theirs).
    fn metric_totals(&self) -> Result<MetricTotals>;

    /// Metrics accumulated since the last reset.
    fn metrics(&self) -> Result<Metrics> {
        Ok(self.metric_totals()?.metrics())
    }

    /// Zeroes the metrics.
    fn reset_metrics(&mut self) -> Result<()>;

    /// Optimizer steps taken.
    fn steps(&self) -> u64;

    /// Sets the optimizer step count (when resuming); Adam's bias correction follows it.
    fn set_steps(&mut self, steps: u64) -> Result<()>;

    /// Changes the learning rate for the next steps.
    fn set_lr(&mut self, lr: f32) -> Result<()>;

    /// Clips every step's gradients to a global L2 norm of at most `max_norm` (`None`: no
    /// clipping).
    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()>;

    /// A parameter's values.
    fn read_param(&self, p: NodeId) -> Result<Vec<f32>>;

    /// Overwrites a parameter's values.
    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()>;

    /// A parameter's optimizer state: one vector per slot the optimizer keeps, in the order
    /// of [`crate::optim::Optimizer::state_slots`].
    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>>;

    /// Overwrites a parameter's optimizer state: one vector per slot, as `read_state` gives.
    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()>;

    /// A buffer's values ([`Graph::buffer`]).
    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>>;

    /// Overwrites a buffer's values (every value finite).
    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()>;

    /// Runs the pending work to completion (for timing a step's parts; nothing to do where
    /// work is not asynchronous).
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// The part of each batch this executor trains and evaluates on when it is one rank of a
    /// distributed run (`None`: whole batches). `nn::Model` gives it to its loaders.
    fn shard(&self) -> Option<Shard> {
        None
    }

    /// Checks that every rank of a distributed run passes the same `value` for `what` (the
    /// number of samples about to be sharded), before work that depends on it.
    fn agree(&mut self, _what: &'static str, _value: u64) -> Result<()> {
        Ok(())
    }

    /// Tells the other ranks of a distributed run that this one stopped with `error`, so
    /// that they stop with an error naming it instead of waiting for it.
    fn abandon(&mut self, _error: &Error) {}
}

/// A [`GpuExecutor`] with the context it runs on: the form that implements [`Executor`].
pub struct GpuSession {
    pub ctx: Arc<GpuContext>,
    pub exec: GpuExecutor,
}

impl Executor for GpuSession {
    fn graph(&self) -> &Graph {
        self.exec.graph()
    }

    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        self.exec.compute_gradients(&self.ctx, batch, feeds)
    }

    fn read_gradients(&mut self) -> Result<Vec<f32>> {
        self.exec.read_gradients(&self.ctx)
    }

    fn write_gradients(&mut self, grads: &[f32]) -> Result<()> {
        self.exec.write_gradients(&self.ctx, grads)
    }

    fn apply_gradients(&mut self) -> Result<()> {
        self.exec.apply_gradients(&self.ctx)
    }

    fn finish(&mut self) -> Result<()> {
        self.exec.finish(&self.ctx)
    }

    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        self.exec.evaluate_batch(&self.ctx, batch, feeds)
    }

    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>> {
        self.exec.forward(&self.ctx, batch, feeds, node)
    }

    fn metric_totals(&self) -> Result<MetricTotals> {
        self.exec.metric_totals(&self.ctx)
    }

    fn reset_metrics(&mut self) -> Result<()> {
        self.exec.reset_metrics(&self.ctx)
    }

    fn steps(&self) -> u64 {
        self.exec.steps()
    }

    fn set_steps(&mut self, steps: u64) -> Result<()> {
        self.exec.set_steps(&self.ctx, steps)
    }

    fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.exec.set_lr(&self.ctx, lr)
    }

    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        self.exec.set_clip_global_norm(&self.ctx, max_norm)
    }

    fn read_param(&self, p: NodeId) -> Result<Vec<f32>> {
        self.exec.read_param(&self.ctx, p)
    }

    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()> {
        self.exec.write_param(&self.ctx, p, values)
    }

    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>> {
        self.exec.read_state(&self.ctx, p)
    }

    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        self.exec.write_state(&self.ctx, p, state)
    }

    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>> {
        self.exec.read_buffer(&self.ctx, b)
    }

    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()> {
        self.exec.write_buffer(&self.ctx, b, values)
    }
}

fn not_a_parameter(op: &'static str) -> Error {
    Error::invalid(op, "the node is not a parameter of this graph")
}

impl Executor for CpuExecutor {
    fn graph(&self) -> &Graph {
        CpuExecutor::graph(self)
    }

    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        CpuExecutor::compute_gradients(self, batch, feeds)
    }

    fn read_gradients(&mut self) -> Result<Vec<f32>> {
        CpuExecutor::read_gradients(self)
    }

    fn write_gradients(&mut self, grads: &[f32]) -> Result<()> {
        CpuExecutor::write_gradients(self, grads)
    }

    fn apply_gradients(&mut self) -> Result<()> {
        CpuExecutor::apply_gradients(self)
    }

    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        CpuExecutor::evaluate_batch(self, batch, feeds)
    }

    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>> {
        CpuExecutor::forward(self, batch, feeds, node)
    }

    fn metric_totals(&self) -> Result<MetricTotals> {
        Ok(CpuExecutor::metric_totals(self))
    }

    fn reset_metrics(&mut self) -> Result<()> {
        CpuExecutor::reset_metrics(self);
        Ok(())
    }

    fn steps(&self) -> u64 {
        CpuExecutor::steps(self)
    }

    fn set_steps(&mut self, steps: u64) -> Result<()> {
        CpuExecutor::set_steps(self, steps);
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) -> Result<()> {
        CpuExecutor::set_lr(self, lr)
    }

    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        CpuExecutor::set_clip_global_norm(self, max_norm)
    }

    fn read_param(&self, p: NodeId) -> Result<Vec<f32>> {
        let values = self.param(p).ok_or_else(|| not_a_parameter("read_param"))?;
        Ok(values.iter().copied().collect())
    }

    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()> {
        CpuExecutor::write_param(self, p, values)
    }

    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>> {
        self.state(p).ok_or_else(|| not_a_parameter("read_state"))
    }

    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        CpuExecutor::write_state(self, p, state)
    }

    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>> {
        CpuExecutor::read_buffer(self, b)
    }

    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()> {
        CpuExecutor::write_buffer(self, b, values)
    }
}
