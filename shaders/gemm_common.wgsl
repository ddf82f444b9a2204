// GEMM:  C = alpha * op(A) * op(B) + beta * C   [+ bias] [ReLU]
//
// dims: op(A) is (m, k), op(B) is (k, n), C is (m, n), all row-major.
//   A is stored (m, k), or (k, m) when transposed; B is stored (k, n), or (n, k) when transposed.
// With beta == 0, C is written without being read (BLAS rule: NaN in C does not leak in).
// Epilogue (EPILOGUE override): 0 none, 1 + bias[col], 2 + bias then ReLU, 3 ReLU,
// 4 ReLU gradient (C where y > 0, y from the bias slot at C's stored index).
//
// This file is the part the storage-buffer GEMMs share (the parameter block, the epilogue,
// bindings 0 dims, 3 bias, 4 c); the runtime prepends it to gemm.wgsl (any shape) and
// gemm_vec4.wgsl (operands whose rows are whole vec4s), which bind a (1) and b (2) as they
// read them. CPU adapters take gemm_pack.wgsl + gemm_tex.wgsl instead (see there).

struct GemmDims {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,   // workgroups along m; the linear workgroup id is tm + tiles_m * tn
    tiles_n: u32,
    alpha: f32,
    beta: f32,
    trans: u32,     // bit 0: A transposed, bit 1: B transposed, bit 2: C stored transposed
}

override EPILOGUE: u32 = 0u;

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
    // Bit 2 of dims.trans: C is stored transposed, (n, m).
    let idx = select(row * dims.n + col, col * dims.m + row, (dims.trans & 4u) != 0u);
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

