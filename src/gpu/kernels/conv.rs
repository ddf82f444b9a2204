//! Convolution and pooling kernels (shaders/conv.wgsl), and convolutions lowered to GEMMs.
//!
//! A convolution runs as im2col + GEMM + a layout change, over chunks of images small enough
//! that the scratch matrices stay under the device's binding limit (and a 64 MiB budget) and
//! the GEMMs under 65,536 rows.

use bytemuck::{Pod, Zeroable};

use super::{
    band_rows, check_loops, dim_u32, gemm, gemm_path, gemm_tex_multiply, groups, need, pack,
    packed_texture, GemmPath, GemmSpec,
};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuBuffer, GpuContext, Kernel, Launch, View};
use crate::ops::{Epilogue, Window};

/// Scratch bytes one chunk of a convolution may use per matrix.
const CHUNK_BYTES: usize = 64 << 20;
/// Rows (images x positions) of one chunk's GEMM, which bounds its packed textures too.
const CHUNK_ROWS: usize = 65_536;

/// The shapes of a convolution or pooling: input (n, c, h, w), `out` channels, window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels (equal to `c` for pooling).
    pub out: usize,
    pub win: Window,
}

impl ConvGeom {
    /// Output (height, width), or an error when the window does not fit.
    pub fn output(&self) -> Result<(usize, usize)> {
        self.win.output(self.h, self.w).ok_or_else(|| {
            Error::shape(
                "conv2d",
                format!(
                    "a {}x{} window (stride {}, padding {}) does not fit {}x{}",
                    self.win.kh, self.win.kw, self.win.stride, self.win.pad, self.h, self.w
                ),
            )
        })
    }

    /// Elements of one im2col row: c * kh * kw.
    fn k(&self) -> usize {
        self.c * self.win.kh * self.win.kw
    }

    fn positions(&self) -> Result<usize> {
        let (oh, ow) = self.output()?;
        Ok(oh * ow)
    }

    /// Images per chunk: every scratch matrix of a chunk fits the budget and the binding limit.
    fn chunk(&self, ctx: &GpuContext) -> Result<usize> {
        let limit = (ctx.limits().max_storage_buffer_binding_size as usize).min(CHUNK_BYTES);
        let per_image = self.positions()? * self.k().max(self.out) * 4;
        if per_image > limit {
            return Err(Error::BufferTooLarge {
                label: "the im2col matrix of one image".into(),
                bytes: per_image as u64,
                limit: limit as u64,
                which: "max_storage_buffer_binding_size (or the 64 MiB chunk budget)",
            });
        }
        let by_rows = CHUNK_ROWS / self.positions()?;
        Ok((limit / per_image).min(by_rows).clamp(1, self.n.max(1)))
    }

