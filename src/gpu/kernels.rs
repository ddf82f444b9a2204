//! Typed constructors for every kernel: each checks its operands and returns a [`Launch`].
//!
//! Shapes go to the shaders in `#[repr(C)]` uniform structs mirrored in WGSL.

mod conv;

pub use conv::{
    channel_sum, conv2d, conv2d_direct, conv2d_grad_input, conv2d_grad_weight, pool, pool_grad,
    ConvGeom,
};

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{AdapterKind, Binding, GpuBuffer, GpuContext, Kernel, Launch, View};
use crate::ops::{Activation, Epilogue, MetricKind, PointwiseLoss, METRIC_WORDS};
use crate::optim::{AdamConfig, SgdConfig};

pub(crate) use crate::gpu::launch::PipelineKey;

/// The epilogue's code in the GEMM shaders (`EPILOGUE` override).
impl Epilogue {
    fn code(self) -> f64 {
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
struct GemmDims {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,
    tiles_n: u32,
    alpha: f32,
    beta: f32,
    trans: u32,
}

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

fn dim_u32(op: &'static str, name: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{name} = {v} exceeds u32")))
}

/// The two GEMM paths (see shaders/gemm.wgsl for why both exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// Shared-memory tiles over storage buffers: real GPUs, and any shape.
    Tiled,
    /// Operands packed into textures, then a register-blocked kernel: CPU adapters.
    Texture,
}

/// The path a spec takes on this adapter: textures on CPU adapters when the packed operands fit
/// the texture limits, shared-memory tiles otherwise.
pub fn gemm_path(ctx: &GpuContext, spec: &GemmSpec) -> GemmPath {
    let max = ctx.limits().max_texture_dimension_2d as usize;
    let k4 = spec.k.div_ceil(4);
    // op(A) may be packed in bands of rows side by side (see gemm_pack.wgsl).
    let bands = spec.m.div_ceil(max);
    let fits = bands * k4 <= max && 4 * k4 <= max && spec.n.div_ceil(4) <= max && k4 <= LOOP_LIMIT;
    // gemm_tex shares B texels across its 8 invocations with subgroup broadcasts.
    let fits = fits && ctx.subgroup_size() == Some(8);
    let wanted = spec.path.unwrap_or(match ctx.kind() {
        AdapterKind::Cpu => GemmPath::Texture,
        AdapterKind::Gpu => GemmPath::Tiled,
    });
    if wanted == GemmPath::Texture && fits && spec.k > 0 {
        GemmPath::Texture
    } else {
        GemmPath::Tiled
    }
}

/// Builds a GEMM. `a`, `b`, `c` (and `bias` for a bias epilogue) are views of at least
/// m*k, k*n, m*n (and n) elements. On CPU adapters the returned kernel also owns two packed
/// textures and runs three launches (pack A, pack B, multiply).
///
/// ```no_run
/// use wgtrain::gpu::{kernels::{self, GemmSpec}, GpuBuffer, GpuContext};
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
        GemmPath::Tiled => {
            check_loops(OP, &format!("k = {k}"), k.div_ceil(16) * 20)?;
            let (dims, workgroups) = gemm_dims(spec, 64, 64)?;
            let launch = Launch::new(
                ctx,
                LaunchDesc {
                    shader: "gemm",
                    entry: "gemm_tiled",
                    constants: vec![("EPILOGUE", spec.epilogue.code())],
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

/// The parameter block of a GEMM over tiles of `rows` x `cols` outputs, and its workgroups
/// (one per tile).
fn gemm_dims(spec: &GemmSpec, rows: u32, cols: u32) -> Result<(GemmDims, u32)> {
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

/// Rows per band of a packed op(A) of `m` rows: all of them when they fit a texture, else
/// the largest multiple of 4 that does (pack4t writes 4 rows at a time).
pub(crate) fn band_rows(ctx: &GpuContext, m: usize) -> usize {
    let max = ctx.limits().max_texture_dimension_2d as usize;
    if m <= max {
        m.max(1)
    } else {
        max / 4 * 4
    }
}

/// The texture path's multiply over operands already packed (gemm_pack.wgsl's layout):
/// `ta` with op(A) in bands of `band` rows, `tb` with op(B). `bias` fills the bias slot
/// (any read-only view when the epilogue has no bias).
pub(crate) fn gemm_tex_multiply(
    ctx: &GpuContext,
    spec: &GemmSpec,
    (ta, band): (&wgpu::Texture, usize),
    tb: &wgpu::Texture,
    bias: View<'_>,
    c: View<'_>,
) -> Result<Launch> {
    gemm_tex_multiply_out(ctx, spec, (ta, band), tb, bias, c, None)
}

/// Whether the texture-path multiply accesses C (and the bias / ReLU-output operand) as
/// vec4s: C's stored rows are whole groups of 4 (see gemm_tex.wgsl's `gemm_tex4`).
pub(crate) fn gemm_tex4_fits(spec: &GemmSpec, c_len: usize, bias_len: usize) -> bool {
    let stored_cols = if spec.trans_c { spec.m } else { spec.n };
    stored_cols.is_multiple_of(4)
        && c_len.is_multiple_of(4)
        && bias_len >= 4
        && (spec.epilogue != Epilogue::ReluGrad || bias_len.is_multiple_of(4))
}

/// [`gemm_tex_multiply`] that also writes C into `packed_out`, a texture of at least M rows
/// of N/4 texels laid out as [`pack`] would (no bands), for a GEMM that reads C next. Needs
/// [`gemm_tex4_fits`] and C not transposed.
pub(crate) fn gemm_tex_multiply_out(
    ctx: &GpuContext,
    spec: &GemmSpec,
    (ta, band): (&wgpu::Texture, usize),
    tb: &wgpu::Texture,
    bias: View<'_>,
    c: View<'_>,
    packed_out: Option<&wgpu::Texture>,
) -> Result<Launch> {
    const OP: &str = "gemm";
    let (m, n, k) = (spec.m, spec.n, spec.k);
    need(OP, "C", &c, m * n)?;
    match spec.epilogue {
        e if e.has_bias() => need(OP, "bias", &bias, n)?,
        Epilogue::ReluGrad => need(OP, "ReLU output", &bias, m * n)?,
        _ => {}
    }
    let k4 = k.div_ceil(4);
    let (dims, workgroups) = gemm_dims(spec, 32, 16)?;
    let (tiles_m, tiles_n) = (dims.tiles_m, dims.tiles_n);
    let view_a = ta.create_view(&Default::default());
    let view_b = tb.create_view(&Default::default());
    // vec4 accesses to C and the bias slot where C's stored rows are whole groups of 4
    // (see gemm_tex4).
    let vec4 = gemm_tex4_fits(spec, c.len, bias.len);
    let out_view = packed_out.map(|t| t.create_view(&Default::default()));
    if out_view.is_some() && (!vec4 || spec.trans_c) {
        return Err(Error::invalid(
            "gemm",
            "a packed copy of C needs C's rows in whole groups of 4, not transposed",
        ));
    }
    let mut bindings = vec![
        Binding::TextureRead(&view_a),
        Binding::TextureRead(&view_b),
        Binding::Read(bias),
        Binding::ReadWrite(c),
    ];
    bindings.extend(out_view.as_ref().map(Binding::TextureWrite));
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "gemm_tex",
            entry: match (vec4, packed_out.is_some()) {
                (true, true) => "gemm_tex4_pack",
                (true, false) => "gemm_tex4",
                _ => "gemm_tex",
            },
            constants: vec![
                ("EPILOGUE", spec.epilogue.code()),
                ("M", m as f64),
                ("N", n as f64),
                ("K4", k4 as f64),
                ("TILES_M", tiles_m as f64),
                ("TILES_N", tiles_n as f64),
                ("ALPHA", spec.alpha as f64),
                ("BETA", spec.beta as f64),
                ("BAND_A", band as f64),
                ("TRANS_C", spec.trans_c as u8 as f64),
            ],
            params: dims,
            bindings,
            workgroups,
        },
    )
}

/// An rgba32float texture for a packed operand of `height` rows of ceil(cols/4) texels, in
/// bands of `band` rows side by side.
pub(crate) fn packed_texture(
    ctx: &GpuContext,
    label: &str,
    height: usize,
    cols: usize,
    band: usize,
) -> Result<wgpu::Texture> {
    let width = cols.div_ceil(4).max(1);
    let height = height.max(1);
    let band = band.clamp(1, height);
    let bands = height.div_ceil(band);
    ctx.count_buffer((width * bands * band * 16) as u64);
    ctx.scoped(&format!("creating texture `{label}`"), || {
        ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: (width * bands) as u32,
                height: band as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            // COPY_DST: operands can also be filled by copies (see `GemmOperand::Packed`).
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        })
    })
}

/// A GEMM operand for [`gemm_operands_out`]: a buffer view the kernel packs itself, or a texture
/// someone else fills in the packed layout (op(A) in bands of `band` rows; op(B) unbanded).
#[derive(Debug, Clone, Copy)]
pub(crate) enum GemmOperand<'a> {
    Buffer(View<'a>),
    Packed(&'a wgpu::Texture, usize),
}

/// A texture-path GEMM whose operands may arrive packed already (an input written as a
/// texture by the host, a weight copied into one), so only the others are packed; with
/// `packed_out`, C is also written packed (see [`gemm_tex_multiply_out`]). The spec must be on
/// the texture path ([`gemm_path`]); `bias` fills the bias slot.
pub(crate) fn gemm_operands_out(
    ctx: &GpuContext,
    spec: &GemmSpec,
    a: GemmOperand<'_>,
    b: GemmOperand<'_>,
    bias: View<'_>,
    c: View<'_>,
    packed_out: Option<&wgpu::Texture>,
) -> Result<Kernel> {
    if gemm_path(ctx, spec) != GemmPath::Texture {
        return Err(Error::invalid(
            "gemm",
            "prepacked operands need the texture path",
        ));
    }
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let k4 = k.div_ceil(4);
    let mut launches = Vec::new();
    let mut textures = Vec::new();
    let (ta, band) = match a {
        GemmOperand::Packed(t, band) => (t.clone(), band),
        GemmOperand::Buffer(v) => {
            need("gemm", "A", &v, m * k)?;
            let band = band_rows(ctx, m);
            let (t, l) = pack(ctx, "gemm op(A)", v, m, k, spec.trans_a, m, band)?;
            launches.push(l);
            textures.push(t.clone());
            (t, band)
        }
    };
    let tb = match b {
        GemmOperand::Packed(t, _) => t.clone(),
        GemmOperand::Buffer(v) => {
            need("gemm", "B", &v, k * n)?;
            let (t, l) = pack(ctx, "gemm op(B)", v, k, n, spec.trans_b, 4 * k4, 4 * k4)?;
            launches.push(l);
            textures.push(t.clone());
            t
        }
    };
    launches.push(gemm_tex_multiply_out(
        ctx,
        spec,
        (&ta, band),
        &tb,
        bias,
        c,
        packed_out,
    )?);
    Ok(Kernel::new(launches, vec![], textures))
}

/// A texture of `height` rows of ceil(cols/4) rgba32float texels that will hold op(src)
/// (rows, cols) zero-padded, in bands of `band` rows side by side, and the launch that
/// fills it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack(
    ctx: &GpuContext,
    label: &str,
    src: View<'_>,
    rows: usize,
    cols: usize,
    trans: bool,
    height: usize,
    band: usize,
) -> Result<(wgpu::Texture, Launch)> {
    let width = cols.div_ceil(4).max(1);
    let height = height.max(1);
    let band = band.clamp(1, height);
    let texture = packed_texture(ctx, label, height, cols, band)?;
    let view = texture.create_view(&Default::default());
    // The vec4 forms need whole, aligned groups of 4 along the stored rows.
    let aligned = src.offset.is_multiple_of(4) && src.len.is_multiple_of(4);
    let (entry, workgroups) = if aligned && !trans && cols.is_multiple_of(4) {
        ("pack4", groups(width * height, 256)?)
    } else if aligned && trans && rows.is_multiple_of(4) {
        ("pack4t", groups(width * height.div_ceil(4), 64)?)
    } else {
        ("pack", groups(width * height, 64)?)
    };
    let launch = Launch::new(
        ctx,
        LaunchDesc {
            shader: "gemm_pack",
            entry,
            constants: pack_constants(rows, cols, trans, width, height, band),
            params: Dims4::zeroed(),
            bindings: vec![Binding::Read(src), Binding::TextureWrite(&view)],
            workgroups,
        },
    )?;
    Ok((texture, launch))
}

/// gemm_pack.wgsl's override constants: op(src) is (rows, cols), in a texture of `width`
/// texels by `height` rows laid out in bands of `band` rows.
fn pack_constants(
    rows: usize,
    cols: usize,
    trans: bool,
    width: usize,
    height: usize,
    band: usize,
) -> Vec<(&'static str, f64)> {
    vec![
        ("ROWS", rows as f64),
        ("COLS", cols as f64),
        ("TRANS", f64::from(u8::from(trans))),
        ("WIDTH", width as f64),
        ("HEIGHT", height as f64),
        ("BAND", band as f64),
    ]
}

/// Whether [`pack_transposed_with_sums`] takes a (rows, cols) `dy` on this device, and the
/// GEMMs that would read its texture run on the texture path.
pub(crate) fn pack_with_sums_fits(ctx: &GpuContext, rows: usize, cols: usize) -> bool {
    let max = ctx.limits().max_texture_dimension_2d as usize;
    cols > 0
        && cols.is_multiple_of(4)
        && cols <= max
        && rows.div_ceil(4) <= max.min(LOOP_LIMIT)
        && gemm_path(ctx, &GemmSpec::new(cols, 4, rows)) == GemmPath::Texture
}

/// For `dy` stored (rows, cols) with cols a multiple of 4: the texture of op = dy^T, packed
/// as [`pack`] would (height cols, no bands), and the launch that fills it and writes the
/// column sums of dy into `sums` in [`column_sum`]'s order, in one pass over dy.
pub(crate) fn pack_transposed_with_sums(
    ctx: &GpuContext,
    dy: View<'_>,
    rows: usize,
    cols: usize,
    sums: View<'_>,
) -> Result<(wgpu::Texture, Launch)> {
    need("pack_transposed_with_sums", "dy", &dy, rows * cols)?;
    need("pack_transposed_with_sums", "sums", &sums, cols)?;
    let width = rows.div_ceil(4).max(1);
    check_loops(
        "pack_transposed_with_sums",
        &format!("summing {rows} rows"),
        width,
    )?;
    if !cols.is_multiple_of(4) || !dy.offset.is_multiple_of(4) || cols == 0 {
        return Err(Error::invalid(
            "pack_transposed_with_sums",
            format!(
                "{cols} columns at element offset {}: both must be multiples of 4",
                dy.offset
            ),
        ));
    }
    let texture = packed_texture(ctx, "packed operand", cols, rows, cols)?;
    let view = texture.create_view(&Default::default());
    let launch = Launch::new(
        ctx,
        LaunchDesc {
            shader: "gemm_pack",
            entry: "pack4t_sum",
            // op(dy) = dy^T is (cols, rows).
            constants: pack_constants(cols, rows, true, width, cols, cols),
            params: Dims4::zeroed(),
            bindings: vec![
                Binding::Read(dy),
                Binding::TextureWrite(&view),
                Binding::ReadWrite(sums),
            ],
            workgroups: groups(cols / 4, 8)?,
        },
    )?;
    Ok((texture, launch))
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

fn groups(n: usize, per_group: usize) -> Result<u32> {
    dim_u32("dispatch", "workgroups", n.div_ceil(per_group))
}

fn activation_code(act: Activation) -> f64 {
    match act {
        Activation::Relu => 0.0,
        Activation::Sigmoid => 1.0,
        Activation::Tanh => 2.0,
        Activation::Identity => 3.0,
    }
}

/// `y = f(x)` over `n` elements.
pub fn activation_forward(
    ctx: &GpuContext,
    act: Activation,
    n: usize,
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    need("activation_forward", "x", &x, n)?;
    need("activation_forward", "y", &y, n)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry: "activation_forward",
            constants: vec![("OP", activation_code(act))],
            params: dims4(n, 1, 0)?,
            bindings: vec![Binding::Read(x), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}

/// `dx = f'(x) * dy` from the forward output `y`, over `n` elements.
pub fn activation_backward(
    ctx: &GpuContext,
    act: Activation,
    n: usize,
    y: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    for (what, v) in [("y", &y), ("dy", &dy), ("dx", &dx)] {
        need("activation_backward", what, v, n)?;
    }
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry: "activation_backward",
            constants: vec![("OP", activation_code(act))],
            params: dims4(n, 1, 0)?,
            bindings: vec![Binding::Read(y), Binding::Read(dy), Binding::ReadWrite(dx)],
            workgroups: groups(n, 256)?,
        },
    )
}

/// `y += bias` in place, `y` row-major (rows, cols), `bias` (cols).
pub fn bias_add(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    bias: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if cols == 0 {
        return Err(Error::invalid("bias_add", "zero columns"));
    }
    need("bias_add", "bias", &bias, cols)?;
    need("bias_add", "y", &y, rows * cols)?;
    let n = rows * cols;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry: "bias_add",
            constants: vec![],
            params: dims4(n, cols, 0)?,
            bindings: vec![Binding::Read(bias), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}

/// `y = x + bias` out of place, `x` and `y` row-major (rows, cols), `bias` (cols).
pub fn bias_add_out(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    x: View<'_>,
    bias: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if cols == 0 {
        return Err(Error::invalid("bias_add", "zero columns"));
    }
    need("bias_add", "x", &x, rows * cols)?;
    need("bias_add", "bias", &bias, cols)?;
    need("bias_add", "y", &y, rows * cols)?;
    let n = rows * cols;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry: "bias_add_out",
            constants: vec![],
            params: dims4(n, cols, 0)?,
            bindings: vec![Binding::Read(x), Binding::Read(bias), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}

/// `y = a + b` over `n` elements.
pub fn add(ctx: &GpuContext, n: usize, a: View<'_>, b: View<'_>, y: View<'_>) -> Result<Launch> {
    for (what, v) in [("a", &a), ("b", &b), ("y", &y)] {
        need("add", what, v, n)?;
    }
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry: "add",
            constants: vec![],
            params: dims4(n, 1, 0)?,
            bindings: vec![Binding::Read(a), Binding::Read(b), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct DropoutParams {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// The step and mode [`dropout`] launches read: written once per submission.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, Default)]
pub struct DropoutState {
    step_lo: u32,
    step_hi: u32,
    training: u32,
    _pad: u32,
}

impl DropoutState {
    /// Training at optimizer step `step` (masks differ per step), or evaluating (identity).
    pub fn new(step: u64, training: bool) -> Self {
        DropoutState {
            step_lo: step as u32,
            step_hi: (step >> 32) as u32,
            training: training as u32,
            _pad: 0,
        }
    }
}

/// Inverted dropout of `x[..n]` into `y` (see [`crate::cpu::dropout`]); `state` holds a
/// [`DropoutState`]. With `x` = dy it is the backward pass.
pub fn dropout(
    ctx: &GpuContext,
    n: usize,
    rate: f32,
    seed: u64,
    state: View<'_>,
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::invalid(
            "dropout",
            format!("the rate must be in [0, 1), got {rate}"),
        ));
    }
    need("dropout", "state", &state, 4)?;
    need("dropout", "x", &x, n)?;
    need("dropout", "y", &y, n)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "elementwise",
            entry: "dropout",
            constants: vec![],
            params: DropoutParams {
                n: dim_u32("dropout", "n", n)?,
                seed_lo: seed as u32,
                seed_hi: (seed >> 32) as u32,
                threshold: crate::cpu::dropout_threshold(rate),
                scale: crate::cpu::dropout_scale(rate),
                _pad: [0; 3],
            },
            bindings: vec![
                Binding::Read(state),
                Binding::Read(x),
                Binding::ReadWrite(y),
            ],
            workgroups: groups(n, 256)?,
        },
    )
}

/// Accumulates a step's metrics into `acc`, [`METRIC_WORDS`] u32 words laid out as
/// [`crate::ops::MetricTotals::from_words`] reads them.
#[allow(clippy::too_many_arguments)]
pub fn metrics(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    kind: MetricKind,
    outputs: View<'_>,
    targets: View<'_>,
    loss: View<'_>,
    acc: View<'_>,
) -> Result<Launch> {
    need("metrics", "outputs", &outputs, rows * cols)?;
    let target_len = if kind == MetricKind::Sparse {
        rows
    } else {
        rows * cols
    };
    need("metrics", "targets", &targets, target_len)?;
    need("metrics", "loss", &loss, 1)?;
    need("metrics", "acc", &acc, METRIC_WORDS)?;
    check_loops(
        "metrics",
        &format!("{rows} rows of {cols}"),
        (rows * cols).div_ceil(64) + rows.div_ceil(64) * cols + 8,
    )?;
    let (entry, constants) = match kind {
        MetricKind::Sparse => ("metrics", vec![]),
        MetricKind::Argmax => ("metrics_dense", vec![("METRIC", 0.0)]),
        MetricKind::Binary { threshold } => (
            "metrics_dense",
            vec![("METRIC", 1.0), ("THRESHOLD", threshold as f64)],
        ),
    };
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "loss",
            entry,
            constants,
            params: dims4(rows, cols, 0)?,
            bindings: vec![
                Binding::Read(outputs),
                Binding::Read(targets),
                Binding::Read(loss),
                Binding::ReadWrite(acc),
            ],
            workgroups: 1,
        },
    )
}

