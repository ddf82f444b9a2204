// Strided row copies: concatenation and slicing along the axis after the batch.
//
// Row r of `rows` copies `width` consecutive values:
//   dst[r * dst_stride + dst_off + j] = src[r * src_stride + src_off + j],  j < width.
// Concatenation runs one copy per input into its columns of the output; a slice (the
// concatenation's gradient) is one copy out of the input's columns. For images a "column"
// is a whole channel plane, so strides and offsets count channels * height * width.
//   copy_rows  bindings: 0 params, 1 src (read), 2 dst (write)
//
// Broadcasting (the Add and Multiply merges on shapes with axes of size 1) and its gradient,
// on shapes of rank up to 4 (padded with trailing 1s):
//   broadcast  dst[c0, c1, c2, c3] = src[c0 s0 + c1 s1 + c2 s2 + c3 s3], s = 0 on axes the
//              source repeats. bindings: 0 strided, 1 src, 2 dst
//   sum_to     dst[c] = sum over the reduced axes' k of src[(c + k) . t], k in increasing
//              index order (the CPU reference adds in the same order). bindings: 0 reduce,
//              1 src, 2 dst

struct Params {
    n: u32,          // rows * width
    width: u32,
    src_stride: u32,
    src_off: u32,
    dst_stride: u32,
    dst_off: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn copy_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
    if (i < params.n) {
        let r = i / params.width;
        let j = i - r * params.width;
        dst[r * params.dst_stride + params.dst_off + j] = src[r * params.src_stride + params.src_off + j];
    }
}

// The coordinates of row-major index i in a shape (_, d1, d2, d3).
fn unflatten(i: u32, d1: u32, d2: u32, d3: u32) -> vec4<u32> {
    let c3 = i % d3;
    var t = i / d3;
    let c2 = t % d2;
    t = t / d2;
    return vec4<u32>(t / d1, t % d1, c2, c3);
}

struct Strided {
    n: u32,
    // The output's axes 1..3.
    d1: u32,
    d2: u32,
    d3: u32,
    // The source's stride along each output axis (0 where it repeats).
    s0: u32,
    s1: u32,
    s2: u32,
    s3: u32,
}

@group(0) @binding(0) var<storage, read> strided: Strided;

@compute @workgroup_size(WG)
fn broadcast(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
    if (i < strided.n) {
        let c = unflatten(i, strided.d1, strided.d2, strided.d3);
        let s = vec4<u32>(strided.s0, strided.s1, strided.s2, strided.s3);
        dst[i] = src[dot(c, s)];
    }
}

struct Reduce {
    n: u32,
    // The output's axes 1..3.
    o1: u32,
    o2: u32,
    o3: u32,
    // The source's row-major strides.
    t0: u32,
    t1: u32,
    t2: u32,
    t3: u32,
    // The source's extent on each reduced axis (1 elsewhere), and their product.
    r0: u32,
    r1: u32,
    r2: u32,
    r3: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> reduce: Reduce;

@compute @workgroup_size(WG)
fn sum_to(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
    if (j < reduce.n) {
        let t = vec4<u32>(reduce.t0, reduce.t1, reduce.t2, reduce.t3);
        let base = dot(unflatten(j, reduce.o1, reduce.o2, reduce.o3), t);
        var acc = 0.0;
        for (var k = 0u; k < reduce.count; k = k + 1u) {
            acc = acc + src[base + dot(unflatten(k, reduce.r1, reduce.r2, reduce.r3), t)];
        }
        dst[j] = acc;
    }
}
