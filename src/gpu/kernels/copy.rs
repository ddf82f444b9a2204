//! Strided copies (shaders/copy.wgsl): concatenation and slicing along axis 1, broadcasting
//! along axes of size 1 and its gradient.

use bytemuck::{Pod, Zeroable};

use super::{check_loops, dim_u32, groups, need};
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

/// `shape` padded with trailing 1s to rank 4, or an error for higher ranks.
fn rank4(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    if shape.is_empty() || shape.len() > 4 {
        return Err(crate::error::Error::invalid(
            op,
            format!("shapes of rank 1 to 4 only, got {shape:?}"),
        ));
    }
    let mut out = [1; 4];
    out[..shape.len()].copy_from_slice(shape);
    Ok(out)
}

/// Row-major strides of a rank-4 shape.
fn strides(d: [usize; 4]) -> [usize; 4] {
    [d[1] * d[2] * d[3], d[2] * d[3], d[3], 1]
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Strided {
    n: u32,
    d: [u32; 3],
    s: [u32; 4],
}

/// `x` of shape `from` repeated along its axes of size 1 to `to` (same rank, up to 4).
pub fn broadcast(
    ctx: &GpuContext,
    from: &[usize],
    to: &[usize],
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    let (f, t) = (rank4("broadcast", from)?, rank4("broadcast", to)?);
    let n: usize = t.iter().product();
    need("broadcast", "x", &x, f.iter().product())?;
    need("broadcast", "y", &y, n)?;
    let st = strides(f);
    let u = |v: usize| dim_u32("broadcast", "size", v);
    let mut s = [0u32; 4];
    for a in 0..4 {
        s[a] = if f[a] == 1 { 0 } else { u(st[a])? };
    }
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "copy",
            entry: "broadcast",
            constants: vec![],
            params: Strided {
                n: u(n)?,
                d: [u(t[1])?, u(t[2])?, u(t[3])?],
                s,
            },
            bindings: vec![Binding::Read(x), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}

/// `x` of shape `from` (rank up to 4) with its axes reordered into `y`: output axis `a` is
/// input axis `perm[a]`. The same strided gather as [`broadcast`], with the source's strides
/// taken in the new order.
pub fn permute(
    ctx: &GpuContext,
    from: &[usize],
    perm: &[usize],
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    let f = rank4("permute", from)?;
    let mut seen = [false; 4];
    if perm.len() != from.len()
        || !perm
            .iter()
            .all(|&p| p < from.len() && !std::mem::replace(&mut seen[p], true))
    {
        return Err(crate::error::Error::invalid(
            "permute",
            format!("{perm:?} is not an order of the axes of {from:?}"),
        ));
    }
    let n: usize = f.iter().product();
    need("permute", "x", &x, n)?;
    need("permute", "y", &y, n)?;
    let st = strides(f);
    let u = |v: usize| dim_u32("permute", "size", v);
    let (mut t, mut s) = ([1usize; 4], [0u32; 4]);
    for (a, &p) in perm.iter().enumerate() {
        t[a] = f[p];
        s[a] = u(st[p])?;
    }
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "copy",
            entry: "broadcast",
            constants: vec![],
            params: Strided {
                n: u(n)?,
                d: [u(t[1])?, u(t[2])?, u(t[3])?],
                s,
            },
            bindings: vec![Binding::Read(x), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Reduce {
    n: u32,
    o: [u32; 3],
    t: [u32; 4],
    r: [u32; 4],
    count: u32,
    _pad: [u32; 3],
}

/// `x` of shape `from` summed over the axes where `to` (same rank, up to 4) has size 1.
pub fn sum_to(
    ctx: &GpuContext,
    from: &[usize],
    to: &[usize],
    x: View<'_>,
    y: View<'_>,
) -> Result<Launch> {
    let (f, o) = (rank4("sum_to", from)?, rank4("sum_to", to)?);
    let n: usize = o.iter().product();
    need("sum_to", "x", &x, f.iter().product())?;
    need("sum_to", "y", &y, n)?;
    let u = |v: usize| dim_u32("sum_to", "size", v);
    let st = strides(f);
    let mut r = [1u32; 4];
    let mut count = 1;
    for a in 0..4 {
        if o[a] == 1 && f[a] != 1 {
            r[a] = u(f[a])?;
            count *= f[a];
        }
    }
    check_loops("sum_to", "summing a broadcast's gradient", count)?;
    Launch::new(
        ctx,
        LaunchDesc {
            shader: "copy",
            entry: "sum_to",
            constants: vec![],
            params: Reduce {
                n: u(n)?,
                o: [u(o[1])?, u(o[2])?, u(o[3])?],
                t: [u(st[0])?, u(st[1])?, u(st[2])?, u(st[3])?],
                r,
                count: u(count)?,
                _pad: [0; 3],
            },
            bindings: vec![Binding::Read(x), Binding::ReadWrite(y)],
            workgroups: groups(n, 256)?,
        },
    )
}
