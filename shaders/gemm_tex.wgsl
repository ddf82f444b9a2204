// GEMM for CPU adapters (lavapipe/llvmpipe):  C = ALPHA * op(A) * op(B) + BETA * C [+ bias] [ReLU]
//
// dims: op(A) is (M, k), op(B) is (k, N), C is (M, N) row-major. The operands arrive packed by
// gemm_pack.wgsl into rgba32float textures: ta holds M rows of K4 = ceil(k/4) texels (op(A)
// along k; in bands of BAND_A rows when M is taller than a texture may be), tb holds 4*K4 rows of ceil(N/4) texels (op(B) rows), zero-padded.
// bindings: 0 (unused parameter block), 1 ta, 2 tb, 3 bias (N; read with a bias epilogue), 4 c
//
// Why this shape, on Mesa 22.3's llvmpipe (8 invocations per SIMD vector = one subgroup):
// - a storage-buffer load inside a loop becomes a scalar loop over the lanes with a bounds
//   check per element (~9 instructions per float); a texel fetch is a branch-free vector
//   gather (~35 instructions for 8 lanes x 4 floats);
// - every write to a loop-carried variable is blended with the execution mask, so four
//   k-steps are summed in temporaries and each accumulator is written once per k-quad;
// - the workgroup's invocations share their B texels: each lane fetches 2 of the 16 a k-quad
//   needs and subgroupBroadcast (an extract and a broadcast) hands them to the others,
//   instead of 16 gathers of identical addresses;
// - shapes and scales are override constants: lavapipe would otherwise inline uniform values
//   and recompile the shader whenever another uniform buffer is bound (about 1 ms a launch).
// Each invocation owns 4 rows x 16 columns of C; a workgroup 32 rows x 16 columns. Epilogue
// (EPILOGUE): 0 none, 1 + bias[col], 2 + bias then ReLU, 3 ReLU, 4 ReLU gradient (C where
// y > 0, y from the bias slot at C's stored index). With BETA == 0, C is not read.

// Subgroup builtins need the device's SUBGROUP feature (naga takes them without the WGSL
// `enable subgroups;` directive, which it does not parse yet).

override EPILOGUE: u32 = 0u;
override M: u32 = 1u;
override N: u32 = 1u;
override K4: u32 = 1u;
override TILES_M: u32 = 1u;
override TILES_N: u32 = 1u;
override ALPHA: f32 = 1.0;
override BETA: f32 = 0.0;
// C is stored transposed, (N, M).
override TRANS_C: bool = false;
// op(A) rows per band of ta (see gemm_pack.wgsl): row r's texels start at
// (r / BAND_A * K4, r % BAND_A), so M may exceed the device's texture height.
override BAND_A: u32 = 4294967295u;

struct Unused {
    _pad: vec4<u32>,
}

@group(0) @binding(0) var<storage, read> unused: Unused;
@group(0) @binding(1) var ta: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tb: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// Sum over s of a[s] * b_s: four k-steps of one row against one texel of columns.
fn quad(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return fma(vec4(a.w), b3, fma(vec4(a.z), b2, fma(vec4(a.y), b1, vec4(a.x) * b0)));
}

fn finish(row: u32, col: u32, acc: f32) {
    if (row >= M || col >= N) {
        return;
    }
    let idx = select(row * N + col, col * M + row, TRANS_C);
    var v = ALPHA * acc;
    if (BETA != 0.0) {
        v = v + BETA * c[idx];
    }
    if (EPILOGUE == 1u || EPILOGUE == 2u) {
        v = v + bias[col];
    }
    if (EPILOGUE == 2u || EPILOGUE == 3u) {
        // NaN passes through (NaN < 0 is false).
        v = select(v, 0.0, v < 0.0);
    }
    if (EPILOGUE == 4u) {
        // ReLU's backward: the bias slot holds the ReLU's output y, in C's stored layout.
        v = select(0.0, v, bias[idx] > 0.0);
    }
    c[idx] = v;
}

fn finish4(row: u32, col: u32, v: vec4<f32>) {
    finish(row, col, v.x);
    finish(row, col + 1u, v.y);
    finish(row, col + 2u, v.z);
    finish(row, col + 3u, v.w);
}

// This lane's 4 x 16 block of C: acc[4 * i + j] holds row tile_row0 + i, columns
// tile_col + 4j .. 4j + 4 (see gemm_tex).
fn tile_row0(lane: u32, tile: u32) -> u32 {
    return (tile % TILES_M) * 32u + lane * 4u;
}

fn tile_col(tile: u32) -> u32 {
    return (tile / TILES_M) * 16u;
}

