//! The GEMM `C = alpha op(A) op(B) + beta C` with a fused epilogue: the entry that runs a
//! [`GemmSpec`] on its path (`gemm_spec.rs` chooses it), and the tiled kernels
//! (shaders/gemm.wgsl, shaders/gemm_vec4.wgsl).

use super::gemm_spec::{gemm_dims, gemm_path, workgroup_edge, GemmPath, GemmSpec};
use super::gemm_tex::{band_rows, gemm_tex_multiply, pack};
use super::{check_loops, need};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuContext, Kernel, Launch, View};
use crate::ops::Epilogue;

/// Builds a GEMM. `a`, `b`, `c` (and `bias` for a bias epilogue) are views of at least
/// m*k, k*n, m*n (and n) elements. On CPU adapters the returned kernel also owns two packed
/// textures and runs three launches (pack A, pack B, multiply).
///
/// ```no_run
/// use wgtrain::gpu::{GpuBuffer, GpuContext};
/// use wgtrain::unstable::kernels::{self, GemmSpec};
/// let ctx = GpuContext::new()?;
/// let a = GpuBuffer::from_slice(&ctx, "a", &[1.0f32, 2.0, 3.0, 4.0])?; // (2, 2)
/// let b = GpuBuffer::from_slice(&ctx, "b", &[1.0f32, 0.0, 0.0, 1.0])?; // identity
/// let c = GpuBuffer::zeros(&ctx, "c", 4)?;
/// let gemm = kernels::gemm(&ctx, &GemmSpec::new(2, 2, 2), a.full(), b.full(), None, c.full())?;
/// gemm.run(&ctx)?;
/// assert_eq!(c.read::<f32>(&ctx)?, vec![1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), wgtrain::Error>(())
/// ```
pub fn gemm(
    ctx: &GpuContext,
    spec: &GemmSpec,
    a: View<'_>,
    b: View<'_>,
    bias: Option<View<'_>>,
    c: View<'_>,
) -> Result<Kernel> {
    const OP: &str = "gemm";
    let (m, n, k) = (spec.m, spec.n, spec.k);
    if m == 0 || n == 0 {
        return Err(Error::invalid(OP, format!("empty output ({m} x {n})")));
    }
    need(OP, "A", &a, m * k)?;
    need(OP, "B", &b, k * n)?;
    need(OP, "C", &c, m * n)?;
    let bias = match (spec.epilogue.has_bias(), bias) {
        (true, Some(v)) => {
            need(OP, "bias", &v, n)?;
            v
        }
        (false, Some(v)) if spec.epilogue == Epilogue::ReluGrad => {
            need(OP, "ReLU output", &v, m * n)?;
            v
        }
        (false, None) if spec.epilogue == Epilogue::ReluGrad => {
            return Err(Error::invalid(
                OP,
                "the ReLU-gradient epilogue needs the ReLU output",
            ))
        }
        (true, None) => {
            return Err(Error::invalid(
                OP,
                "epilogue adds a bias but no bias was given",
            ))
        }
        // Unused by the kernel; any read-only view fills the slot.
        (false, _) => a,
    };
    let path = gemm_path(ctx, spec);
    match path {
        GemmPath::Tiled | GemmPath::TiledVec4 => {
            // Loop count per k-step: 32x32 scalar tiles load 8 values of each operand per
            // invocation; the vec4 kernel at most 2 vec4s.
            let (shader, entry, per_step) = match path {
                GemmPath::Tiled => ("gemm", "gemm_tiled", 32),
                _ => ("gemm_vec4", "gemm_vec4", 20),
            };
            check_loops(OP, &format!("k = {k}"), k.div_ceil(16) * per_step)?;
            let edge = workgroup_edge(spec);
            let (dims, workgroups) = gemm_dims(spec, 4 * edge, 4 * edge)?;
            let launch = Launch::new(
                ctx,
                LaunchDesc {
                    shader,
                    entry,
                    constants: vec![("EPILOGUE", spec.epilogue.code()), ("WG", edge as f64)],
                    params: dims,
                    bindings: vec![
                        Binding::Read(a),
                        Binding::Read(b),
                        Binding::Read(bias),
                        Binding::ReadWrite(c),
                    ],
                    workgroups,
                },
            )?;
            Ok(launch.into())
        }
        GemmPath::Texture => {
            let k4 = k.div_ceil(4);
            // op(A): m rows of k4 texels; op(B): 4*k4 rows (zero beyond k) of ceil(n/4) texels.
            let band = band_rows(ctx, m);
            let (ta, pack_a) = pack(ctx, "gemm op(A)", a, m, k, spec.trans_a, m, band)?;
            let (tb, pack_b) = pack(ctx, "gemm op(B)", b, k, n, spec.trans_b, 4 * k4, 4 * k4)?;
            let multiply = gemm_tex_multiply(ctx, spec, (&ta, band), &tb, bias, c)?;
            Ok(Kernel::new(
                vec![pack_a, pack_b, multiply],
                vec![],
                vec![ta, tb],
            ))
        }
    }
}
