// Packs a GEMM operand for the texture path (see gemm_tex.wgsl):
//   dst texel (q, r) = op(src)[r, 4q .. 4q + 4], zero outside (rows, cols), stored at
//   (r / BAND * WIDTH + q, r % BAND) (see BAND).
// op(src) is (rows, cols); src is stored (rows, cols), or (cols, rows) when trans.
// bindings: 0 (unused parameter block), 1 src, 2 dst (rgba32float storage texture)
//
// Kept out of gemm.wgsl on purpose: on lavapipe a pipeline from a module that declares
// workgroup memory pays for it on every bind, even in entry points that never touch it.


struct PackDims {
    rows: u32,      // rows of op(src)
    cols: u32,      // columns of op(src)
    trans: u32,     // src is stored (cols, rows)
    width: u32,     // texels per row = ceil(cols / 4)
    height: u32,    // texture rows (>= rows; the extra rows are zero)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> pack_dims_unused: PackDims;

// The shape is specialized per pipeline (see gemm.wgsl on why not a uniform buffer).
override ROWS: u32 = 1u;
override COLS: u32 = 1u;
override TRANS: bool = false;
override WIDTH: u32 = 1u;
override HEIGHT: u32 = 1u;
// Rows per band: a texture taller than the device allows holds its rows in bands side by side,
// logical texel (q, r) at (r / BAND * WIDTH + q, r % BAND). Without banding BAND >= HEIGHT.
override BAND: u32 = 4294967295u;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

fn src_at(r: u32, col: u32) -> f32 {
    if (r >= ROWS || col >= COLS) {
        return 0.0;
    }
    if (TRANS) {
        return src[col * ROWS + r];
    }
    return src[r * COLS + col];
}

fn store(q: u32, r: u32, v: vec4<f32>) {
    textureStore(dst, vec2<u32>(r / BAND * WIDTH + q, r % BAND), v);
}

fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(64)
fn pack(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = linear_workgroup(wid, nwg) * 64u + li;
    if (t >= WIDTH * HEIGHT) {
        return;
    }
    let q = t % WIDTH;
    let r = t / WIDTH;
    let col = q * 4u;
    let v = vec4(src_at(r, col), src_at(r, col + 1u), src_at(r, col + 2u), src_at(r, col + 3u));
    store(q, r, v);
}


// pack4 / pack4t: the same result with 16-byte loads, for lavapipe, where each storage access
// is a per-lane scalar loop with bounds checks (four scalar loads cost about four times one
// vec4 load).
//   pack4  (not TRANS, COLS % 4 == 0): texel (q, r) is src4[r * COLS / 4 + q] (a copy).
//   pack4t (TRANS, ROWS % 4 == 0): one invocation reads the 4x4 block of src rows 4q..4q+4
//          (columns of op(src)) at op(src) rows 4b..4b+4 and writes its transpose as 4 texels.
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn pack4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = linear_workgroup(wid, nwg) * 256u + li;
    if (t >= WIDTH * HEIGHT) {
        return;
    }
    let q = t % WIDTH;
    let r = t / WIDTH;
    var v = vec4(0.0);
    if (r < ROWS) {
        v = src4[r * WIDTH + q];
    }
    store(q, r, v);
}

@compute @workgroup_size(64)
fn pack4t(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let blocks = (HEIGHT + 3u) / 4u;
    let t = linear_workgroup(wid, nwg) * 64u + li;
    if (t >= WIDTH * blocks) {
        return;
    }
    let q = t % WIDTH;
    let b = t / WIDTH;
    // c_j = op(src)[4b .. 4b + 4, 4q + j] = src[(4q + j) * ROWS + 4b ..], zero outside.
    // Written out without loops or dynamic indexing, which lavapipe handles poorly.
    let stride = ROWS / 4u;
    let inside = 4u * b < ROWS;
    let col = 4u * q;
    var c0 = vec4(0.0);
    var c1 = vec4(0.0);
    var c2 = vec4(0.0);
    var c3 = vec4(0.0);
    if (inside && col < COLS) { c0 = src4[col * stride + b]; }
    if (inside && col + 1u < COLS) { c1 = src4[(col + 1u) * stride + b]; }
    if (inside && col + 2u < COLS) { c2 = src4[(col + 2u) * stride + b]; }
    if (inside && col + 3u < COLS) { c3 = src4[(col + 3u) * stride + b]; }
    let r = 4u * b;
    store(q, r, vec4(c0.x, c1.x, c2.x, c3.x));
    if (r + 1u < HEIGHT) { store(q, r + 1u, vec4(c0.y, c1.y, c2.y, c3.y)); }
    if (r + 2u < HEIGHT) { store(q, r + 2u, vec4(c0.z, c1.z, c2.z, c3.z)); }
    if (r + 3u < HEIGHT) { store(q, r + 3u, vec4(c0.w, c1.w, c2.w, c3.w)); }
}

// pack4t_sum: pack4t for a matrix whose columns are also summed: a layer's output gradient,
// packed transposed for the weight and input gradients and summed for the bias gradient, in
// one pass over it. One invocation per 4 columns of src walks its rows in order, so each
// sum adds the rows in column_sum's order (the same bits).
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(8)
fn pack4t_sum(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // op(src) rows 4b .. 4b + 4 (src columns); ROWS % 4 == 0, so HEIGHT == ROWS.
    let b = linear_workgroup(wid, nwg) * 8u + li;
    if (4u * b >= ROWS) {
        return;
    }
    let stride = ROWS / 4u;
    let r = 4u * b;
    var s = vec4(0.0);
    for (var q = 0u; q < WIDTH; q++) {
        let col = 4u * q;
        var c0 = vec4(0.0);
        var c1 = vec4(0.0);
        var c2 = vec4(0.0);
        var c3 = vec4(0.0);
        if (col < COLS) { c0 = src4[col * stride + b]; }
        if (col + 1u < COLS) { c1 = src4[(col + 1u) * stride + b]; }
        if (col + 2u < COLS) { c2 = src4[(col + 2u) * stride + b]; }
        if (col + 3u < COLS) { c3 = src4[(col + 3u) * stride + b]; }
        // Padding adds +0.0, which leaves a sum unchanged (a sum of finite values that
        // starts at +0.0 is never -0.0).
        s = (((s + c0) + c1) + c2) + c3;
        store(q, r, vec4(c0.x, c1.x, c2.x, c3.x));
        store(q, r + 1u, vec4(c0.y, c1.y, c2.y, c3.y));
        store(q, r + 2u, vec4(c0.z, c1.z, c2.z, c3.z));
        store(q, r + 3u, vec4(c0.w, c1.w, c2.w, c3.w));
    }
    sums[r] = s.x;
    sums[r + 1u] = s.y;
    sums[r + 2u] = s.z;
    sums[r + 3u] = s.w;
}
