//! Strided row copies (shaders/copy.wgsl): concatenation and slicing along axis 1.

use bytemuck::{Pod, Zeroable};

use super::{dim_u32, groups, need};
use crate::error::Result;
use crate::gpu::launch::LaunchDesc;
use crate::gpu::{Binding, GpuContext, Kernel, Launch, View};

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct CopyParams {
    n: u32,
    width: u32,
    src_stride: u32,
    src_off: u32,
    dst_stride: u32,
    dst_off: u32,
    _pad: [u32; 2],
}

/// Where one block of columns goes: `rows` rows of `width` values, read at
/// `src_off + r * src_stride` and written at `dst_off + r * dst_stride`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowCopy {
    pub rows: usize,
    pub width: usize,
    pub src: (usize, usize),
    pub dst: (usize, usize),
}

fn copy_rows(ctx: &GpuContext, c: RowCopy, src: View<'_>, dst: View<'_>) -> Result<Launch> {
    let n = c.rows * c.width;
    let (src_stride, src_off) = c.src;
    let (dst_stride, dst_off) = c.dst;
    if n > 0 {
        need(
            "copy_rows",
            "src",
            &src,
            (c.rows - 1) * src_stride + src_off + c.width,
        )?;
        need(
            "copy_rows",
            "dst",
            &dst,
            (c.rows - 1) * dst_stride + dst_off + c.width,
        )?;
    }
    let u = |name: &str, v: usize| dim_u32("copy_rows", name, v);
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "copy",
            entry: "copy_rows",
            constants: vec![],
            params: CopyParams {
                n: u("elements", n)?,
                width: u("width", c.width)?,
                src_stride: u("source stride", src_stride)?,
                src_off: u("source offset", src_off)?,
                dst_stride: u("destination stride", dst_stride)?,
                dst_off: u("destination offset", dst_off)?,
                _pad: [0; 2],
            },
            bindings: vec![Binding::Read(src), Binding::ReadWrite(dst)],
            workgroups: groups(n, 256)?,
        },
    )
}

/// `inputs` side by side along axis 1 into `y`: each input is `rows` rows of its `width`
/// values (channels times the spatial size for images), and `y`'s rows hold them in order.
pub fn concat(
    ctx: &GpuContext,
    rows: usize,
    inputs: &[(usize, View<'_>)],
    y: View<'_>,
) -> Result<Kernel> {
    let total: usize = inputs.iter().map(|(w, _)| w).sum();
    let mut launches = Vec::with_capacity(inputs.len());
    let mut off = 0;
    for (width, x) in inputs {
        let c = RowCopy {
            rows,
            width: *width,
            src: (*width, 0),
            dst: (total, off),
        };
        launches.push(copy_rows(ctx, c, *x, y)?);
        off += width;
    }
    Ok(Kernel::new(launches, vec![], vec![]))
}

/// Columns `start..start + width` of each of `rows` rows of `x` (rows of `x_width` values)
/// into `y`.
pub fn slice(
    ctx: &GpuContext,
    (rows, x_width): (usize, usize),
    (start, width): (usize, usize),
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    let c = RowCopy {
        rows,
        width,
        src: (x_width, start),
        dst: (width, 0),
    };
    copy_rows(ctx, c, x, y)
}