/// `out[col] (+)= sum over rows of dy[row, col]`: the bias gradient.
pub fn column_sum(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    accumulate: bool,
    dy: View<'_>,
    out: View<'_>,
) -> Result<Launch> {
    need("column_sum", "dy", &dy, rows * cols)?;
    need("column_sum", "out", &out, cols)?;
    check_loops("column_sum", &format!("summing {rows} rows"), rows)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "reduce",
            entry: "column_sum",
            constants: vec![],
            params: dims4(rows, cols, accumulate as u32)?,
            bindings: vec![Binding::Read(dy), Binding::ReadWrite(out)],
            workgroups: groups(cols, 64)?,
        },
    )
}

/// Row softmax of a (rows, cols) array.
pub fn softmax_forward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    if cols == 0 {
        return Err(Error::invalid("softmax", "zero columns"));
    }
    need("softmax_forward", "x", &x, rows * cols)?;
    need("softmax_forward", "y", &y, rows * cols)?;
    check_loops("softmax_forward", &format!("a row of {cols}"), 3 * cols)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "softmax",
            entry: "softmax_forward",
            constants: vec![],
            params: dims4(rows, cols, 0)?,
            bindings: vec![Binding::Read(x), Binding::ReadWrite(y)],
            workgroups: groups(rows, 64)?,
        },
    )
}

