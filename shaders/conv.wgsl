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
// dims: x (n, c, h, w); window kh x kw, stride, zero padding pad; output (oh, ow); `oc` is the
// output channels (the channels of m and y). total = elements the launch writes.
// bindings: 0 dims, 1 src (read), 2 dst (write); pool_grad: 1 x, 2 dy, 3 dx

struct ConvDims {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oc: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    total: u32,
    // The launch covers images b0 .. b0 + n of the full tensors; cols, dcols and m hold only
    // those images.
    b0: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
    let k = d.c * d.kh * d.kw;
    let row = i / k;
    let col = i % k;
    let ox = row % d.ow;
    let oy = (row / d.ow) % d.oh;
    let b = row / (d.ow * d.oh);
    let kx = col % d.kw;
    let ky = (col / d.kw) % d.kh;
    let ci = col / (d.kw * d.kh);
    let iy = i32(oy * d.stride + ky) - i32(d.pad);
    let ix = i32(ox * d.stride + kx) - i32(d.pad);
    var v = 0.0;
    if (iy >= 0 && iy < i32(d.h) && ix >= 0 && ix < i32(d.w)) {
        v = src[(((d.b0 + b) * d.c + ci) * d.h + u32(iy)) * d.w + u32(ix)];
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
    let ix = i % d.w;
    let iy = (i / d.w) % d.h;
    let ci = (i / (d.w * d.h)) % d.c;
    let b = i / (d.w * d.h * d.c);
    let k = d.c * d.kh * d.kw;
    var s = 0.0;
    for (var ky = 0u; ky < d.kh; ky++) {
        let ty = i32(iy + d.pad) - i32(ky);
        if (ty < 0 || u32(ty) % d.stride != 0u || u32(ty) / d.stride >= d.oh) {
            continue;
        }
        let oy = u32(ty) / d.stride;
        for (var kx = 0u; kx < d.kw; kx++) {
            let tx = i32(ix + d.pad) - i32(kx);
            if (tx < 0 || u32(tx) % d.stride != 0u || u32(tx) / d.stride >= d.ow) {
                continue;
            }
            let ox = u32(tx) / d.stride;
            s = s + src[((b * d.oh + oy) * d.ow + ox) * k + (ci * d.kh + ky) * d.kw + kx];
        }
    }
    dst[d.b0 * d.c * d.h * d.w + i] = s;
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
    let positions = d.oh * d.ow;
    let p = i % positions;
    let ch = (i / positions) % d.oc;
    let b = i / (positions * d.oc);
    dst[d.b0 * d.oc * positions + i] = src[(b * positions + p) * d.oc + ch];
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
    let positions = d.oh * d.ow;
    let ch = i % d.oc;
    let p = (i / d.oc) % positions;
    let b = i / (d.oc * positions);
    dst[i] = src[((d.b0 + b) * d.oc + ch) * positions + p];
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
    let positions = d.oh * d.ow;
    var s = 0.0;
    for (var p = 0u; p < positions; p++) {
        s = s + src[r * positions + p];
    }
    dst[r] = s;
}

// The (ky, kx) of the first maximum of window (oy, ox) of plane (b, ci), as ky * kw + kx.
// `v > best` never takes a NaN after the first element, as the reference.
fn window_argmax(plane: u32, oy: u32, ox: u32) -> u32 {
    let y0 = oy * d.stride;
    let x0 = ox * d.stride;
    var best = src[(plane * d.h + y0) * d.w + x0];
    var at = 0u;
    for (var ky = 0u; ky < d.kh; ky++) {
        for (var kx = 0u; kx < d.kw; kx++) {
            let v = src[(plane * d.h + y0 + ky) * d.w + x0 + kx];
            if (v > best) {
                best = v;
                at = ky * d.kw + kx;
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
    let ox = i % d.ow;
    let oy = (i / d.ow) % d.oh;
    let plane = i / (d.ow * d.oh);
    if (POOL == 0u) {
        let at = window_argmax(plane, oy, ox);
        let y = oy * d.stride + at / d.kw;
        let x = ox * d.stride + at % d.kw;
        dst[i] = src[(plane * d.h + y) * d.w + x];
    } else {
        var s = 0.0;
        for (var ky = 0u; ky < d.kh; ky++) {
            for (var kx = 0u; kx < d.kw; kx++) {
                s = s + src[(plane * d.h + oy * d.stride + ky) * d.w + ox * d.stride + kx];
            }
        }
        dst[i] = s * (1.0 / f32(d.kh * d.kw));
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
    let ix = i % d.w;
    let iy = (i / d.w) % d.h;
    let plane = i / (d.w * d.h);
    // Windows oy with oy * stride <= iy < oy * stride + kh, within [0, oh).
    var oy_lo = 0u;
    if (iy + 1u > d.kh) {
        oy_lo = (iy + 1u - d.kh + d.stride - 1u) / d.stride;
    }
    let oy_hi = min(iy / d.stride + 1u, d.oh);
    var ox_lo = 0u;
    if (ix + 1u > d.kw) {
        ox_lo = (ix + 1u - d.kw + d.stride - 1u) / d.stride;
    }
    let ox_hi = min(ix / d.stride + 1u, d.ow);
    let scale = 1.0 / f32(d.kh * d.kw);
    var s = 0.0;
    for (var oy = oy_lo; oy < oy_hi; oy++) {
        for (var ox = ox_lo; ox < ox_hi; ox++) {
            let g = grad[(plane * d.oh + oy) * d.ow + ox];
            if (POOL == 0u) {
                let at = window_argmax(plane, oy, ox);
                if (at == (iy - oy * d.stride) * d.kw + (ix - ox * d.stride)) {
                    s = s + g;
                }
            } else {
                s = s + g * scale;
            }
        }
    }
    dx[i] = s;
}
