//! What a GPU executor holds on the device, by purpose, counted from the resources it owns.

use super::GpuExecutor;
use crate::gpu::{GpuBuffer, Ledger};

/// Bytes the executor holds on the GPU, by purpose. [`MemoryReport::total`] is every byte
/// it allocated (as counted by [`crate::gpu::Counters::bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReport {
    pub parameters: u64,
    /// Non-trainable buffers ([`crate::graph::Graph::buffer`]).
    pub buffers: u64,
    /// The gradient arena.
    pub gradients: u64,
    /// The optimizer's per-parameter slots ([`crate::optim::Optimizer::state_slots`]): 0 for plain SGD.
    pub optimizer_state: u64,
    /// Batch inputs and labels, over every compiled plan.
    pub inputs: u64,
    /// Activation and gradient buffers after liveness reuse, over every compiled plan.
    pub activations: u64,
    /// Kernel scratch: packed operand textures, row-loss and im2col buffers, launch parameter
    /// blocks, the metrics and dropout state, over every compiled plan.
    pub scratch: u64,
    /// What the activations would take without reuse (one buffer per node).
    pub activations_without_reuse: u64,
}

impl MemoryReport {
    /// Every byte the executor holds.
    pub fn total(&self) -> u64 {
        self.parameters
            + self.buffers
            + self.gradients
            + self.optimizer_state
            + self.inputs
            + self.activations
            + self.scratch
    }
}

impl GpuExecutor {
    /// What the executor holds on the GPU, counted from the resources it owns.
    pub fn memory(&self) -> MemoryReport {
        let a = &self.arenas;
        let bytes = |bufs: &[GpuBuffer]| bufs.iter().map(GpuBuffer::bytes).sum::<u64>();
        let mut scratch = Ledger::default();
        scratch.bytes += a.metrics.bytes() + a.mode.bytes();
        self.optimizer_kernel.count(&mut scratch);
        if let Some((_, clip)) = &self.clip {
            clip.count(&mut scratch);
        }
        let mut report = MemoryReport {
            parameters: a.params.bytes(),
            buffers: a.buffers.bytes(),
            gradients: a.grads.bytes(),
            optimizer_state: bytes(&a.state),
            ..Default::default()
        };
        for plan in self.plans.values() {
            report.inputs += bytes(&plan.inputs);
            report.activations += bytes(&plan.slots);
            report.activations_without_reuse += plan.without_reuse;
            scratch.bytes += bytes(&plan.scratch);
            for k in &plan.kernels {
                k.count(&mut scratch);
            }
            let pre = &plan.prepacked;
            let textures = pre.inputs.iter().map(|t| &t.2);
            let textures = textures.chain(pre.params.iter().map(|t| &t.3));
            for t in textures.chain(pre.packed.iter().map(|t| &t.3)) {
                scratch.texture(t);
            }
        }
        report.scratch = scratch.bytes;
        report
    }
}