/// `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    y: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    for (what, v) in [("y", &y), ("dy", &dy), ("dx", &dx)] {
        need("softmax_backward", what, v, rows * cols)?;
    }
    check_loops("softmax_backward", &format!("a row of {cols}"), 2 * cols)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "softmax",
            entry: "softmax_backward",
            constants: vec![],
            params: dims4(rows, cols, 0)?,
            bindings: vec![Binding::Read(y), Binding::Read(dy), Binding::ReadWrite(dx)],
            workgroups: groups(rows, 64)?,
        },
    )
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

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct MeanDims {
    n: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// `total[0] = scale * sum(src[..n])`, deterministic.
pub fn mean(
    ctx: &GpuContext,
    n: usize,
    scale: f32,
    src: View<'_>,
    total: View<'_>,
) -> Result<Launch> {
    reduce_sum(ctx, n, scale, false, src, total)
}

/// `total[0] = sum(src[0..n]^2)`: the squared global norm of a gradient arena.
pub fn sum_squares(ctx: &GpuContext, n: usize, src: View<'_>, total: View<'_>) -> Result<Launch> {
    reduce_sum(ctx, n, 1.0, true, src, total)
}

/// Scales `g[0..n]` by `clip / max(sqrt(sumsq[0]), clip)` (TensorFlow's
/// `clip_by_global_norm`, with the squared norm from [`sum_squares`]).
pub fn clip_by_global_norm(
    ctx: &GpuContext,
    n: usize,
    clip: f32,
    sumsq: View<'_>,
    g: View<'_>,
) -> Result<Launch> {
    need("clip_by_global_norm", "sumsq", &sumsq, 1)?;
    need("clip_by_global_norm", "g", &g, n)?;
    if !(clip.is_finite() && clip > 0.0) {
        return Err(Error::invalid(
            "clip_by_global_norm",
            format!("the norm limit must be finite and positive, got {clip}"),
        ));
    }
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "reduce",
            entry: "clip_by_global_norm",
            constants: vec![],
            params: MeanDims {
                n: dim_u32("clip_by_global_norm", "n", n)?,
                scale: clip,
                _pad: [0; 2],
            },
            bindings: vec![Binding::Read(sumsq), Binding::ReadWrite(g)],
            workgroups: groups(n, 256)?,
        },
    )
}

