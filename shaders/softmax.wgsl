// Row softmax and its backward over row-major (rows, cols) arrays; one invocation per row.
//
// Forward subtracts the row maximum before exp: softmax is unchanged by a shift, and the
// shift keeps exp from overflowing (logits of 1e4 stay finite). A NaN anywhere in a row makes
// the whole row NaN, as in the reference.
//   softmax_forward   bindings: 0 dims, 1 x (read), 2 y (write)
//   softmax_backward  bindings: 0 dims, 1 y (read), 2 dy (read), 3 dx (write)
//                     dx = y * (dy - sum(dy * y))

struct Dims {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> dims: Dims;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn softmax_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = row_index(wid, nwg, lid);
    if (row >= dims.rows) {
        return;
    }
    let base = row * dims.cols;
    var m = x[base];
    for (var j = 1u; j < dims.cols; j++) {
        let v = x[base + j];
        if (v > m) {
            m = v;
        }
    }
    var s = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        let e = exp(x[base + j] - m);
        y[base + j] = e;
        s = s + e;
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < dims.cols; j++) {
        y[base + j] = y[base + j] * inv;
    }
}

@group(0) @binding(1) var<storage, read> y_in: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = row_index(wid, nwg, lid);
    if (row >= dims.rows) {
        return;
    }
    let base = row * dims.cols;
    var dot = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        dot = dot + dy[base + j] * y_in[base + j];
    }
    for (var j = 0u; j < dims.cols; j++) {
        dx[base + j] = y_in[base + j] * (dy[base + j] - dot);
    }
}
