// Batch normalization over the channels of (batch, channels, positions) arrays
// (src/cpu/batch_norm.rs is the reference and states the convention: PyTorch's). One
// workgroup per channel; its 256 invocations stride over the channel's batch * positions
// values and combine their partial sums in workgroup memory, so every statistic is a
// two-pass (mean, then squared deviations) f32 sum and no float atomics are needed.
//   batch_norm_forward     bindings: 0 dims, 1 x, 2 gamma, 3 beta, 4 mode,
//                          5 running_mean (read_write), 6 running_var (read_write), 7 y
//       training (mode.training != 0): the batch's statistics; invocation 0 moves the
//       channel's running statistics; evaluating: the running statistics.
//   batch_norm_backward    bindings: 0 dims, 1 x, 2 gamma, 3 dy, 4 dx
//       dx = gamma * invstd / n * (n * dy - sum(dy) - xhat * sum(dy * xhat))
//   batch_norm_gamma_grad  bindings: 0 dims, 1 x, 2 dy, 3 dgamma: sum(dy * xhat)

struct Dims {
    batch: u32,
    channels: u32,
    positions: u32,
    eps_bits: u32,        // eps as f32 bits
    momentum_bits: u32,   // momentum as f32 bits
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// src/gpu/kernels/elementwise.rs, StepMode.
struct StepMode {
    step_lo: u32,
    step_hi: u32,
    training: u32,
    _pad: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;

var<workgroup> partial_a: array<f32, WG>;
var<workgroup> partial_b: array<f32, WG>;

fn channel_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// Values per channel.
fn count() -> u32 {
    return dims.batch * dims.positions;
}

// Walks channel c's values in the (batch, channels, positions) array: invocation lid
// visits values lid, lid + WG, lid + 2 WG, ... in (sample, position) order, stepping its
// index without a division per value (llvmpipe has no vector integer divide).
struct Cursor {
    i: u32,   // index into the array
    s: u32,   // position within the sample
}

fn first(c: u32, lid: u32) -> Cursor {
    let n = lid / dims.positions;
    let s = lid - n * dims.positions;
    return Cursor((n * dims.channels + c) * dims.positions + s, s);
}

fn next(cur: Cursor) -> Cursor {
    // WG values further on: dn samples and ds positions, carrying into the next sample.
    let p = dims.positions;
    let sample = dims.channels * p;
    let dn = WG / p;
    let ds = WG - dn * p;
    var r = Cursor(cur.i + dn * sample + ds, cur.s + ds);
    if (r.s >= p) {
        r.s -= p;
        r.i += sample - p;
    }
    return r;
}

// The workgroup's sums of a and b (every invocation gets them).
fn sum2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    partial_a[lid] = a;
    partial_b[lid] = b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            partial_a[lid] += partial_a[lid + s];
            partial_b[lid] += partial_b[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(partial_a[0], partial_b[0]);
    workgroupBarrier();
    return r;
}

// Channel c's (mean, population variance).
fn stats(c: u32, lid: u32) -> vec2<f32> {
    let n = count();
    var s = 0.0;
    var cur = first(c, lid);
    for (var k = lid; k < n; k += WG) {
        s += x[cur.i];
        cur = next(cur);
    }
    let mean = sum2(lid, s, 0.0).x / f32(n);
    var q = 0.0;
    cur = first(c, lid);
    for (var k = lid; k < n; k += WG) {
        let d = x[cur.i] - mean;
        q += d * d;
        cur = next(cur);
    }
    return vec2<f32>(mean, sum2(lid, q, 0.0).x / f32(n));
}

fn eps() -> f32 {
    return bitcast<f32>(dims.eps_bits);
}

@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> mode: StepMode;
@group(0) @binding(5) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn batch_norm_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = channel_of(wid, nwg);
    if (c >= dims.channels) {
        return;
    }
    var mean: f32;
    var variance: f32;
    if (mode.training != 0u) {
        let s = stats(c, lid);
        mean = s.x;
        variance = s.y;
        if (lid == 0u) {
            let n = count();
            var unbiased = variance;
            if (n > 1u) {
                unbiased = variance * (f32(n) / f32(n - 1u));
            }
            let m = bitcast<f32>(dims.momentum_bits);
            running_mean[c] = (1.0 - m) * running_mean[c] + m * mean;
            running_var[c] = (1.0 - m) * running_var[c] + m * unbiased;
        }
    } else {
        mean = running_mean[c];
        variance = running_var[c];
    }
    let inv = 1.0 / sqrt(variance + eps());
    let n = count();
    var cur = first(c, lid);
    for (var k = lid; k < n; k += WG) {
        let i = cur.i;
        y[i] = (x[i] - mean) * inv * gamma[c] + beta[c];
        cur = next(cur);
    }
}

@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn batch_norm_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = channel_of(wid, nwg);
    if (c >= dims.channels) {
        return;
    }
    let s = stats(c, lid);
    let inv = 1.0 / sqrt(s.y + eps());
    let n = count();
    var sum_dy = 0.0;
    var sum_dyx = 0.0;
    var cur = first(c, lid);
    for (var k = lid; k < n; k += WG) {
        let i = cur.i;
        sum_dy += dy[i];
        sum_dyx += dy[i] * (x[i] - s.x) * inv;
        cur = next(cur);
    }
    let t = sum2(lid, sum_dy, sum_dyx);
    let nf = f32(n);
    let scale = gamma[c] * inv / nf;
    cur = first(c, lid);
    for (var k = lid; k < n; k += WG) {
        let i = cur.i;
        let xhat = (x[i] - s.x) * inv;
        dx[i] = scale * (nf * dy[i] - t.x - xhat * t.y);
        cur = next(cur);
    }
}

@group(0) @binding(2) var<storage, read> dy_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> dgamma: array<f32>;

@compute @workgroup_size(WG)
fn batch_norm_gamma_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = channel_of(wid, nwg);
    if (c >= dims.channels) {
        return;
    }
    let s = stats(c, lid);
    let inv = 1.0 / sqrt(s.y + eps());
    let n = count();
    var sum_dyx = 0.0;
    var cur = first(c, lid);
    for (var k = lid; k < n; k += WG) {
        let i = cur.i;
        sum_dyx += dy_g[i] * (x[i] - s.x) * inv;
        cur = next(cur);
    }
    let t = sum2(lid, 0.0, sum_dyx);
    if (lid == 0u) {
        dgamma[c] = t.y;
    }
}
