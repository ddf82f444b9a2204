// Packs a GEMM operand for the texture path (see gemm_tex.wgsl):
//   dst texel (q, r) = op(src)[r, 4q .. 4q + 4], zero outside (rows, cols).
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
    textureStore(dst, vec2<u32>(q, r), v);
}


