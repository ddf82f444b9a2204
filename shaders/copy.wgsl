// Strided row copies: concatenation and slicing along the axis after the batch.
//
// Row r of `rows` copies `width` consecutive values:
//   dst[r * dst_stride + dst_off + j] = src[r * src_stride + src_off + j],  j < width.
// Concatenation runs one copy per input into its columns of the output; a slice (the
// concatenation's gradient) is one copy out of the input's columns. For images a "column"
// is a whole channel plane, so strides and offsets count channels * height * width.
//   copy_rows  bindings: 0 params, 1 src (read), 2 dst (write)

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
