//! What identifies a compiled pipeline: the WGSL module by name, its entry point, its
//! override constants and its binding kinds. The context caches pipelines by this key.

/// The WGSL source of a kernel family by its name (`gemm`, `loss`, ... as
/// [`PipelineVariant::shader`] names it).
pub fn shader_source(name: &str) -> Option<&'static str> {
    Some(match name {
        // The storage-buffer GEMMs share their parameter block and epilogue.
        "gemm" => concat!(
            include_str!("../../shaders/gemm_common.wgsl"),
            include_str!("../../shaders/gemm.wgsl")
        ),
        "gemm_vec4" => concat!(
            include_str!("../../shaders/gemm_common.wgsl"),
            include_str!("../../shaders/gemm_vec4.wgsl")
        ),
        "gemm_pack" => include_str!("../../shaders/gemm_pack.wgsl"),
        "gemm_tex" => include_str!("../../shaders/gemm_tex.wgsl"),
        "elementwise" => include_str!("../../shaders/elementwise.wgsl"),
        "copy" => include_str!("../../shaders/copy.wgsl"),
        "reduce" => include_str!("../../shaders/reduce.wgsl"),
        "softmax" => include_str!("../../shaders/softmax.wgsl"),
        "loss" => include_str!("../../shaders/loss.wgsl"),
        "optim" => include_str!("../../shaders/optim.wgsl"),
        "conv" => include_str!("../../shaders/conv.wgsl"),
        "norm" => include_str!("../../shaders/norm.wgsl"),
        "batch_norm" => include_str!("../../shaders/batch_norm.wgsl"),
        #[cfg(test)]
        "broken_for_tests" => "@compute @workgroup_size(1) fn main( {}",
        _ => return None,
    })
}

/// One specialized pipeline a context has built: a WGSL module, an entry point and the
/// override constants it was specialized with (see [`crate::gpu::GpuContext::pipeline_variants`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineVariant {
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
}

impl PipelineKey {
    /// What the key specializes, without the binding kinds.
    pub(crate) fn variant(&self) -> PipelineVariant {
        PipelineVariant {
            shader: self.shader,
            entry: self.entry,
            constants: self
                .constants
                .iter()
                .map(|&(n, bits)| (n, f64::from_bits(bits)))
                .collect(),
        }
    }
}

/// Identifies one specialized pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub(super) shader: &'static str,
    pub(super) entry: &'static str,
    /// Override constants as (name, f64 bits).
    pub(super) constants: Vec<(&'static str, u64)>,
    /// Kind of each binding after the uniform at binding 0.
    pub(super) kinds: Vec<BindKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum BindKind {
    Read,
    ReadWrite,
    TextureRead,
    TextureWrite,
}