fn reduce_sum(
    ctx: &GpuContext,
    n: usize,
    scale: f32,
    squares: bool,
    src: View<'_>,
    total: View<'_>,
) -> Result<Launch> {
    need("mean", "src", &src, n)?;
    need("mean", "total", &total, 1)?;
    check_loops(
        "mean",
        &format!("summing {n} elements"),
        n.div_ceil(256) + 8,
    )?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "reduce",
            entry: "mean",
            constants: vec![("SQUARES", squares as u8 as f64)],
            params: MeanDims {
                n: dim_u32("mean", "n", n)?,
                scale,
                _pad: [0; 2],
            },
            bindings: vec![Binding::Read(src), Binding::ReadWrite(total)],
            workgroups: 1,
        },
    )
}

/// Fused softmax + cross-entropy from `u32` labels: one pass writes d_logits to `grad` and each
/// row's loss to a scratch buffer; a second launch writes the mean loss to `out[0]`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    logits: View<'_>,
    labels: View<'_>,
    grad: View<'_>,
    out: View<'_>,
) -> Result<Kernel> {
    const OP: &str = "softmax_xent";
    if rows == 0 || cols == 0 {
        return Err(Error::invalid(
            OP,
            format!("empty logits ({rows} x {cols})"),
        ));
    }
    need(OP, "logits", &logits, rows * cols)?;
    need(OP, "labels", &labels, rows)?;
    need(OP, "grad", &grad, rows * cols)?;
    check_loops(OP, &format!("a row of {cols} classes"), 3 * cols)?;
    let scratch = GpuBuffer::zeros(ctx, "softmax_xent row losses", rows)?;
    let rows_pass = Launch::new(
        ctx,
        LaunchDesc {
            shader: "loss",
            entry: "softmax_xent_rows",
            constants: vec![],
            params: dims4(rows, cols, 0)?,
            bindings: vec![
                Binding::Read(logits),
                Binding::Read(labels),
                Binding::ReadWrite(grad),
                Binding::ReadWrite(scratch.full()),
            ],
            workgroups: groups(rows, 64)?,
        },
    )?;
    let mean = mean(ctx, rows, 1.0 / rows as f32, scratch.full(), out)?;
    Ok(Kernel::new(vec![rows_pass, mean], vec![scratch], vec![]))
}

