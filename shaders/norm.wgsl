// Layer normalization over the features of (rows, cols) row-major arrays (src/cpu/norm.rs is
// the reference): y = (x - mean) / sqrt(var + eps) * gamma + beta per row, with the
// population variance from a second pass over the row (no E[x^2] - E[x]^2 cancellation).
// One invocation per row; the gamma gradient is a per-row statistics pass, then one
// invocation per column summing dy * xhat over the rows.
//   layer_norm_forward     bindings: 0 dims, 1 x, 2 gamma, 3 beta, 4 y (write)
//   layer_norm_backward    bindings: 0 dims, 1 x, 2 gamma, 3 dy, 4 dx (write)
//       dx = invstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma
//   layer_norm_stats       bindings: 0 dims, 1 x, 2 stats (write: mean, invstd per row)
//   layer_norm_gamma_grad  bindings: 0 dims, 1 x, 2 stats, 3 dy, 4 dgamma (write)

struct Dims {
    rows: u32,
    cols: u32,
    eps_bits: u32,   // eps as f32 bits
    _pad: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
}

// (mean, 1 / sqrt(var + eps)) of row `r`.
fn row_stats(r: u32) -> vec2<f32> {
    let base = r * dims.cols;
    let n = f32(dims.cols);
    var sum = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        sum += x[base + j];
    }
    let mean = sum / n;
    var sq = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        let d = x[base + j] - mean;
        sq += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(sq / n + bitcast<f32>(dims.eps_bits)));
}

@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid);
    if (r >= dims.rows) {
        return;
    }
    let s = row_stats(r);
    let base = r * dims.cols;
    for (var j = 0u; j < dims.cols; j++) {
        out[base + j] = (x[base + j] - s.x) * s.y * gamma[j] + beta[j];
    }
}

@group(0) @binding(3) var<storage, read> dy: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid);
    if (r >= dims.rows) {
        return;
    }
    let s = row_stats(r);
    let base = r * dims.cols;
    var sum_g = 0.0;
    var sum_gx = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        let g = dy[base + j] * gamma[j];
        sum_g += g;
        sum_gx += g * (x[base + j] - s.x) * s.y;
    }
    let n = f32(dims.cols);
    let mean_g = sum_g / n;
    let mean_gx = sum_gx / n;
    for (var j = 0u; j < dims.cols; j++) {
        let g = dy[base + j] * gamma[j];
        let xhat = (x[base + j] - s.x) * s.y;
        out[base + j] = s.y * (g - mean_g - xhat * mean_gx);
    }
}

@group(0) @binding(2) var<storage, read_write> stats_out: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid);
    if (r >= dims.rows) {
        return;
    }
    let s = row_stats(r);
    stats_out[2u * r] = s.x;
    stats_out[2u * r + 1u] = s.y;
}

@group(0) @binding(2) var<storage, read> stats: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm_gamma_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = linear_index(wid, nwg, lid);
    if (c >= dims.cols) {
        return;
    }
    var sum = 0.0;
    for (var r = 0u; r < dims.rows; r++) {
        let i = r * dims.cols + c;
        sum += dy[i] * (x[i] - stats[2u * r]) * stats[2u * r + 1u];
    }
    out[c] = sum;
}
