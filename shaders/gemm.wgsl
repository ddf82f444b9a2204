// GEMM:  C = alpha * op(A) * op(B) + beta * C   [+ bias] [ReLU]
//
// dims: op(A) is (m, k), op(B) is (k, n), C is (m, n), all row-major.
//   A is stored (m, k), or (k, m) when transposed; B is stored (k, n), or (n, k) when transposed.
// With beta == 0, C is written without being read (BLAS rule: NaN in C does not leak in).
// Epilogue (EPILOGUE override): 0 none, 1 + bias[col], 2 + bias then ReLU, 3 ReLU.
//
// Two paths, chosen per adapter by the host (src/gpu/kernels.rs):
//
// * gemm_tiled (real GPUs, and any shape): 256 invocations share 64x64 tiles of A and B in
//   workgroup memory, each invocation accumulating a 4x4 block. Transposes are index changes.
//   bindings: 0 dims, 1 a, 2 b, 3 bias, 4 c
//
// * pack + gemm_tex (CPU adapters: lavapipe/llvmpipe). On Mesa's llvmpipe every storage-buffer
//   load inside a loop becomes a scalar loop over the 8 SIMD lanes with a bounds check per
//   element (~9 instructions per float), while a texel fetch is a branch-free vector gather
//   (~3 per float). So `pack` first copies op(A) and op(B) into zero-padded rgba32float
//   textures (transposes resolved there), and gemm_tex reads only texels: each invocation
//   owns 4 rows x 16 columns of C, its A rows fetched as vec4 along k (4 k-steps per fetch).
//   pack bindings: 0 pack_dims, 1 src, 2 dst (texture, write)
//   gemm_tex bindings: 0 dims, 1 ta (texture: m rows of ceil(k/4) texels),
//                      2 tb (texture: 4*ceil(k/4) rows of ceil(n/4) texels), 3 bias, 4 c

struct GemmDims {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,   // workgroups along m; the linear workgroup id is tm + tiles_m * tn
    tiles_n: u32,
    alpha: f32,
    beta: f32,
    trans: u32,     // bit 0: A transposed, bit 1: B transposed (gemm_tiled only)
}

override EPILOGUE: u32 = 0u;
// gemm_tex is specialized per GEMM shape: lavapipe folds these into the code the way it would
// inline uniform values, without recompiling whenever a different uniform buffer is bound.
override M: u32 = 1u;
override N: u32 = 1u;
override K4: u32 = 1u;      // ceil(k / 4)
override TILES_M: u32 = 1u;
override TILES_N: u32 = 1u;
override ALPHA: f32 = 1.0;
override BETA: f32 = 0.0;

@group(0) @binding(0) var<storage, read> dims: GemmDims;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// Applies alpha, beta, bias and ReLU to one accumulated value and stores it (if in range).
fn finish(row: u32, col: u32, acc: f32) {
    if (row >= dims.m || col >= dims.n) {
        return;
    }
    let idx = row * dims.n + col;
    var v = dims.alpha * acc;
    if (dims.beta != 0.0) {
        v = v + dims.beta * c[idx];
    }
    if (EPILOGUE == 1u || EPILOGUE == 2u) {
        v = v + bias[col];
    }
    if (EPILOGUE == 2u || EPILOGUE == 3u) {
        // NaN passes through (NaN < 0 is false).
        v = select(v, 0.0, v < 0.0);
    }
    c[idx] = v;
}

fn finish4(row: u32, col: u32, v: vec4<f32>) {
    finish(row, col, v.x);
    finish(row, col + 1u, v.y);
    finish(row, col + 2u, v.z);
    finish(row, col + 3u, v.w);
}

// ---------------------------------------------------------------------------------------
// gemm_tiled

const TS: u32 = 64u;   // tile edge (rows of A, columns of B)
const TK: u32 = 16u;   // k-depth of one shared tile

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

var<workgroup> a_tile: array<f32, 1024>;   // (TK, TS): [kk * TS + row]
var<workgroup> b_tile: array<f32, 1024>;   // (TK, TS): [kk * TS + col]

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

@compute @workgroup_size(16, 16)
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
    let row0 = (tile % dims.tiles_m) * TS;
    let col0 = (tile / dims.tiles_m) * TS;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < dims.k; k0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + 256u * e;
            let r = idx % TS;
            let kk = idx / TS;
            a_tile[kk * TS + r] = a_at(row0 + r, k0 + kk);
            b_tile[kk * TS + r] = b_at(k0 + kk, col0 + r);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let ab = kk * TS + lid.y * 4u;
            let bb = kk * TS + lid.x * 4u;
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

// ---------------------------------------------------------------------------------------
// gemm_tex

@group(0) @binding(1) var ta: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tb: texture_storage_2d<rgba32float, read>;

