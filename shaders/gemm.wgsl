// Register-blocked GEMM for CPU adapters (lavapipe/llvmpipe) and a fine fallback elsewhere.
//
//   C = alpha * op(A) * op(B) + beta * C   [+ bias] [ReLU]
//
// dims: op(A) is (m, k), op(B) is (k, n), C is (m, n), all row-major.
//   A is stored (m, k), or (k, m) when TRANS_A;  B is stored (k, n), or (n, k) when TRANS_B.
// bindings: 0 dims (uniform), 1 a, 2 b, 3 bias (n; read only when EPILOGUE has a bias), 4 c.
//
// Why this shape: llvmpipe runs 8 invocations per SIMD vector. A load whose address is the
// same for the whole workgroup is one scalar load plus a broadcast; a per-lane address becomes
// a loop over the 8 lanes. So each invocation owns TM rows of C and reads its A rows per lane
// (as vec4 along k where the layout allows: 4 k-steps per costly load), while all invocations
// share TN columns whose B values are read at workgroup-uniform addresses. No workgroup
// memory, no barriers. Rows and columns past the edge are clamped for loads and skipped for
// stores, so control flow stays uniform.

struct GemmDims {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,   // workgroups along m; the linear workgroup id is tm + tiles_m * tn
    tiles_n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

const WG: u32 = 8u;   // invocations per workgroup: one llvmpipe SIMD vector
const TM: u32 = 4u;   // rows of C per invocation
const TN: u32 = 8u;   // columns of C per workgroup, shared by all its invocations
const ROWS: u32 = WG * TM;

override TRANS_B: bool = false;
// 0: none, 1: + bias, 2: + bias then ReLU, 3: ReLU
override EPILOGUE: u32 = 0u;

@group(0) @binding(0) var<uniform> dims: GemmDims;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// Entry `gemm_k4` (A stored (m, k), k % 4 == 0) reads A as vec4 along k.
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;

fn b_at(kk: u32, col: u32) -> f32 {
    if (TRANS_B) {
        return b[col * dims.k + kk];
    }
    return b[kk * dims.n + col];
}

// (first row, first column) of this workgroup's tile, or m as row when past the last tile.
fn tile_origin(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let tile = wid.x + nwg.x * (wid.y + nwg.y * wid.z);
    if (tile >= dims.tiles_m * dims.tiles_n) {
        return vec2<u32>(dims.m, 0u);
    }
    return vec2<u32>((tile % dims.tiles_m) * ROWS, (tile / dims.tiles_m) * TN);
}

fn finish(row: u32, col: u32, acc: f32) {
    if (row >= dims.m || col >= dims.n) {
        return;
    }
    let idx = row * dims.n + col;
    var v = dims.alpha * acc;
    if (dims.beta != 0.0) {
        // beta == 0 never reads C, so garbage (even NaN) in C does not leak in (BLAS rule).
        v = v + dims.beta * c[idx];
    }
    if (EPILOGUE == 1u || EPILOGUE == 2u) {
        v = v + bias[col];
    }
    if (EPILOGUE == 2u || EPILOGUE == 3u) {
        // NaN passes through (NaN < 0 is false); ReLU'(0) is taken as 0 in the backward.
        v = select(v, 0.0, v < 0.0);
    }
    c[idx] = v;
}

fn b4(kk: u32, c0: u32) -> vec4<f32> {
    return vec4<f32>(b_at(kk, c0), b_at(kk, c0 + 1u), b_at(kk, c0 + 2u), b_at(kk, c0 + 3u));
}

// acc(i, h) is rows (i) x columns (4h..4h+4); every index below is a constant, so the arrays
// live in registers (a loop over them would spill them to scratch memory).
@compute @workgroup_size(WG)
fn gemm_k4(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let origin = tile_origin(wid, nwg);
    if (origin.x >= dims.m) {
        return;
    }
    let k4 = dims.k / 4u;
    let last = dims.m - 1u;
    let r0 = min(origin.x + lane, last) * k4;
    let r1 = min(origin.x + WG + lane, last) * k4;
    let r2 = min(origin.x + 2u * WG + lane, last) * k4;
    let r3 = min(origin.x + 3u * WG + lane, last) * k4;
    let c0 = min(origin.y, dims.n - 4u);
    let c1 = min(origin.y + 4u, dims.n - 4u);
    var acc: array<vec4<f32>, 8>;
    for (var kq = 0u; kq < k4; kq++) {
        let a0 = a4[r0 + kq];
        let a1 = a4[r1 + kq];
        let a2 = a4[r2 + kq];
        let a3 = a4[r3 + kq];
        let kk = kq * 4u;
        var b0 = b4(kk, c0);
        var b1 = b4(kk, c1);
        acc[0] = fma(vec4(a0.x), b0, acc[0]); acc[1] = fma(vec4(a0.x), b1, acc[1]);
        acc[2] = fma(vec4(a1.x), b0, acc[2]); acc[3] = fma(vec4(a1.x), b1, acc[3]);
        acc[4] = fma(vec4(a2.x), b0, acc[4]); acc[5] = fma(vec4(a2.x), b1, acc[5]);
        acc[6] = fma(vec4(a3.x), b0, acc[6]); acc[7] = fma(vec4(a3.x), b1, acc[7]);
        b0 = b4(kk + 1u, c0);
        b1 = b4(kk + 1u, c1);
        acc[0] = fma(vec4(a0.y), b0, acc[0]); acc[1] = fma(vec4(a0.y), b1, acc[1]);
        acc[2] = fma(vec4(a1.y), b0, acc[2]); acc[3] = fma(vec4(a1.y), b1, acc[3]);
        acc[4] = fma(vec4(a2.y), b0, acc[4]); acc[5] = fma(vec4(a2.y), b1, acc[5]);
        acc[6] = fma(vec4(a3.y), b0, acc[6]); acc[7] = fma(vec4(a3.y), b1, acc[7]);
        b0 = b4(kk + 2u, c0);
        b1 = b4(kk + 2u, c1);
        acc[0] = fma(vec4(a0.z), b0, acc[0]); acc[1] = fma(vec4(a0.z), b1, acc[1]);
        acc[2] = fma(vec4(a1.z), b0, acc[2]); acc[3] = fma(vec4(a1.z), b1, acc[3]);
        acc[4] = fma(vec4(a2.z), b0, acc[4]); acc[5] = fma(vec4(a2.z), b1, acc[5]);
        acc[6] = fma(vec4(a3.z), b0, acc[6]); acc[7] = fma(vec4(a3.z), b1, acc[7]);
        b0 = b4(kk + 3u, c0);
        b1 = b4(kk + 3u, c1);
        acc[0] = fma(vec4(a0.w), b0, acc[0]); acc[1] = fma(vec4(a0.w), b1, acc[1]);
        acc[2] = fma(vec4(a1.w), b0, acc[2]); acc[3] = fma(vec4(a1.w), b1, acc[3]);
        acc[4] = fma(vec4(a2.w), b0, acc[4]); acc[5] = fma(vec4(a2.w), b1, acc[5]);
        acc[6] = fma(vec4(a3.w), b0, acc[6]); acc[7] = fma(vec4(a3.w), b1, acc[7]);
    }
    let row = origin.x + lane;
    store4(row, origin.y, acc[0]);
    store4(row, origin.y + 4u, acc[1]);
    store4(row + WG, origin.y, acc[2]);
    store4(row + WG, origin.y + 4u, acc[3]);
    store4(row + 2u * WG, origin.y, acc[4]);
    store4(row + 2u * WG, origin.y + 4u, acc[5]);
    store4(row + 3u * WG, origin.y, acc[6]);
    store4(row + 3u * WG, origin.y + 4u, acc[7]);
}

fn store4(row: u32, col: u32, v: vec4<f32>) {
    finish(row, col, v.x);
    finish(row, col + 1u, v.y);
    finish(row, col + 2u, v.z);
    finish(row, col + 3u, v.w);
}

@group(0) @binding(2) var<storage, read> b4v: array<vec4<f32>>;

fn a_at(row: u32, kk: u32) -> f32 {
    return a[row * dims.k + kk];
}
@group(0) @binding(1) var<storage, read> a: array<f32>;

@compute @workgroup_size(WG)
fn gemm_n16(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = wid.x + nwg.x * (wid.y + nwg.y * wid.z);
    if (tile >= dims.tiles_m * dims.tiles_n) {
        return;
    }
    let row0 = (tile % dims.tiles_m) * 8u;
    let col0 = (tile / dims.tiles_m) * 128u + lane * 16u;
    let n4 = dims.n / 4u;
    let cq = min(col0, dims.n - 16u) / 4u;
    var acc: array<vec4<f32>, 32>;
    for (var kk = 0u; kk < dims.k; kk++) {
        let bq0 = b4v[kk * n4 + cq];
        let bq1 = b4v[kk * n4 + cq + 1u];
        let bq2 = b4v[kk * n4 + cq + 2u];
        let bq3 = b4v[kk * n4 + cq + 3u];
        for (var i = 0u; i < 8u; i++) {
            let av = vec4(a_at(min(row0 + i, dims.m - 1u), kk));
            acc[4u * i] = fma(av, bq0, acc[4u * i]);
            acc[4u * i + 1u] = fma(av, bq1, acc[4u * i + 1u]);
            acc[4u * i + 2u] = fma(av, bq2, acc[4u * i + 2u]);
            acc[4u * i + 3u] = fma(av, bq3, acc[4u * i + 3u]);
        }
    }
    for (var i = 0u; i < 8u; i++) {
        for (var h = 0u; h < 4u; h++) {
            let v = acc[4u * i + h];
            let col = col0 + 4u * h;
            finish(row0 + i, col, v.x);
            finish(row0 + i, col + 1u, v.y);
            finish(row0 + i, col + 2u, v.z);
            finish(row0 + i, col + 3u, v.w);
        }
    }
}

const RR: u32 = 32u;
@compute @workgroup_size(WG)
fn gemm_c4(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = wid.x + nwg.x * (wid.y + nwg.y * wid.z);
    if (tile >= dims.tiles_m * dims.tiles_n) {
        return;
    }
    let row0 = (tile % dims.tiles_m) * RR;
    let col0 = (tile / dims.tiles_m) * 32u + lane * 4u;
    let n4 = dims.n / 4u;
    let cq = min(col0, dims.n - 4u) / 4u;
    let last = dims.m - 1u;
    var acc: array<vec4<f32>, RR>;
    for (var kk = 0u; kk < dims.k; kk++) {
        let bq = b4v[kk * n4 + cq];
        for (var i = 0u; i < RR; i++) {
            acc[i] = fma(vec4(a[min(row0 + i, last) * dims.k + kk]), bq, acc[i]);
        }
    }
    for (var i = 0u; i < RR; i++) {
        store4(row0 + i, col0, acc[i]);
    }
}
