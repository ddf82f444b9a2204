//! Reading and writing a GPU executor's parameters, gradients, optimizer state and node
//! values (checkpoints, tests, debugging).

use super::{numel, GpuExecutor};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::plan::Views;
use crate::graph::NodeId;

impl GpuExecutor {
    fn param_range(&self, p: NodeId) -> Result<(usize, usize)> {
        let off = *self.arenas.offsets.get(&p).ok_or_else(|| {
            Error::invalid(
                "executor",
                format!("node #{} is not a parameter", self.graph.index(p)),
            )
        })?;
        let len = numel(&self.graph.concrete_shapes(1)[self.graph.index(p)]);
        Ok((off, len))
    }

    /// A parameter's current values.
    pub fn read_param(&self, ctx: &GpuContext, p: NodeId) -> Result<Vec<f32>> {
        let (off, len) = self.param_range(p)?;
        self.arenas.params.view(off, len)?.read(ctx)
    }

    /// A parameter's gradient from the last step.
    pub fn read_grad(&self, ctx: &GpuContext, p: NodeId) -> Result<Vec<f32>> {
        let (off, len) = self.param_range(p)?;
        self.arenas.grads.view(off, len)?.read(ctx)
    }

    /// A parameter's optimizer state: one vector per slot the optimizer keeps, in the order
    /// of [`crate::optim::Optimizer::state_slots`].
    pub fn read_state(&self, ctx: &GpuContext, p: NodeId) -> Result<Vec<Vec<f32>>> {
        let (off, len) = self.param_range(p)?;
        self.arenas
            .state
            .iter()
            .map(|arena| arena.view(off, len)?.read(ctx))
            .collect()
    }

    /// Overwrites a parameter's optimizer state: one vector per slot, as `read_state` gives.
    pub fn write_state(&self, ctx: &GpuContext, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        let (off, len) = self.param_range(p)?;
        self.optimizer
            .check_state(&self.graph.node(p).name, len, state)?;
        for (arena, values) in self.arenas.state.iter().zip(state) {
            arena.write(ctx, off, values)?;
        }
        Ok(())
    }

    /// Overwrites a parameter's values.
    pub fn write_param(&self, ctx: &GpuContext, p: NodeId, values: &[f32]) -> Result<()> {
        let (off, len) = self.param_range(p)?;
        if values.len() != len {
            return Err(Error::shape(
                "write_param",
                format!("{} values for {len} parameters", values.len()),
            ));
        }
        self.arenas.params.write(ctx, off, values)
    }

    /// The value of any node from the last step of a batch size (for tests and debugging).
    pub fn read_node(&self, ctx: &GpuContext, batch: usize, id: NodeId) -> Result<Vec<f32>> {
        let plan = self
            .plans
            .get(&batch)
            .ok_or_else(|| Error::invalid("read_node", format!("no plan for batch {batch}")))?;
        let i = self.graph.index(id);
        if !self.graph.contains(id) {
            return Err(Error::invalid(
                "read_node",
                format!("node #{i} is not in this graph"),
            ));
        }
        let views = Views {
            ctx,
            locs: &plan.locs,
            lens: &plan.lens,
            params: &self.arenas.params,
            grads: &self.arenas.grads,
            buffers: &self.arenas.buffers,
            inputs: &plan.inputs,
            slots: &plan.slots,
        };
        views.view(i)?.read(ctx)
    }

    /// A buffer's values ([`crate::graph::Graph::buffer`]).
    pub fn read_buffer(&self, ctx: &GpuContext, b: NodeId) -> Result<Vec<f32>> {
        let (off, len) = self.buffer_range(b, "read_buffer")?;
        self.arenas.buffers.view(off, len)?.read(ctx)
    }

    /// Overwrites a buffer's values (every value finite); later steps read the new values.
    pub fn write_buffer(&self, ctx: &GpuContext, b: NodeId, values: &[f32]) -> Result<()> {
        let (off, len) = self.buffer_range(b, "write_buffer")?;
        crate::graph::check_host_values("write_buffer", "a buffer", "buffer", len, values)?;
        self.arenas.buffers.write(ctx, off, values)
    }

    fn buffer_range(&self, b: NodeId, op: &'static str) -> Result<(usize, usize)> {
        let off = *self
            .arenas
            .buffer_offsets
            .get(&b)
            .ok_or_else(|| Error::invalid(op, "the node is not a buffer of this graph"))?;
        let len = numel(&self.graph.concrete_shapes(1)[self.graph.index(b)]);
        Ok((off, len))
    }
}
