// Convolution and pooling over NCHW f32 data (src/cpu/conv.rs is the reference). A
// convolution is lowered to a GEMM (gemm.wgsl / gemm_tex.wgsl) between these kernels:
//   forward:      im2col(x) -> cols (n*oh*ow, K) with K = c*kh*kw; cols * W^T + bias ->
//                 m (n*oh*ow, out); to_nchw(m) -> y
//   grad input:   to_nhwc(dy) -> m; m * W -> dcols (n*oh*ow, K); col2im(dcols) -> dx
//   grad weight:  to_nhwc(dy)^T * im2col(x) -> dW (out, K)
//   grad bias:    row_sum(dy as (n*out, oh*ow)), then column_sum (reduce.wgsl) over n
// Every kernel writes each output element from one invocation, summing in a fixed order
// (no atomics): results are deterministic.
//
// Geometry: x (n, C, H, W); window KH x KW, STRIDE, zero padding PAD; output (OH, OW); OC is
// the output channels (the channels of m and y).
// bindings: 0 dims, 1 src (read), 2 dst (write); pool_grad: 1 x, 2 dy, 3 dx

// The geometry is specialized per pipeline (override constants): lavapipe divides by a
// runtime value lane by lane (~25 cycles each), by a constant with a multiply and a shift,
// and these kernels split flat indices into coordinates with several divisions each.
override C: u32 = 1u;
override H: u32 = 1u;
override W: u32 = 1u;
override OC: u32 = 1u;
override OH: u32 = 1u;
override OW: u32 = 1u;
override KH: u32 = 1u;
override KW: u32 = 1u;
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;

struct ConvDims {
    // Elements this launch writes.
    total: u32,
    // The launch covers images b0 .. of the full tensors; cols, dcols and m hold only those.
    b0: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> d: ConvDims;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
}

// cols[row, col]: row = (b, oy, ox), col = (ci, ky, kx); zero in the padding.
@compute @workgroup_size(WG)
fn im2col(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let k = C * KH * KW;
    let row = i / k;
    let col = i % k;
    let ox = row % OW;
    let oy = (row / OW) % OH;
    let b = row / (OW * OH);
    let kx = col % KW;
    let ky = (col / KW) % KH;
    let ci = col / (KW * KH);
    let iy = i32(oy * STRIDE + ky) - i32(PAD);
    let ix = i32(ox * STRIDE + kx) - i32(PAD);
    var v = 0.0;
    if (iy >= 0 && iy < i32(H) && ix >= 0 && ix < i32(W)) {
        v = src[(((d.b0 + b) * C + ci) * H + u32(iy)) * W + u32(ix)];
    }
    dst[i] = v;
}

// dx[b, ci, iy, ix] = sum over the (ky, kx) whose window position covers it of dcols.
@compute @workgroup_size(WG)
fn col2im(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let ix = i % W;
    let iy = (i / W) % H;
    let ci = (i / (W * H)) % C;
    let b = i / (W * H * C);
    let k = C * KH * KW;
    var s = 0.0;
    for (var ky = 0u; ky < KH; ky++) {
        let ty = i32(iy + PAD) - i32(ky);
        if (ty < 0 || u32(ty) % STRIDE != 0u || u32(ty) / STRIDE >= OH) {
            continue;
        }
        let oy = u32(ty) / STRIDE;
        for (var kx = 0u; kx < KW; kx++) {
            let tx = i32(ix + PAD) - i32(kx);
            if (tx < 0 || u32(tx) % STRIDE != 0u || u32(tx) / STRIDE >= OW) {
                continue;
            }
            let ox = u32(tx) / STRIDE;
            s = s + src[((b * OH + oy) * OW + ox) * k + (ci * KH + ky) * KW + kx];
        }
    }
    dst[d.b0 * C * H * W + i] = s;
}

