//! The texture path of the GEMM (shaders/gemm_pack.wgsl, shaders/gemm_tex.wgsl): operands
//! packed into `rgba32float` textures (in bands of rows when taller than a texture), and the
//! register-blocked multiply that reads only texels.

use bytemuck::Zeroable;

use super::gemm_spec::{gemm_dims, gemm_path, GemmPath, GemmSpec};
use super::{check_loops, groups, need, Dims4, LOOP_LIMIT};
use crate::error::{Error, Result};
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuContext, Kernel, Launch, View};
use crate::ops::Epilogue;

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