/// A pointwise loss over `n` elements: gradient of the mean to `grad`, mean loss to `out[0]`.
pub fn pointwise_loss(
    ctx: &GpuContext,
    kind: PointwiseLoss,
    n: usize,
    prediction: View<'_>,
    target: View<'_>,
    grad: View<'_>,
    out: View<'_>,
) -> Result<Kernel> {
    if n == 0 {
        return Err(Error::invalid("pointwise_loss", "no elements"));
    }
    for (what, v) in [
        ("prediction", &prediction),
        ("target", &target),
        ("grad", &grad),
    ] {
        need("pointwise_loss", what, v, n)?;
    }
    let code = match kind {
        PointwiseLoss::MeanSquaredError => 0.0,
        PointwiseLoss::BinaryCrossEntropy => 1.0,
        PointwiseLoss::BinaryCrossEntropyWithLogits => 2.0,
    };
    let scratch = GpuBuffer::zeros(ctx, "pointwise losses", n)?;
    let elems = Launch::new(
        ctx,
        LaunchDesc {
            shader: "loss",
            entry: "pointwise",
            constants: vec![("LOSS", code)],
            params: dims4(n, 1, 0)?,
            bindings: vec![
                Binding::Read(prediction),
                Binding::Read(target),
                Binding::ReadWrite(grad),
                Binding::ReadWrite(scratch.full()),
            ],
            workgroups: groups(n, 64)?,
        },
    )?;
    let mean = mean(ctx, n, 1.0 / n as f32, scratch.full(), out)?;
    Ok(Kernel::new(vec![elems, mean], vec![scratch], vec![]))
}