// y[b, ch, p] = m[b * P + p, ch] with P = oh * ow positions and oc channels.
@compute @workgroup_size(WG)
fn to_nchw(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let positions = OH * OW;
    let p = i % positions;
    let ch = (i / positions) % OC;
    let b = i / (positions * OC);
    dst[d.b0 * OC * positions + i] = src[(b * positions + p) * OC + ch];
}

// m[b * P + p, ch] = y[b, ch, p]: the inverse of to_nchw.
@compute @workgroup_size(WG)
fn to_nhwc(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let positions = OH * OW;
    let ch = i % OC;
    let p = (i / OC) % positions;
    let b = i / (OC * positions);
    dst[i] = src[((d.b0 + b) * OC + ch) * positions + p];
}

// dst[r] = sum of src[r, 0 .. oh*ow] in order, for r < total (= n * oc).
@compute @workgroup_size(WG)
fn row_sum(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid);
    if (r >= d.total) {
        return;
    }
    let positions = OH * OW;
    var s = 0.0;
    for (var p = 0u; p < positions; p++) {
        s = s + src[r * positions + p];
    }
    dst[r] = s;
}

// The (ky, kx) of the first maximum of window (oy, ox) of plane (b, ci), as ky * kw + kx.
// `v > best` never takes a NaN after the first element, as the reference.
fn window_argmax(plane: u32, oy: u32, ox: u32) -> u32 {
    let y0 = oy * STRIDE;
    let x0 = ox * STRIDE;
    var best = src[(plane * H + y0) * W + x0];
    var at = 0u;
    for (var ky = 0u; ky < KH; ky++) {
        for (var kx = 0u; kx < KW; kx++) {
            let v = src[(plane * H + y0 + ky) * W + x0 + kx];
            if (v > best) {
                best = v;
                at = ky * KW + kx;
            }
        }
    }
    return at;
}

// Pooling: y (n, c, oh, ow) from x (n, c, h, w), no padding. POOL 0: max, 1: average.
override POOL: u32 = 0u;

@compute @workgroup_size(WG)
fn pool(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let plane = i / (OW * OH);
    if (POOL == 0u) {
        let at = window_argmax(plane, oy, ox);
        let y = oy * STRIDE + at / KW;
        let x = ox * STRIDE + at % KW;
        dst[i] = src[(plane * H + y) * W + x];
    } else {
        var s = 0.0;
        for (var ky = 0u; ky < KH; ky++) {
            for (var kx = 0u; kx < KW; kx++) {
                s = s + src[(plane * H + oy * STRIDE + ky) * W + ox * STRIDE + kx];
            }
        }
        dst[i] = s * (1.0 / f32(KH * KW));
    }
}

// dx of pooling, one invocation per input element, summing over the windows that cover it in
// (oy, ox) order. Max: dy where this element is the window's first maximum (src = x,
// grad = dy). Average: dy / (kh kw) (grad = dy; src unused).
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn pool_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let ix = i % W;
    let iy = (i / W) % H;
    let plane = i / (W * H);
    // Windows oy with oy * stride <= iy < oy * stride + kh, within [0, oh).
    var oy_lo = 0u;
    if (iy + 1u > KH) {
        oy_lo = (iy + 1u - KH + STRIDE - 1u) / STRIDE;
    }
    let oy_hi = min(iy / STRIDE + 1u, OH);
    var ox_lo = 0u;
    if (ix + 1u > KW) {
        ox_lo = (ix + 1u - KW + STRIDE - 1u) / STRIDE;
    }
    let ox_hi = min(ix / STRIDE + 1u, OW);
    let scale = 1.0 / f32(KH * KW);
    var s = 0.0;
    for (var oy = oy_lo; oy < oy_hi; oy++) {
        for (var ox = ox_lo; ox < ox_hi; ox++) {
            let g = grad[(plane * OH + oy) * OW + ox];
            if (POOL == 0u) {
                let at = window_argmax(plane, oy, ox);
                if (at == (iy - oy * STRIDE) * KW + (ix - ox * STRIDE)) {
                    s = s + g;
                }
            } else {
                s = s + g * scale;
            }
        }
    }
    dx[i] = s;
}

