// The shared-memory tiled GEMM for any shape (after gemm_common.wgsl): WG x WG invocations
// share tiles of A and B in workgroup memory, each accumulating a 4x4 block; transposes are
// index changes; operands are read one f32 at a time.

// WG x WG invocations (override WG: 8 for small or skinny products, 16 otherwise), each
// accumulating a 4x4 block of a (4 WG) x (4 WG) tile.
override WG: u32 = 16u;
const TK: u32 = 16u;   // k-depth of one shared tile

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

var<workgroup> a_tile: array<f32, 1024>;   // (TK, 4 WG): [kk * 4 WG + row]
var<workgroup> b_tile: array<f32, 1024>;   // (TK, 4 WG): [kk * 4 WG + col]

fn a_at(row: u32, kk: u32) -> f32 {
    if (row >= dims.m || kk >= dims.k) {
        return 0.0;
    }
    if ((dims.trans & 1u) != 0u) {
        return a[kk * dims.m + row];
    }
    return a[row * dims.k + kk];
}

fn b_at(kk: u32, col: u32) -> f32 {
    if (kk >= dims.k || col >= dims.n) {
        return 0.0;
    }
    if ((dims.trans & 2u) != 0u) {
        return b[col * dims.k + kk];
    }
    return b[kk * dims.n + col];
}

@compute @workgroup_size(WG, WG)
fn gemm_tiled(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = linear_workgroup(wid, nwg);
    // Uniform per workgroup, so the early exit keeps barriers in uniform control flow.
    if (tile >= dims.tiles_m * dims.tiles_n) {
        return;
    }
    let ts = 4u * WG;
    let row0 = (tile % dims.tiles_m) * ts;
    let col0 = (tile / dims.tiles_m) * ts;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < dims.k; k0 += TK) {
        for (var idx = li; idx < ts * TK; idx += WG * WG) {
            let r = idx % ts;
            let kk = idx / ts;
            a_tile[kk * ts + r] = a_at(row0 + r, k0 + kk);
            b_tile[kk * ts + r] = b_at(k0 + kk, col0 + r);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let ab = kk * ts + lid.y * 4u;
            let bb = kk * ts + lid.x * 4u;
            let bv = vec4(b_tile[bb], b_tile[bb + 1u], b_tile[bb + 2u], b_tile[bb + 3u]);
            acc[0] = fma(vec4(a_tile[ab]), bv, acc[0]);
            acc[1] = fma(vec4(a_tile[ab + 1u]), bv, acc[1]);
            acc[2] = fma(vec4(a_tile[ab + 2u]), bv, acc[2]);
            acc[3] = fma(vec4(a_tile[ab + 3u]), bv, acc[3]);
        }
        workgroupBarrier();
    }
    let row = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    finish4(row, col, acc[0]);
    finish4(row + 1u, col, acc[1]);
    finish4(row + 2u, col, acc[2]);
    finish4(row + 3u, col, acc[3]);
}

