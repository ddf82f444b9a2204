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

// mean: out[0] = scale * sum(src[0..n]), one workgroup: each invocation sums a strided slice
// in order, then a fixed tree combines the partial sums (the same order every run).
// bindings: 0 mean_dims, 1 src (n), 2 total (1, write)
struct MeanDims {
    n: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

const MEAN_WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> mean_dims: MeanDims;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> total: array<f32>;

var<workgroup> partial: array<f32, MEAN_WG>;

@compute @workgroup_size(MEAN_WG)
fn mean(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < mean_dims.n; i += MEAN_WG) {
        s = s + src[i];
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