// finish() with the shape and scales from override constants (gemm_tex).
fn finish_spec(row: u32, col: u32, acc: f32) {
    if (row >= M || col >= N) {
        return;
    }
    let idx = row * N + col;
    var v = ALPHA * acc;
    if (BETA != 0.0) {
        v = v + BETA * c[idx];
    }
    if (EPILOGUE == 1u || EPILOGUE == 2u) {
        v = v + bias[col];
    }
    if (EPILOGUE == 2u || EPILOGUE == 3u) {
        v = select(v, 0.0, v < 0.0);
    }
    c[idx] = v;
}

fn finish4_spec(row: u32, col: u32, v: vec4<f32>) {
    finish_spec(row, col, v.x);
    finish_spec(row, col + 1u, v.y);
    finish_spec(row, col + 2u, v.z);
    finish_spec(row, col + 3u, v.w);
}

// Workgroup of 8 (one llvmpipe SIMD vector): 32 rows x 16 columns; every index into `acc` is
// a constant, so it stays in registers (a dynamic index would move it to scratch memory).
@compute @workgroup_size(8)
fn gemm_tex(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = linear_workgroup(wid, nwg);
    if (tile >= TILES_M * TILES_N) {
        return;
    }
    let row0 = (tile % TILES_M) * 32u + lane * 4u;
    let last_row = M - 1u;
    let r0 = min(row0, last_row);
    let r1 = min(row0 + 1u, last_row);
    let r2 = min(row0 + 2u, last_row);
    let r3 = min(row0 + 3u, last_row);
    let last_q = (N + 3u) / 4u - 1u;
    let qbase = (tile / TILES_M) * 4u;
    let q0 = min(qbase, last_q);
    let q1 = min(qbase + 1u, last_q);
    let q2 = min(qbase + 2u, last_q);
    let q3 = min(qbase + 3u, last_q);
    var acc: array<vec4<f32>, 16>;   // acc[4 * i + j]: row i, texel j
    for (var kq = 0u; kq < K4; kq++) {
        let a0 = textureLoad(ta, vec2<u32>(kq, r0));
        let a1 = textureLoad(ta, vec2<u32>(kq, r1));
        let a2 = textureLoad(ta, vec2<u32>(kq, r2));
        let a3 = textureLoad(ta, vec2<u32>(kq, r3));
        for (var s = 0u; s < 4u; s++) {
            let kk = kq * 4u + s;
            let b0 = textureLoad(tb, vec2<u32>(q0, kk));
            let b1 = textureLoad(tb, vec2<u32>(q1, kk));
            let b2 = textureLoad(tb, vec2<u32>(q2, kk));
            let b3 = textureLoad(tb, vec2<u32>(q3, kk));
            let x0 = vec4(a0[s]);
            let x1 = vec4(a1[s]);
            let x2 = vec4(a2[s]);
            let x3 = vec4(a3[s]);
            acc[0] = fma(x0, b0, acc[0]);
            acc[1] = fma(x0, b1, acc[1]);
            acc[2] = fma(x0, b2, acc[2]);
            acc[3] = fma(x0, b3, acc[3]);
            acc[4] = fma(x1, b0, acc[4]);
            acc[5] = fma(x1, b1, acc[5]);
            acc[6] = fma(x1, b2, acc[6]);
            acc[7] = fma(x1, b3, acc[7]);
            acc[8] = fma(x2, b0, acc[8]);
            acc[9] = fma(x2, b1, acc[9]);
            acc[10] = fma(x2, b2, acc[10]);
            acc[11] = fma(x2, b3, acc[11]);
            acc[12] = fma(x3, b0, acc[12]);
            acc[13] = fma(x3, b1, acc[13]);
            acc[14] = fma(x3, b2, acc[14]);
            acc[15] = fma(x3, b3, acc[15]);
        }
    }
    let col = qbase * 4u;
    finish4_spec(row0, col, acc[0]);
    finish4_spec(row0, col + 4u, acc[1]);
    finish4_spec(row0, col + 8u, acc[2]);
    finish4_spec(row0, col + 12u, acc[3]);
    finish4_spec(row0 + 1u, col, acc[4]);
    finish4_spec(row0 + 1u, col + 4u, acc[5]);
    finish4_spec(row0 + 1u, col + 8u, acc[6]);
    finish4_spec(row0 + 1u, col + 12u, acc[7]);
    finish4_spec(row0 + 2u, col, acc[8]);
    finish4_spec(row0 + 2u, col + 4u, acc[9]);
    finish4_spec(row0 + 2u, col + 8u, acc[10]);
    finish4_spec(row0 + 2u, col + 12u, acc[11]);
    finish4_spec(row0 + 3u, col, acc[12]);
    finish4_spec(row0 + 3u, col + 4u, acc[13]);
    finish4_spec(row0 + 3u, col + 8u, acc[14]);
    finish4_spec(row0 + 3u, col + 12u, acc[15]);
}