/// Uniform block of the `sgd` kernel.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct SgdParams {
    n: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad: [u32; 3],
}

impl SgdParams {
    /// The uniform block for `n` parameters.
    pub fn new(cfg: &SgdConfig, n: usize) -> Result<Self> {
        cfg.validate()?;
        Ok(SgdParams {
            n: dim_u32("sgd", "parameters", n)?,
            nesterov: cfg.nesterov as u32,
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            _pad: [0; 3],
        })
    }
}

/// Uniform block of the `adam` kernel; rewrite it each step (`Launch::set_params`) for the new
/// step's bias corrections and learning rate.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AdamParams {
    n: u32,
    decoupled: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    _pad: [u32; 3],
}

impl AdamParams {
    /// The uniform block for `n` parameters at step `t` (1-based).
    pub fn new(cfg: &AdamConfig, n: usize, t: u64) -> Result<Self> {
        cfg.validate()?;
        let (bc1, bc2) = cfg.bias_corrections(t.max(1));
        Ok(AdamParams {
            n: dim_u32("adam", "parameters", n)?,
            decoupled: cfg.decoupled as u32,
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            bc1,
            bc2,
            _pad: [0; 3],
        })
    }
}

fn check_flat(op: &'static str, n: usize, views: &[(&str, &View<'_>)]) -> Result<()> {
    for (what, v) in views {
        need(op, what, v, n)?;
    }
    Ok(())
}

