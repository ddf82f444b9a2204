//! Reading and writing a GPU executor's parameters, gradients, optimizer state and node
//! values (checkpoints, tests, debugging).

use std::sync::Arc;

use super::{numel, GpuExecutor};
use crate::error::{Error, Result};
use crate::graph::plan::Views;
use crate::graph::NodeId;

impl GpuExecutor {
    pub(super) fn param_range(&self, p: NodeId) -> Result<(usize, usize)> {
        let off = *self.arenas.offsets.get(&p).ok_or_else(|| {
            Error::invalid(
                "executor",
                format!("node #{} is not a parameter", self.graph.index(p)),
            )
        })?;
        let len = numel(&self.graph.concrete_shapes(1)[self.graph.index(p)]);
        Ok((off, len))
    }

    /// A parameter's gradient from the last step.
    pub fn read_grad(&self, p: NodeId) -> Result<Vec<f32>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.param_range(p)?;
        self.arenas.grads.view(off, len)?.read(ctx)
    }

    /// The value of any node from the last step of a batch size (for tests and debugging).
    pub fn read_node(&self, batch: usize, id: NodeId) -> Result<Vec<f32>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
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

    pub(super) fn buffer_range(&self, b: NodeId, op: &'static str) -> Result<(usize, usize)> {
        let off = *self
            .arenas
            .buffer_offsets
            .get(&b)
            .ok_or_else(|| Error::invalid(op, "the node is not a buffer of this graph"))?;
        let len = numel(&self.graph.concrete_shapes(1)[self.graph.index(b)]);
        Ok((off, len))
    }
}
