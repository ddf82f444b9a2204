//! The CPU-adapter texture policy: on the texture path every GEMM operand is packed into an
//! `rgba32float` texture once per step and shared by every GEMM that reads it; inputs are
//! written by the host straight into their texture and weights whose rows are whole 256-byte
//! lines are copied into theirs, so neither needs a pack launch; a GEMM runs transposed when
//! that needs fewer packs (ARCHITECTURE.md, decision 6).

use super::{Loc, Views};
use crate::error::Result;
use crate::gpu::kernels::{self, GemmOperand, GemmPath, GemmSpec};
use crate::gpu::{Kernel, Launch, View};

/// The packed operands of a plan.
#[derive(Default)]
pub(crate) struct Prepacked {
    /// Inputs the host writes into a texture too: (input index, columns, texture).
    pub inputs: Vec<(usize, usize, wgpu::Texture)>,
    /// Parameters copied from the arena into a texture before each pass: (arena offset, rows,
    /// columns, texture).
    pub params: Vec<(usize, usize, usize, wgpu::Texture)>,
    /// Every GEMM operand's packed texture, shared by the GEMMs that read it: (node,
    /// transposed, columns, texture). Those not prepacked above are filled by a pack launch
    /// before their first reader, each step.
    pub packed: Vec<(usize, bool, usize, wgpu::Texture)>,
}

impl Prepacked {
    /// The texture holding op(node) (transposed or not) with `cols` columns, if packed.
    pub fn packed(&self, node: usize, trans: bool, cols: usize) -> Option<&wgpu::Texture> {
        self.packed
            .iter()
            .find(|t| (t.0, t.1, t.2) == (node, trans, cols))
            .map(|t| &t.3)
    }

    /// op(node) of `rows` x `cols` as a packed texture, with the launch that fills it when
    /// this is its first reader. Rows are padded to a multiple of 4 (zeros) so the texture
    /// serves as op(A) and as op(B). None where it would need bands (taller than a texture).
    fn operand(
        &mut self,
        v: &Views<'_>,
        node: usize,
        trans: bool,
        rows: usize,
        cols: usize,
    ) -> Result<Option<(wgpu::Texture, Option<Launch>)>> {
        let max = v.ctx.limits().max_texture_dimension_2d as usize;
        let height = 4 * rows.div_ceil(4);
        if height > max || cols.div_ceil(4) > max {
            return Ok(None);
        }
        if let Some(t) = self.packed(node, trans, cols) {
            return Ok(Some((t.clone(), None)));
        }
        let host_input = match v.locs[node] {
            // Written by the host straight into the texture.
            Some(Loc::Input(k)) if !trans && cols.is_multiple_of(4) => Some(k),
            // Copied from the arena before each pass: rows must be whole 256-byte lines.
            Some(Loc::Param(_)) if !trans && cols.is_multiple_of(64) => None,
            _ => {
                let (t, pack) = kernels::pack(
                    v.ctx,
                    "packed operand",
                    v.view(node)?,
                    rows,
                    cols,
                    trans,
                    height,
                    height,
                )?;
                self.packed.push((node, trans, cols, t.clone()));
                return Ok(Some((t, Some(pack))));
            }
        };
        let t = kernels::packed_texture(v.ctx, "packed operand", height, cols, height)?;
        self.packed.push((node, trans, cols, t.clone()));
        match (host_input, v.locs[node]) {
            (Some(k), _) => self.inputs.push((k, cols, t.clone())),
            (None, Some(Loc::Param(off))) => self.params.push((off, rows, cols, t.clone())),
            _ => unreachable!("only inputs and parameters are prepacked"),
        }
        Ok(Some((t, None)))
    }

    /// Whether op(node) needs a pack launch before a GEMM can read it.
    fn needs_pack(&self, v: &Views<'_>, node: usize, trans: bool, cols: usize) -> bool {
        let cached = self.packed(node, trans, cols).is_some();
        let prepackable = match v.locs[node] {
            Some(Loc::Input(_)) => !trans && cols.is_multiple_of(4),
            Some(Loc::Param(_)) => !trans && cols.is_multiple_of(64),
            _ => false,
        };
        !(cached || prepackable)
    }

