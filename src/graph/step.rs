//! The training-step contract both executors keep (ARCHITECTURE.md, "The training step"):
//! gradients are computed, wait at a seam where they can be read and replaced (a sum over
//! devices, an accumulation), then the update applies them. Code that trains (`nn::Model`,
//! a data-parallel driver) holds a `Box<dyn Executor>` and never asks which device it has.

use super::{Feed, Graph, NodeId};
use crate::data::Shard;
use crate::error::{Error, Result};
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