fn multiply(lane: u32, tile: u32) -> array<vec4<f32>, 16> {
    let row0 = tile_row0(lane, tile);
    let last_row = M - 1u;
    let r0 = min(row0, last_row);
    let r1 = min(row0 + 1u, last_row);
    let r2 = min(row0 + 2u, last_row);
    let r3 = min(row0 + 3u, last_row);
    let a_x0 = r0 / BAND_A * K4;
    let a_x1 = r1 / BAND_A * K4;
    let a_x2 = r2 / BAND_A * K4;
    let a_x3 = r3 / BAND_A * K4;
    let a_y0 = r0 % BAND_A;
    let a_y1 = r1 % BAND_A;
    let a_y2 = r2 % BAND_A;
    let a_y3 = r3 % BAND_A;
    let qbase = (tile / TILES_M) * 4u;
    // This lane's share of the B texels: texel column q, k-steps s and s + 2.
    let q = min(qbase + lane % 4u, (N + 3u) / 4u - 1u);
    let s = lane / 4u;
    var acc: array<vec4<f32>, 16>;   // acc[4 * i + j]: row i, texel j
    for (var kq = 0u; kq < K4; kq++) {
        let a0 = textureLoad(ta, vec2<u32>(a_x0 + kq, a_y0));
        let a1 = textureLoad(ta, vec2<u32>(a_x1 + kq, a_y1));
        let a2 = textureLoad(ta, vec2<u32>(a_x2 + kq, a_y2));
        let a3 = textureLoad(ta, vec2<u32>(a_x3 + kq, a_y3));
        let k0 = kq * 4u;
        let lo = textureLoad(tb, vec2<u32>(q, k0 + s));        // lanes 0-3: s=0, 4-7: s=1
        let hi = textureLoad(tb, vec2<u32>(q, k0 + 2u + s));   // lanes 0-3: s=2, 4-7: s=3
        // b{s}{j}: row k0 + s of op(B) at texel qbase + j.
        let b00 = subgroupBroadcast(lo, 0u);
        let b01 = subgroupBroadcast(lo, 1u);
        let b02 = subgroupBroadcast(lo, 2u);
        let b03 = subgroupBroadcast(lo, 3u);
        let b10 = subgroupBroadcast(lo, 4u);
        let b11 = subgroupBroadcast(lo, 5u);
        let b12 = subgroupBroadcast(lo, 6u);
        let b13 = subgroupBroadcast(lo, 7u);
        let b20 = subgroupBroadcast(hi, 0u);
        let b21 = subgroupBroadcast(hi, 1u);
        let b22 = subgroupBroadcast(hi, 2u);
        let b23 = subgroupBroadcast(hi, 3u);
        let b30 = subgroupBroadcast(hi, 4u);
        let b31 = subgroupBroadcast(hi, 5u);
        let b32 = subgroupBroadcast(hi, 6u);
        let b33 = subgroupBroadcast(hi, 7u);
        acc[0] += quad(a0, b00, b10, b20, b30);
        acc[1] += quad(a0, b01, b11, b21, b31);
        acc[2] += quad(a0, b02, b12, b22, b32);
        acc[3] += quad(a0, b03, b13, b23, b33);
        acc[4] += quad(a1, b00, b10, b20, b30);
        acc[5] += quad(a1, b01, b11, b21, b31);
        acc[6] += quad(a1, b02, b12, b22, b32);
        acc[7] += quad(a1, b03, b13, b23, b33);
        acc[8] += quad(a2, b00, b10, b20, b30);
        acc[9] += quad(a2, b01, b11, b21, b31);
        acc[10] += quad(a2, b02, b12, b22, b32);
        acc[11] += quad(a2, b03, b13, b23, b33);
        acc[12] += quad(a3, b00, b10, b20, b30);
        acc[13] += quad(a3, b01, b11, b21, b31);
        acc[14] += quad(a3, b02, b12, b22, b32);
        acc[15] += quad(a3, b03, b13, b23, b33);
    }
    return acc;
}

fn tile_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(8)
fn gemm_tex(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wid, nwg);
    if (tile >= TILES_M * TILES_N) {
        return;
    }
    let acc = multiply(lane, tile);
    let row0 = tile_row0(lane, tile);
    let col = tile_col(tile);
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        finish4(row, col, acc[4u * i]);
        finish4(row, col + 4u, acc[4u * i + 1u]);
        finish4(row, col + 8u, acc[4u * i + 2u]);
        finish4(row, col + 12u, acc[4u * i + 3u]);
    }
}

// gemm_tex4: gemm_tex with C (and the bias / ReLU-output operand) accessed as vec4s, which
// on lavapipe costs about a third as much per element as scalar accesses (each is a per-lane
// loop). Needs whole groups of 4 along C's stored rows: N % 4 == 0, or M % 4 == 0 with
// TRANS_C (the lane's 4 rows of a column are then adjacent), so no group is ever partly
// inside C. Same values as gemm_tex.
@group(0) @binding(3) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c4: array<vec4<f32>>;