    /// A GEMM C = op(A) op(B) from nodes `a` and `b` into `c`. On the texture path each
    /// operand is packed once per step and shared by every GEMM that reads it. With an
    /// elementwise epilogue it may run as C^T = op(B)^T op(A)^T stored transposed, when that
    /// needs fewer packs (a weight gradient reads the forward pass's packed activation; an
    /// input gradient reads the weight's texture).
    ///
    /// With `pack_out` (C's node, read next by a GEMM), C is also written packed as that
    /// GEMM's operand by this one, where it can, and no pack launch reads it back.
    pub fn gemm(
        &mut self,
        v: &Views<'_>,
        spec: &GemmSpec,
        (a, b): (usize, usize),
        bias: Option<View<'_>>,
        c: View<'_>,
        pack_out: Option<usize>,
    ) -> Result<Kernel> {
        let ctx = v.ctx;
        let (va, vb) = (v.view(a)?, v.view(b)?);
        if kernels::gemm_path(ctx, spec) != GemmPath::Texture {
            return kernels::gemm(ctx, spec, va, vb, bias, c);
        }
        let max = ctx.limits().max_texture_dimension_2d as usize;
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let direct_packs = usize::from(self.needs_pack(v, a, spec.trans_a, k))
            + usize::from(self.needs_pack(v, b, spec.trans_b, n));
        let swapped = GemmSpec {
            m: n,
            n: m,
            trans_a: !spec.trans_b,
            trans_b: !spec.trans_a,
            trans_c: true,
            ..*spec
        };
        let swap = spec.epilogue.elementwise()
            && !spec.trans_c
            && kernels::gemm_path(ctx, &swapped) == GemmPath::Texture
            && usize::from(self.needs_pack(v, b, !spec.trans_b, k))
                + usize::from(self.needs_pack(v, a, !spec.trans_a, m))
                < direct_packs;
        // The multiply's spec, its operands as (node, transposed, rows, columns), and their
        // arena views (read directly if an operand cannot be packed without bands).
        let (spec, (na, ta, ra, ca), (nb, tb, rb, cb), (vfa, vfb)) = if swap {
            (
                &swapped,
                (b, !spec.trans_b, n, k),
                (a, !spec.trans_a, k, m),
                (vb, va),
            )
        } else {
            (
                spec,
                (a, spec.trans_a, m, k),
                (b, spec.trans_b, k, n),
                (va, vb),
            )
        };
        let mut launches = Vec::new();
        let mut resolve = |o: Option<(wgpu::Texture, Option<Launch>)>| {
            o.map(|(t, pack)| {
                launches.extend(pack);
                t
            })
        };
        let first = resolve(self.operand(v, na, ta, ra, ca)?);
        let second = resolve(self.operand(v, nb, tb, rb, cb)?);
        let op_a = match &first {
            Some(t) => GemmOperand::Packed(t, 4 * ra.div_ceil(4)),
            None => GemmOperand::Buffer(vfa),
        };
        let op_b = match &second {
            Some(t) => GemmOperand::Packed(t, 0),
            None => GemmOperand::Buffer(vfb),
        };
        let bias = bias.unwrap_or(va);
        let height = 4 * m.div_ceil(4);
        let out = match pack_out {
            Some(node)
                if !swap
                    && kernels::gemm_tex4_fits(spec, c.len, bias.len)
                    && height <= max
                    && n / 4 <= max
                    && self.packed(node, false, n).is_none() =>
            {
                let t = kernels::packed_texture(ctx, "packed operand", height, n, height)?;
                self.packed.push((node, false, n, t.clone()));
                Some(t)
            }
            _ => None,
        };
        let multiply = kernels::gemm_operands_out(ctx, spec, op_a, op_b, bias, c, out.as_ref())?;
        Ok(if launches.is_empty() {
            multiply
        } else {
            Kernel::sequence(
                vec![Kernel::new(launches, vec![], vec![]), multiply],
                vec![],
            )
        })
    }
}