    /// The geometry as the shader's override constants (checked to fit u32).
    fn constants(&self) -> Result<Vec<(&'static str, f64)>> {
        let (oh, ow) = self.output()?;
        let mut out = Vec::new();
        for (name, v) in [
            ("C", self.c),
            ("H", self.h),
            ("W", self.w),
            ("OC", self.out),
            ("OH", oh),
            ("OW", ow),
            ("KH", self.win.kh),
            ("KW", self.win.kw),
            ("STRIDE", self.win.stride),
            ("PAD", self.win.pad),
        ] {
            out.push((name, dim_u32("conv2d", name, v)? as f64));
        }
        Ok(out)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct ConvDims {
    total: u32,
    b0: u32,
    _pad: [u32; 2],
}

/// A launch of `entry` writing `total` elements, for images `b0 ..`.
fn launch(
    ctx: &GpuContext,
    g: &ConvGeom,
    entry: &'static str,
    extra: Option<(&'static str, f64)>,
    (b0, total): (usize, usize),
    bindings: Vec<Binding<'_>>,
) -> Result<Launch> {
    let mut constants = g.constants()?;
    constants.extend(extra);
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "conv",
            entry,
            constants,
            params: ConvDims {
                total: dim_u32(entry, "elements", total)?,
                b0: dim_u32(entry, "first image", b0)?,
                _pad: [0; 2],
            },
            workgroups: groups(total, 256)?,
            bindings,
        },
    )
}

/// im2col of images `b0 .. b0 + images` of `x` into `cols` (images * oh * ow, c * kh * kw).
fn im2col(
    ctx: &GpuContext,
    g: &ConvGeom,
    b0: usize,
    images: usize,
    x: View<'_>,
    cols: View<'_>,
) -> Result<Launch> {
    let total = images * g.positions()? * g.k();
    need("im2col", "cols", &cols, total)?;
    launch(
        ctx,
        g,
        "im2col",
        None,
        (b0, total),
        vec![Binding::Read(x), Binding::ReadWrite(cols)],
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct TexDims {
    total: u32,
    b0: u32,
    rows: u32,
    _pad: u32,
}

/// im2col of images `b0 .. b0 + images` straight into a packed GEMM operand texture with
/// `band` rows per band, zero rows up to `height` (>= the chunk's rows).
#[allow(clippy::too_many_arguments)]
fn im2col_tex(
    ctx: &GpuContext,
    g: &ConvGeom,
    b0: usize,
    images: usize,
    height: usize,
    band: usize,
    x: View<'_>,
    tex: &wgpu::Texture,
) -> Result<Launch> {
    let rows = images * g.positions()?;
    let width = g.k().div_ceil(4);
    let total = width * height;
    let view = tex.create_view(&Default::default());
    let mut constants = g.constants()?;
    constants.extend([("TEX_W", width as f64), ("BAND", band as f64)]);
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "conv",
            entry: "im2col_tex",
            constants,
            params: TexDims {
                total: dim_u32("im2col", "texels", total)?,
                b0: dim_u32("im2col", "first image", b0)?,
                rows: dim_u32("im2col", "rows", rows)?,
                _pad: 0,
            },
            workgroups: groups(total, 256)?,
            bindings: vec![Binding::Read(x), Binding::TextureWrite(&view)],
        },
    )
}

/// The layout change between (images * P, out) matrices and NCHW tensors (P = oh * ow), for
/// images `b0 ..` of the tensor.
fn relayout(
    ctx: &GpuContext,
    g: &ConvGeom,
    to_nchw: bool,
    b0: usize,
    images: usize,
    src: View<'_>,
    dst: View<'_>,
) -> Result<Launch> {
    let total = images * g.positions()? * g.out;
    launch(
        ctx,
        g,
        if to_nchw { "to_nchw" } else { "to_nhwc" },
        None,
        (b0, total),
        vec![Binding::Read(src), Binding::ReadWrite(dst)],
    )
}

fn check_conv(g: &ConvGeom, x: &View<'_>, weight: &View<'_>) -> Result<()> {
    need("conv2d", "x", x, g.n * g.c * g.h * g.w)?;
    need("conv2d", "weight", weight, g.out * g.k())?;
    check_loops(
        "conv2d",
        &format!("a {}x{} window", g.win.kh, g.win.kw),
        g.win.kh * g.win.kw,
    )
}

/// y (n, out, oh, ow) = conv(x, weight) + bias, as im2col + GEMM (bias in its epilogue) +
/// a layout change per chunk of images.
pub fn conv2d(
    ctx: &GpuContext,
    g: &ConvGeom,
    x: View<'_>,
    weight: View<'_>,
    bias: View<'_>,
    y: View<'_>,
) -> Result<Kernel> {
    check_conv(g, &x, &weight)?;
    need("conv2d", "bias", &bias, g.out)?;
    let p = g.positions()?;
    need("conv2d", "y", &y, g.n * g.out * p)?;
    let chunk = g.chunk(ctx)?;
    let m = GpuBuffer::zeros(ctx, "conv output rows", chunk * p * g.out)?;
    let full = GemmSpec::new(chunk * p, g.out, g.k())
        .trans_b(true)
        .epilogue(Epilogue::Bias);
    if gemm_path(ctx, &full) == GemmPath::Texture {
        // im2col writes the packed op(A) directly; the weight is packed once for all chunks.
        let band = band_rows(ctx, chunk * p);
        let ta = packed_texture(ctx, "conv im2col", chunk * p, g.k(), band)?;
        let k4 = g.k().div_ceil(4);
        let (tb, pack_b) = pack(
            ctx,
            "conv weight",
            weight,
            g.k(),
            g.out,
            true,
            4 * k4,
            4 * k4,
        )?;
        let mut launches = vec![pack_b];
        for b0 in (0..g.n).step_by(chunk) {
            let images = chunk.min(g.n - b0);
            let rows = images * p;
            launches.push(im2col_tex(ctx, g, b0, images, rows, band, x, &ta)?);
            let spec = GemmSpec { m: rows, ..full };
            launches.push(gemm_tex_multiply(
                ctx,
                &spec,
                (&ta, band),
                &tb,
                bias,
                m.full(),
            )?);
            launches.push(relayout(ctx, g, true, b0, images, m.full(), y)?);
        }
        return Ok(Kernel::new(launches, vec![m], vec![ta, tb]));
    }
    let cols = GpuBuffer::zeros(ctx, "conv im2col", chunk * p * g.k())?;
    let mut parts = Vec::new();
    for b0 in (0..g.n).step_by(chunk) {
        let images = chunk.min(g.n - b0);
        let rows = images * p;
        parts.push(im2col(ctx, g, b0, images, x, cols.full())?.into());
        let spec = GemmSpec::new(rows, g.out, g.k())
            .trans_b(true)
            .epilogue(Epilogue::Bias);
        parts.push(gemm(ctx, &spec, cols.full(), weight, Some(bias), m.full())?);
        parts.push(relayout(ctx, g, true, b0, images, m.full(), y)?.into());
    }
    Ok(Kernel::sequence(parts, vec![cols, m]))
}

/// The same convolution as [`conv2d`] computed directly (one invocation per output element
/// looping over the window and channels). Slower on every adapter measured so far (see
/// conv_bench); kept as the measured alternative.
pub fn conv2d_direct(
    ctx: &GpuContext,
    g: &ConvGeom,
    x: View<'_>,
    weight: View<'_>,
    bias: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    check_conv(g, &x, &weight)?;
    need("conv2d", "bias", &bias, g.out)?;
    let total = g.n * g.out * g.positions()?;
    need("conv2d", "y", &y, total)?;
    check_loops("conv2d", &format!("{} input channels", g.c), g.k())?;
    launch(
        ctx,
        g,
        "conv_direct",
        None,
        (0, total),
        vec![
            Binding::Read(x),
            Binding::ReadWrite(y),
            Binding::Read(weight),
            Binding::Read(bias),
        ],
    )
}

/// dx (n, c, h, w) of a convolution from dy (n, out, oh, ow): dy as rows times the weight,
/// then col2im (a gather: each input element sums the entries that read it).
pub fn conv2d_grad_input(
    ctx: &GpuContext,
    g: &ConvGeom,
    dy: View<'_>,
    weight: View<'_>,
    dx: View<'_>,
) -> Result<Kernel> {
    check_conv(g, &dx, &weight)?;
    let p = g.positions()?;
    need("conv2d_grad_input", "dy", &dy, g.n * g.out * p)?;
    let chunk = g.chunk(ctx)?;
    let m = GpuBuffer::zeros(ctx, "conv dy rows", chunk * p * g.out)?;
    let dcols = GpuBuffer::zeros(ctx, "conv d im2col", chunk * p * g.k())?;
    let mut parts = Vec::new();
    for b0 in (0..g.n).step_by(chunk) {
        let images = chunk.min(g.n - b0);
        let rows = images * p;
        parts.push(relayout(ctx, g, false, b0, images, dy, m.full())?.into());
        let spec = GemmSpec::new(rows, g.k(), g.out);
        parts.push(gemm(ctx, &spec, m.full(), weight, None, dcols.full())?);
        let total = images * g.c * g.h * g.w;
        let col2im = launch(
            ctx,
            g,
            "col2im",
            None,
            (b0, total),
            vec![Binding::Read(dcols.full()), Binding::ReadWrite(dx)],
        )?;
        parts.push(col2im.into());
    }
    Ok(Kernel::sequence(parts, vec![m, dcols]))
}

/// d weight (out, c, kh, kw) of a convolution: dy as rows, transposed, times im2col(x),
/// accumulated over chunks of images.
pub fn conv2d_grad_weight(
    ctx: &GpuContext,
    g: &ConvGeom,
    x: View<'_>,
    dy: View<'_>,
    dweight: View<'_>,
) -> Result<Kernel> {
    check_conv(g, &x, &dweight)?;
    let p = g.positions()?;
    need("conv2d_grad_weight", "dy", &dy, g.n * g.out * p)?;
    // The GEMM's inner dimension is the chunk's rows: keep it within the loop limits and the
    // texture height of the packed op(B), so it stays on the fast path.
    let max_k = (ctx.limits().max_texture_dimension_2d as usize).min(32_768);
    let chunk = g.chunk(ctx)?.min((max_k / p).max(1));
    let m = GpuBuffer::zeros(ctx, "conv dy rows", chunk * p * g.out)?;
    let full = GemmSpec::new(g.out, g.k(), chunk * p).trans_a(true);
    if gemm_path(ctx, &full) == GemmPath::Texture {
        // im2col writes the packed op(B) directly (4-row groups, zero-filled).
        let height = 4 * (chunk * p).div_ceil(4);
        let tb = packed_texture(ctx, "conv im2col", height, g.k(), height)?;
        let mut launches = Vec::new();
        let mut textures = Vec::new();
        for (i, b0) in (0..g.n).step_by(chunk).enumerate() {
            let images = chunk.min(g.n - b0);
            let rows = images * p;
            let h = 4 * rows.div_ceil(4);
            launches.push(im2col_tex(ctx, g, b0, images, h, height, x, &tb)?);
            launches.push(relayout(ctx, g, false, b0, images, dy, m.full())?);
            let (ta, pack_a) = pack(ctx, "conv dy^T", m.full(), g.out, rows, true, g.out, g.out)?;
            launches.push(pack_a);
            let mut spec = GemmSpec { k: rows, ..full };
            if i > 0 {
                spec.beta = 1.0;
            }
            launches.push(gemm_tex_multiply(
                ctx,
                &spec,
                (&ta, g.out),
                &tb,
                dy,
                dweight,
            )?);
            textures.push(ta);
        }
        textures.push(tb);
        return Ok(Kernel::new(launches, vec![m], textures));
    }
    let cols = GpuBuffer::zeros(ctx, "conv im2col", chunk * p * g.k())?;
    let mut parts = Vec::new();
    for (i, b0) in (0..g.n).step_by(chunk).enumerate() {
        let images = chunk.min(g.n - b0);
        let rows = images * p;
        parts.push(im2col(ctx, g, b0, images, x, cols.full())?.into());
        parts.push(relayout(ctx, g, false, b0, images, dy, m.full())?.into());
        let mut spec = GemmSpec::new(g.out, g.k(), rows).trans_a(true);
        if i > 0 {
            spec.beta = 1.0;
        }
        parts.push(gemm(ctx, &spec, m.full(), cols.full(), None, dweight)?);
    }
    Ok(Kernel::sequence(parts, vec![cols, m]))
}

/// out (c) = sum over images and positions of dy (n, c, P): the convolution's bias gradient
/// (per-(image, channel) sums, then a column sum over images).
pub fn channel_sum(
    ctx: &GpuContext,
    n: usize,
    c: usize,
    positions: usize,
    dy: View<'_>,
    out: View<'_>,
) -> Result<Kernel> {
    need("channel_sum", "dy", &dy, n * c * positions)?;
    need("channel_sum", "out", &out, c)?;
    check_loops("channel_sum", &format!("{positions} positions"), positions)?;
    let rows = GpuBuffer::zeros(ctx, "channel sums per image", (n * c).max(1))?;
    let g = ConvGeom {
        n,
        c,
        h: positions,
        w: 1,
        out: c,
        win: Window::square(1, 1, 0),
    };
    let row_sum = launch(
        ctx,
        &g,
        "row_sum",
        None,
        (0, n * c),
        vec![Binding::Read(dy), Binding::ReadWrite(rows.full())],
    )?;
    let columns = super::column_sum(ctx, n, c, false, rows.full(), out)?;
    Ok(Kernel::sequence(
        vec![row_sum.into(), columns.into()],
        vec![rows],
    ))
}

/// Max or average pooling of x (n, c, h, w) into y (n, c, oh, ow).
pub fn pool(ctx: &GpuContext, g: &ConvGeom, max: bool, x: View<'_>, y: View<'_>) -> Result<Launch> {
    let p = g.positions()?;
    need("pool", "x", &x, g.n * g.c * g.h * g.w)?;
    need("pool", "y", &y, g.n * g.c * p)?;
    check_loops(
        "pool",
        &format!("a {}x{} window", g.win.kh, g.win.kw),
        g.win.kh * g.win.kw,
    )?;
    launch(
        ctx,
        g,
        "pool",
        Some(("POOL", if max { 0.0 } else { 1.0 })),
        (0, g.n * g.c * p),
        vec![Binding::Read(x), Binding::ReadWrite(y)],
    )
}

/// dx of pooling from dy (and x, for max pooling; ignored for average pooling).
pub fn pool_grad(
    ctx: &GpuContext,
    g: &ConvGeom,
    max: bool,
    x: View<'_>,
    dy: View<'_>,
    dx: View<'_>,
) -> Result<Launch> {
    let p = g.positions()?;
    let len = g.n * g.c * g.h * g.w;
    need("pool_grad", "dy", &dy, g.n * g.c * p)?;
    need("pool_grad", "dx", &dx, len)?;
    if max {
        need("pool_grad", "x", &x, len)?;
    }
    let windows = g.win.kh.div_ceil(g.win.stride) * g.win.kw.div_ceil(g.win.stride);
    check_loops(
        "pool_grad",
        &format!("a {}x{} window", g.win.kh, g.win.kw),
        windows * (g.win.kh * g.win.kw + 1),
    )?;
    launch(
        ctx,
        g,
        "pool_grad",
        Some(("POOL", if max { 0.0 } else { 1.0 })),
        (0, len),
        vec![
            Binding::Read(if max { x } else { dy }),
            Binding::Read(dy),
            Binding::ReadWrite(dx),
        ],
    )
}
