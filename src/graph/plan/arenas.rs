//! The executor's resident buffers, which every plan binds.

use std::collections::HashMap;

use crate::gpu::GpuBuffer;
use crate::graph::NodeId;

/// The executor's resident state: parameters, gradients and optimizer slots as flat arenas.
pub(crate) struct Arenas {
    pub params: GpuBuffer,
    pub grads: GpuBuffer,
    /// One arena per slot the optimizer declares ([`crate::optim::Optimizer::state_slots`]).
    pub state: Vec<GpuBuffer>,
    /// Element offset of each parameter in the arenas.
    pub offsets: HashMap<NodeId, usize>,
    /// Non-trainable state ([`crate::graph::Graph::buffer`]), laid out by [`crate::graph::Graph::buffer_layout`].
    pub buffers: GpuBuffer,
    /// Element offset of each buffer in `buffers`.
    pub buffer_offsets: HashMap<NodeId, usize>,
    /// The metric totals, [`crate::ops::METRIC_WORDS`] u32 words.
    pub metrics: GpuBuffer,
    /// The step and training flag dropout launches read.
    pub mode: GpuBuffer,
}