// im2col_tex: im2col written straight into a GEMM operand texture (gemm_pack.wgsl's layout:
// texel (q, r) holds cols[r, 4q .. 4q + 4], stored at (r / BAND * TEX_W + q, r % BAND)), so
// the texture path needs neither the cols buffer nor a pack. One invocation per texel; rows
// from d.rows up to the texture's height are written as zeros (a GEMM's op(B) is read in
// groups of 4 rows).
// bindings: 0 tex_dims, 1 src = x (read), 2 cols_tex (write)
override TEX_W: u32 = 1u;
override BAND: u32 = 4294967295u;

struct TexDims {
    // Texels this launch writes: TEX_W * (rows rounded up to the texture's height).
    total: u32,
    b0: u32,
    // Rows of cols (images * OH * OW) this launch fills.
    rows: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> td: TexDims;
@group(0) @binding(2) var cols_tex: texture_storage_2d<rgba32float, write>;

fn x_at(b: u32, col: u32, oy: u32, ox: u32) -> f32 {
    let k = C * KH * KW;
    if (col >= k) {
        return 0.0;
    }
    let kx = col % KW;
    let ky = (col / KW) % KH;
    let ci = col / (KW * KH);
    let iy = i32(oy * STRIDE + ky) - i32(PAD);
    let ix = i32(ox * STRIDE + kx) - i32(PAD);
    if (iy < 0 || iy >= i32(H) || ix < 0 || ix >= i32(W)) {
        return 0.0;
    }
    return src[(((td.b0 + b) * C + ci) * H + u32(iy)) * W + u32(ix)];
}

@compute @workgroup_size(WG)
fn im2col_tex(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_index(wid, nwg, lid);
    if (t >= td.total) {
        return;
    }
    let q = t % TEX_W;
    let row = t / TEX_W;
    var v = vec4(0.0);
    if (row < td.rows) {
        let ox = row % OW;
        let oy = (row / OW) % OH;
        let b = row / (OW * OH);
        let col = 4u * q;
        v = vec4(x_at(b, col, oy, ox), x_at(b, col + 1u, oy, ox), x_at(b, col + 2u, oy, ox),
                 x_at(b, col + 3u, oy, ox));
    }
    textureStore(cols_tex, vec2<u32>(row / BAND * TEX_W + q, row % BAND), v);
}

// conv_direct: the convolution as one invocation per output element looping over
// (ci, ky, kx), the alternative to im2col + GEMM. Kept to measure against it (conv_bench):
// on lavapipe every storage load in the loop is a per-lane scalar load, so it runs at a small
// fraction of the GEMM path.
// bindings: 0 dims, 1 src = x, 2 dst = y, 3 weight, 4 bias
@group(0) @binding(3) var<storage, read> cw: array<f32>;
@group(0) @binding(4) var<storage, read> cb: array<f32>;

@compute @workgroup_size(WG)
fn conv_direct(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= d.total) {
        return;
    }
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let o = (i / (OW * OH)) % OC;
    let b = i / (OW * OH * OC);
    var s = 0.0;
    for (var ci = 0u; ci < C; ci++) {
        for (var ky = 0u; ky < KH; ky++) {
            let iy = i32(oy * STRIDE + ky) - i32(PAD);
            if (iy < 0 || iy >= i32(H)) {
                continue;
            }
            for (var kx = 0u; kx < KW; kx++) {
                let ix = i32(ox * STRIDE + kx) - i32(PAD);
                if (ix < 0 || ix >= i32(W)) {
                    continue;
                }
                s = s + src[(((d.b0 + b) * C + ci) * H + u32(iy)) * W + u32(ix)]
                    * cw[((o * C + ci) * KH + ky) * KW + kx];
            }
        }
    }
    dst[i] = s + cb[o];
}
