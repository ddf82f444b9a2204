//! Typed constructors for every kernel, one file per kernel family (matching `shaders/`):
//! each checks its operands and returns a [`crate::gpu::Launch`] or a [`crate::gpu::Kernel`].
//!
//! Shapes go to the shaders in `#[repr(C)]` parameter structs mirrored in WGSL.

mod batch_norm;
mod conv;
mod copy;
mod elementwise;
mod gemm;
mod gemm_spec;
mod gemm_tex;
mod loss;
mod norm;
mod reduce;

pub use batch_norm::{
    batch_norm_backward, batch_norm_forward, batch_norm_gamma_grad, BatchNormShape,
};
pub use conv::{
    channel_sum, conv2d, conv2d_direct, conv2d_grad_input, conv2d_grad_weight, pool, pool_grad,
    ConvGeom,
};
pub use copy::{broadcast, concat, permute, slice, sum_to, RowCopy};
pub use elementwise::{
    activation_backward, activation_forward, add, bias_add, bias_add_out, dropout, mul, StepMode,
};
pub use gemm::gemm;
pub use gemm_spec::{gemm_path, GemmPath, GemmSpec};
pub(crate) use gemm_tex::{
    band_rows, gemm_operands_out, gemm_tex4_fits, gemm_tex_multiply, pack,
    pack_transposed_with_sums, pack_with_sums_fits, packed_texture, GemmOperand,
};
pub use loss::{metrics, pointwise_loss, softmax_backward, softmax_forward, softmax_xent};
pub use norm::{layer_norm_backward, layer_norm_forward, layer_norm_gamma_grad};
pub use reduce::{clip_by_global_norm, column_sum, mean, sum_squares};

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::View;

fn need(op: &'static str, what: &str, view: &View<'_>, len: usize) -> Result<()> {
    if view.len < len {
        return Err(Error::shape(
            op,
            format!(
                "{what} `{}` has {} elements, needs {len}",
                view.buffer.label(),
                view.len
            ),
        ));
    }
    Ok(())
}

pub(crate) fn dim_u32(op: &'static str, name: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{name} = {v} exceeds u32")))
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Dims4 {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

fn dims4(a: usize, b: usize, c: u32) -> Result<Dims4> {
    Ok(Dims4 {
        a: dim_u32("kernel", "dimension", a)?,
        b: dim_u32("kernel", "dimension", b)?,
        c,
        d: 0,
    })
}

pub(crate) fn groups(n: usize, per_group: usize) -> Result<u32> {
    dim_u32("dispatch", "workgroups", n.div_ceil(per_group))
}

/// Most loop iterations one invocation may run. llvmpipe stops every invocation after 65,535
/// loop iterations in total (a guard against infinite loops), so kernels check their loop
/// counts against this and the constructors reject larger work with a clear error.
pub const LOOP_LIMIT: usize = 65_000;

fn check_loops(op: &'static str, what: &str, iterations: usize) -> Result<()> {
    if iterations > LOOP_LIMIT {
        return Err(Error::invalid(
            op,
            format!(
                "{what} needs {iterations} loop iterations per invocation; kernels stay under \
                 {LOOP_LIMIT} (llvmpipe ends longer loops early). Split the tensor"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_flat(op: &'static str, n: usize, views: &[(&str, &View<'_>)]) -> Result<()> {
    for (what, v) in views {
        need(op, what, v, n)?;
    }
    Ok(())
}

/// Whether `n` elements of every view can be accessed as vec4s (whole, aligned groups of 4).
pub(crate) fn vec4_ok(n: usize, views: &[&View<'_>]) -> bool {
    n.is_multiple_of(4) && views.iter().all(|v| v.offset % 4 == 0 && v.len % 4 == 0)
}
