// Reductions.
//
// column_sum: d_bias[col] = sum over rows of dy[row, col] (the bias gradient).
//
// dims: dy is row-major (rows, cols). One invocation per column walks the rows in order, so
// the result is deterministic (no atomics). With accumulate = 1 the sum is added to out.
// bindings: 0 dims, 1 dy (read), 2 out (cols, read-write)

struct Dims {
    rows: u32,
    cols: u32,
    accumulate: u32,
    _pad: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn column_sum(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let col = (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
    if (col >= dims.cols) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < dims.rows; r++) {
        s = s + dy[r * dims.cols + col];
    }
    if (dims.accumulate != 0u) {
        s = s + out[col];
    }
    out[col] = s;
}

// mean: out[0] = scale * sum(src[0..n]) (with SQUARES, scale * sum(src^2)), one workgroup: each invocation sums a strided slice
// in order, then a fixed tree combines the partial sums (the same order every run).
// bindings: 0 mean_dims, 1 src (n), 2 total (1, write)
struct MeanDims {
    n: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

const MEAN_WG: u32 = 256u;
override SQUARES: bool = false;

@group(0) @binding(0) var<storage, read> mean_dims: MeanDims;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> total: array<f32>;

var<workgroup> partial: array<f32, MEAN_WG>;

@compute @workgroup_size(MEAN_WG)
fn mean(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < mean_dims.n; i += MEAN_WG) {
        let x = src[i];
        s = s + select(x, x * x, SQUARES);
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = MEAN_WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        total[0] = partial[0] * mean_dims.scale;
    }
}

// clip_by_global_norm: g[i] *= clip / max(sqrt(sumsq[0]), clip), TensorFlow's
// clip_by_global_norm; sumsq[0] comes from `mean` with SQUARES over every gradient.
// A non-finite norm makes every gradient NaN, so the step's loss check reports it.
// bindings: 0 clip_dims, 1 sumsq (1), 2 g (n, read-write)
struct ClipDims {
    n: u32,
    clip: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> clip_dims: ClipDims;
@group(0) @binding(1) var<storage, read> sumsq: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;

@compute @workgroup_size(MEAN_WG)
fn clip_by_global_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * MEAN_WG + lid;
    if (i >= clip_dims.n) {
        return;
    }
    let norm = sqrt(sumsq[0]);
    var scale = clip_dims.clip / max(norm, clip_dims.clip);
    if ((bitcast<u32>(norm) & 0x7f800000u) == 0x7f800000u) {
        scale = bitcast<f32>(0x7fc00000u); // NaN: max() may drop a NaN norm
    }
    g[i] = g[i] * scale;
}