// Stores 4 adjacent elements of C's stored layout at c4[i4]; `col` is the column of the
// first (of all four with TRANS_C).
fn finish_vec(i4: u32, col: u32, acc: vec4<f32>) {
    c4[i4] = epilogue_vec(i4, col, acc);
}

// C's 4 adjacent elements at c4[i4] after the epilogue.
fn epilogue_vec(i4: u32, col: u32, acc: vec4<f32>) -> vec4<f32> {
    var v = ALPHA * acc;
    if (BETA != 0.0) {
        v = v + BETA * c4[i4];
    }
    if (EPILOGUE == 1u || EPILOGUE == 2u) {
        if (TRANS_C) {
            v = v + vec4(bias4[col / 4u][col % 4u]);
        } else {
            v = v + bias4[col / 4u];
        }
    }
    if (EPILOGUE == 2u || EPILOGUE == 3u) {
        v = select(v, vec4(0.0), v < vec4(0.0));
    }
    if (EPILOGUE == 4u) {
        v = select(vec4(0.0), v, bias4[i4] > vec4(0.0));
    }
    return v;
}

@compute @workgroup_size(8)
fn gemm_tex4(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wid, nwg);
    if (tile >= TILES_M * TILES_N) {
        return;
    }
    let acc = multiply(lane, tile);
    let row0 = tile_row0(lane, tile);
    let col = tile_col(tile);
    if (TRANS_C) {
        // Column col + 4j + e holds rows row0 .. row0 + 4 at (col + 4j + e) * M + row0.
        if (row0 >= M) {
            return;
        }
        for (var j = 0u; j < 4u; j++) {
            let c0 = col + 4u * j;
            let a0 = acc[j];
            let a1 = acc[4u + j];
            let a2 = acc[8u + j];
            let a3 = acc[12u + j];
            if (c0 < N) { finish_vec((c0 * M + row0) / 4u, c0, vec4(a0.x, a1.x, a2.x, a3.x)); }
            if (c0 + 1u < N) { finish_vec(((c0 + 1u) * M + row0) / 4u, c0 + 1u, vec4(a0.y, a1.y, a2.y, a3.y)); }
            if (c0 + 2u < N) { finish_vec(((c0 + 2u) * M + row0) / 4u, c0 + 2u, vec4(a0.z, a1.z, a2.z, a3.z)); }
            if (c0 + 3u < N) { finish_vec(((c0 + 3u) * M + row0) / 4u, c0 + 3u, vec4(a0.w, a1.w, a2.w, a3.w)); }
        }
    } else {
        for (var i = 0u; i < 4u; i++) {
            let row = row0 + i;
            if (row < M) {
                let base = (row * N + col) / 4u;
                if (col < N) { finish_vec(base, col, acc[4u * i]); }
                if (col + 4u < N) { finish_vec(base + 1u, col + 4u, acc[4u * i + 1u]); }
                if (col + 8u < N) { finish_vec(base + 2u, col + 8u, acc[4u * i + 2u]); }
                if (col + 12u < N) { finish_vec(base + 3u, col + 12u, acc[4u * i + 3u]); }
            }
        }
    }
}

// gemm_tex4_pack: gemm_tex4 (not TRANS_C) that also writes C, packed as the next GEMM's
// operand (see gemm_pack.wgsl; no bands), to `packed_out`: a layer's output leaves its GEMM
// ready for the next layer, without a pack launch reading it back. Its store loop repeats
// gemm_tex4's rather than sharing a helper, which would make gemm_tex4 bind the texture too.
@group(0) @binding(5) var packed_out: texture_storage_2d<rgba32float, write>;

fn finish_packed(row: u32, col: u32, acc: vec4<f32>) {
    let i4 = (row * N + col) / 4u;
    let v = epilogue_vec(i4, col, acc);
    c4[i4] = v;
    textureStore(packed_out, vec2<u32>(col / 4u, row), v);
}

@compute @workgroup_size(8)
fn gemm_tex4_pack(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wid, nwg);
    if (tile >= TILES_M * TILES_N) {
        return;
    }
    let acc = multiply(lane, tile);
    let row0 = tile_row0(lane, tile);
    let col = tile_col(tile);
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if (row < M) {
            if (col < N) { finish_packed(row, col, acc[4u * i]); }
            if (col + 4u < N) { finish_packed(row, col + 4u, acc[4u * i + 1u]); }
            if (col + 8u < N) { finish_packed(row, col + 8u, acc[4u * i + 2u]); }
            if (col + 12u < N) { finish_packed(row, col + 12u, acc[4u * i + 3u]); }
        }
    }
}
