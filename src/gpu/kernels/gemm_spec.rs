//! What a GEMM computes and which kernel path runs it: the spec, the parameter block the
//! GEMM shaders share (shaders/gemm_common.wgsl), and the choice between shared-memory tiles
//! on GPUs and packed textures on CPU adapters (ARCHITECTURE.md, decision 6).

use bytemuck::{Pod, Zeroable};

use super::{dim_u32, LOOP_LIMIT};
use crate::error::{Error, Result};
use crate::gpu::{AdapterKind, GpuContext};
use crate::ops::Epilogue;

/// The epilogue's code in the GEMM shaders (`EPILOGUE` override).
impl Epilogue {
    pub(super) fn code(self) -> f64 {
        match self {
            Epilogue::None => 0.0,
            Epilogue::Bias => 1.0,
            Epilogue::BiasRelu => 2.0,
            Epilogue::Relu => 3.0,
            Epilogue::ReluGrad => 4.0,
        }
    }
}

/// `C = alpha * op(A) * op(B) + beta * C` with op(A) of shape (m, k) and op(B) of shape (k, n).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored (k, m) and used transposed.
    pub trans_a: bool,
    /// B is stored (n, k) and used transposed.
    pub trans_b: bool,
    pub alpha: f32,
    /// 0 means C is written without being read.
    pub beta: f32,
    pub epilogue: Epilogue,
    /// C is stored transposed, (n, m) (for `beta` too): computing `C^T = op(B)^T op(A)^T`
    /// this way lets an operand keep the layout another GEMM packed it in.
    pub trans_c: bool,
    /// Forces a kernel path; `None` lets [`gemm_path`] choose by adapter and shape.
    pub path: Option<GemmPath>,
}

impl GemmSpec {
    /// Plain `C = A B`.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            epilogue: Epilogue::None,
            trans_c: false,
            path: None,
        }
    }

    /// Stores C transposed, (n, m).
    pub fn trans_c(mut self, t: bool) -> Self {
        self.trans_c = t;
        self
    }

    /// Forces a kernel path (for tests and benchmarks); a texture path the shape cannot take
    /// falls back to the tiled one.
    pub fn path(mut self, p: GemmPath) -> Self {
        self.path = Some(p);
        self
    }

    /// Uses A transposed (stored (k, m)).
    pub fn trans_a(mut self, t: bool) -> Self {
        self.trans_a = t;
        self
    }

    /// Uses B transposed (stored (n, k)).
    pub fn trans_b(mut self, t: bool) -> Self {
        self.trans_b = t;
        self
    }

    /// Sets alpha and beta.
    pub fn scale(mut self, alpha: f32, beta: f32) -> Self {
        self.alpha = alpha;
        self.beta = beta;
        self
    }

    /// Sets the fused epilogue.
    pub fn epilogue(mut self, e: Epilogue) -> Self {
        self.epilogue = e;
        self
    }

    /// Floating-point operations of one launch (2mnk).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(super) struct GemmDims {
    pub(super) m: u32,
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) tiles_m: u32,
    pub(super) tiles_n: u32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) trans: u32,
}

/// The GEMM paths (see shaders/gemm_common.wgsl for why there are several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// Shared-memory tiles over storage buffers, read one f32 at a time: any shape.
    Tiled,
    /// Shared-memory tiles staged from vec4 loads, 4x4 register blocks, the tile size chosen
    /// by shape: real GPUs, when each operand's stored rows are whole vec4s.
    TiledVec4,
    /// Operands packed into textures, then a register-blocked kernel: CPU adapters.
    Texture,
}

/// Whether `spec`'s operands can be read as vec4s along their stored rows (shaders/
/// gemm_vec4.wgsl): A's row length (k, or m when transposed) and B's (n, or k when
/// transposed) are multiples of 4.
fn vec4_rows(spec: &GemmSpec) -> bool {
    let a_row = if spec.trans_a { spec.m } else { spec.k };
    let b_row = if spec.trans_b { spec.k } else { spec.n };
    spec.k > 0 && a_row % 4 == 0 && b_row % 4 == 0
}

/// The storage-buffer kernels' workgroup edge (they compute tiles of 4 x edge on a side):
/// 16 (64x64 tiles) when that still gives 32 workgroups or more, else 8 (32x32 tiles), so
/// that small and skinny products such as 128x10x128 still spread over the GPU.
pub(super) fn workgroup_edge(spec: &GemmSpec) -> u32 {
    let tiles64 = spec.m.div_ceil(64) * spec.n.div_ceil(64);
    if tiles64 >= 32 {
        16
    } else {
        8
    }
}

/// The path a spec takes on this context: textures under the CPU-adapter plan when the packed
/// operands fit the texture limits (the context checked the subgroup size when it opened);
/// under the GPU plan, vec4 register tiles when the operands' rows are whole vec4s; the
/// scalar shared-memory tiles otherwise. A forced path the spec cannot take falls back to
/// [`GemmPath::Tiled`].
pub fn gemm_path(ctx: &GpuContext, spec: &GemmSpec) -> GemmPath {
    let max = ctx.limits().max_texture_dimension_2d as usize;
    let k4 = spec.k.div_ceil(4);
    // op(A) may be packed in bands of rows side by side (see gemm_pack.wgsl).
    let bands = spec.m.div_ceil(max);
    let fits = bands * k4 <= max && 4 * k4 <= max && spec.n.div_ceil(4) <= max && k4 <= LOOP_LIMIT;
    // gemm_tex shares B texels across its 8 invocations with subgroup broadcasts.
    let fits = fits && ctx.subgroup_size() == Some(8);
    let wanted = spec.path.unwrap_or(match ctx.plan() {
        AdapterKind::Cpu => GemmPath::Texture,
        AdapterKind::Gpu => GemmPath::TiledVec4,
    });
    match wanted {
        GemmPath::Texture if fits && spec.k > 0 => GemmPath::Texture,
        GemmPath::TiledVec4 if vec4_rows(spec) => GemmPath::TiledVec4,
        _ => GemmPath::Tiled,
    }
}

/// The parameter block of a GEMM over tiles of `rows` x `cols` outputs, and its workgroups
/// (one per tile).
pub(super) fn gemm_dims(spec: &GemmSpec, rows: u32, cols: u32) -> Result<(GemmDims, u32)> {
    const OP: &str = "gemm";
    let tiles_m = dim_u32(OP, "m", spec.m)?.div_ceil(rows);
    let tiles_n = dim_u32(OP, "n", spec.n)?.div_ceil(cols);
    let workgroups = tiles_m
        .checked_mul(tiles_n)
        .ok_or_else(|| Error::invalid(OP, "too many tiles"))?;
    let dims = GemmDims {
        m: spec.m as u32,
        n: spec.n as u32,
        k: dim_u32(OP, "k", spec.k)?,
        tiles_m,
        tiles_n,
        alpha: spec.alpha,
        beta: spec.beta,
        trans: spec.trans_a as u32 | (spec.trans_b as u32) << 1 | (spec.trans_c as u32) << 2,
    };
    Ok((dims, workgroups))
}