/// Whether `n` elements of every view can be accessed as vec4s (whole, aligned groups of 4).
fn vec4_ok(n: usize, views: &[&View<'_>]) -> bool {
    n.is_multiple_of(4) && views.iter().all(|v| v.offset % 4 == 0 && v.len % 4 == 0)
}

/// An in-place SGD update of `n` parameters. `velocity` (n elements) is needed with momentum
/// and must be `None` without: plain SGD keeps no state, and the kernel then binds a
/// one-element placeholder it never reads.
pub fn sgd(
    ctx: &GpuContext,
    cfg: &SgdConfig,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    velocity: Option<View<'_>>,
) -> Result<Kernel> {
    check_flat("sgd", n, &[("param", &param), ("grad", &grad)])?;
    let placeholder = match velocity {
        Some(v) => {
            check_flat("sgd", n, &[("velocity", &v)])?;
            None
        }
        None if cfg.momentum != 0.0 => {
            return Err(Error::invalid(
                "sgd",
                "momentum needs a velocity buffer of the parameters' size",
            ))
        }
        None => Some(GpuBuffer::zeros(ctx, "sgd velocity (unused)", 4)?),
    };
    let velocity = match (&placeholder, velocity) {
        (Some(p), _) => p.full(),
        (None, Some(v)) => v,
        (None, None) => unreachable!("a placeholder is made when no velocity is given"),
    };
    let wide = vec4_ok(n, &[&param, &grad, &velocity]);
    let launch = Launch::new(
        ctx,
        LaunchDesc {
            shader: "optim",
            entry: if wide { "sgd4" } else { "sgd" },
            constants: vec![],
            params: SgdParams::new(cfg, n)?,
            bindings: vec![
                Binding::ReadWrite(param),
                Binding::Read(grad),
                Binding::ReadWrite(velocity),
            ],
            // sgd4: 4 vec4s per invocation.
            workgroups: groups(if wide { n.div_ceil(16) } else { n }, 256)?,
        },
    )?;
    Ok(Kernel::new(
        vec![launch],
        placeholder.into_iter().collect(),
        vec![],
    ))
}

/// An in-place Adam/AdamW update of `n` parameters at step `t`.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    ctx: &GpuContext,
    cfg: &AdamConfig,
    t: u64,
    n: usize,
    param: View<'_>,
    grad: View<'_>,
    m: View<'_>,
    v: View<'_>,
) -> Result<Launch> {
    check_flat(
        "adam",
        n,
        &[("param", &param), ("grad", &grad), ("m", &m), ("v", &v)],
    )?;
    let wide = vec4_ok(n, &[&param, &grad, &m, &v]);
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "optim",
            entry: if wide { "adam4" } else { "adam" },
            constants: vec![],
            params: AdamParams::new(cfg, n, t)?,
            bindings: vec![
                Binding::ReadWrite(param),
                Binding::Read(grad),
                Binding::ReadWrite(m),
                Binding::ReadWrite(v),
            ],
            // adam4: 4 vec4s per invocation.
            workgroups: groups(if wide { n.div_ceil(16) } else { n }, 256)?,
        },
    )
}
