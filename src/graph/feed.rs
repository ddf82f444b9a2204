//! What an executor takes as one batch: a slice per input node.

/// Batch data for one input node.
#[derive(Debug, Clone, Copy)]
pub enum Feed<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
}
