// The register-tiled GEMM for real GPUs (after gemm_common.wgsl), in the manner of TF.js's
// packed vec4 matmul: WG x WG invocations (override WG: 8 for small or skinny products, 16
// otherwise) share a (4 WG) x (4 WG) tile of C; each accumulates a 4x4 block in registers
// from vec4s of A and B staged in workgroup memory, TK = 16 deep. A and B are read as vec4
// along their stored rows, so the axis each is stored along must be a multiple of 4 (k for
// A and for B transposed, m for A transposed, n for B); gemm_path checks this and sends other
// shapes to gemm.wgsl. A vec4 is then either wholly inside the matrix or wholly outside
// (zero), which is the edge handling.

override WG: u32 = 16u;
const TK: u32 = 16u;

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;

// [kk * WG + i]: rows (of A) or columns (of B) 4i..4i+3 of the tile at depth kk.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(WG, WG)
fn gemm_vec4(
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
    let m = dims.m;
    let n = dims.n;
    let k = dims.k;
    let trans_a = (dims.trans & 1u) != 0u;
    let trans_b = (dims.trans & 2u) != 0u;
    // Each operand's tile is ts x TK values: WG * TK vec4s, spread over WG * WG invocations.
    let vecs = WG * TK;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < k; k0 += TK) {
        for (var e = li; e < vecs; e += WG * WG) {
            if (trans_a) {
                // Stored (k, m): a vec4 is 4 rows of op(A) at one depth.
                let kk = e / WG;
                let q = e % WG;
                var v = vec4(0.0);
                if (k0 + kk < k && row0 + 4u * q < m) {
                    v = a[((k0 + kk) * m + row0) / 4u + q];
                }
                a_tile[kk * WG + q] = v;
            } else {
                // Stored (m, k): a vec4 is 4 depths of one row, spread over 4 tile slots.
                let r = e / 4u;
                let q = e % 4u;
                var v = vec4(0.0);
                if (row0 + r < m && k0 + 4u * q < k) {
                    v = a[((row0 + r) * k + k0) / 4u + q];
                }
                for (var j = 0u; j < 4u; j++) {
                    a_tile[(4u * q + j) * WG + r / 4u][r % 4u] = v[j];
                }
            }
            if (trans_b) {
                // Stored (n, k): a vec4 is 4 depths of one column of op(B).
                let cidx = e / 4u;
                let q = e % 4u;
                var v = vec4(0.0);
                if (col0 + cidx < n && k0 + 4u * q < k) {
                    v = b[((col0 + cidx) * k + k0) / 4u + q];
                }
                for (var j = 0u; j < 4u; j++) {
                    b_tile[(4u * q + j) * WG + cidx / 4u][cidx % 4u] = v[j];
                }
            } else {
                // Stored (k, n): a vec4 is 4 columns at one depth.
                let kk = e / WG;
                let q = e % WG;
                var v = vec4(0.0);
                if (k0 + kk < k && col0 + 4u * q < n) {
                    v = b[((k0 + kk) * n + col0) / 4u + q];
                }
                b_tile[kk * WG + q] = v;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = a_tile[kk * WG + lid.y];
            let bv = b_tile[kk * WG + lid.x];
            acc[0] = fma(vec4(av.x), bv, acc[0]);
            acc[1] = fma(vec4(av.y), bv, acc[1]);
            acc[2] = fma(vec4(av.z), bv, acc[2]);
            acc[3] = fma(vec4(av.w), bv, acc[3]);
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
