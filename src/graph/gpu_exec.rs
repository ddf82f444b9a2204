//! The GPU executor: a graph compiled per batch size into prebuilt launches over resident
//! buffers. Parameters, their gradients and the optimizer's moments live in flat arenas (one
//! optimizer dispatch over everything); activations live in buffers reused by liveness. A
//! training step writes the batch, encodes the prebuilt launches and submits once.

use std::collections::HashMap;

use super::{Gradients, Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, AdamParams, ConvGeom, GemmSpec};
use crate::gpu::{encode_kernel_iter, GpuBuffer, GpuContext, Kernel, Launch, Ledger, View};
use crate::ops::{Activation, Epilogue, MetricKind, MetricTotals, Metrics, Window, METRIC_WORDS};
use crate::optim::Optimizer;

/// Arena slots start on 256-byte boundaries (every adapter's storage-offset alignment).
const ALIGN: usize = 64;

/// Batch data for one input node.
#[derive(Debug, Clone, Copy)]
pub enum Feed<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
}

/// Bytes the executor holds on the GPU, by purpose. [`MemoryReport::total`] is every byte
/// it allocated (as counted by [`crate::gpu::Counters::bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReport {
    pub parameters: u64,
    /// The gradient arena.
    pub gradients: u64,
    /// The optimizer's per-parameter slots ([`Optimizer::state_slots`]): 0 for plain SGD.
    pub optimizer_state: u64,
    /// Batch inputs and labels, over every compiled plan.
    pub inputs: u64,
    /// Activation and gradient buffers after liveness reuse, over every compiled plan.
    pub activations: u64,
    /// Kernel scratch: packed operand textures, row-loss and im2col buffers, launch parameter
    /// blocks, the metrics and dropout state, over every compiled plan.
    pub scratch: u64,
    /// What the activations would take without reuse (one buffer per node).
    pub activations_without_reuse: u64,
}

impl MemoryReport {
    /// Every byte the executor holds.
    pub fn total(&self) -> u64 {
        self.parameters
            + self.gradients
            + self.optimizer_state
            + self.inputs
            + self.activations
            + self.scratch
    }
}

/// How accuracy is counted for a loss node (see [`MetricKind::for_loss`]).
pub fn metric_kind(loss: &Op, outputs_per_sample: usize) -> MetricKind {
    let pointwise = match loss {
        Op::Loss(kind) => Some(*kind),
        _ => None,
    };
    MetricKind::for_loss(pointwise, outputs_per_sample)
}

/// Where a node's value lives in a plan.
#[derive(Debug, Clone, Copy)]
enum Loc {
    Input(usize),
    Param(usize),
    Grad(usize),
    Slot(usize),
}

struct Arenas {
    params: GpuBuffer,
    grads: GpuBuffer,
    /// One arena per slot the optimizer declares ([`Optimizer::state_slots`]).
    state: Vec<GpuBuffer>,
    /// Element offset of each parameter in the arenas.
    offsets: HashMap<NodeId, usize>,
    /// The metric totals, [`METRIC_WORDS`] u32 words.
    metrics: GpuBuffer,
    /// The step and training flag dropout launches read.
    dropout_state: GpuBuffer,
}

/// One batch size's launches and buffers.
/// GEMM operands that skip their pack kernel on the texture path: an input that a
/// non-transposed op(A) reads is also written by the host straight into its packed texture
/// (`queue.write_texture`), and a parameter that a non-transposed op(B) reads, whose rows
/// are whole 256-byte lines, is copied from the arena into its texture before each pass.
#[derive(Default)]
struct Prepacked {
    /// (input index, columns, texture)
    inputs: Vec<(usize, usize, wgpu::Texture)>,
    /// (arena offset, rows, columns, texture)
    params: Vec<(usize, usize, usize, wgpu::Texture)>,
    /// Every GEMM operand's packed texture, shared by the GEMMs that read it: (node,
    /// transposed, columns, texture). Those not prepacked above are filled by a pack launch
    /// before their first reader, each step.
    packed: Vec<(usize, bool, usize, wgpu::Texture)>,
}

impl Prepacked {
    /// The texture holding op(node) (transposed or not) with `cols` columns, if packed.
    fn packed(&self, node: usize, trans: bool, cols: usize) -> Option<&wgpu::Texture> {
        self.packed
            .iter()
            .find(|t| (t.0, t.1, t.2) == (node, trans, cols))
            .map(|t| &t.3)
    }
}

struct GpuPlan {
    kernels: Vec<Kernel>,
    prepacked: Prepacked,
    /// Kernels [0, forward) compute the forward pass and the metrics.
    forward: usize,
    locs: Vec<Option<Loc>>,
    lens: Vec<usize>,
    inputs: Vec<GpuBuffer>,
    slots: Vec<GpuBuffer>,
    scratch: Vec<GpuBuffer>,
    /// Bytes activations would take with one buffer per node.
    without_reuse: u64,
}

/// A graph with a loss, differentiated, running on the GPU with an in-shader optimizer.
pub struct GpuExecutor {
    graph: Graph,
    loss: NodeId,
    grads: Gradients,
    arenas: Arenas,
    optimizer: Optimizer,
    optimizer_kernel: Kernel,
    /// Global-norm gradient clipping (squared norm, then scale), before the optimizer.
    clip: Option<(f32, Kernel)>,
    /// Whether steps must write the dropout state.
    has_dropout: bool,
    arena_len: usize,
    step: u64,
    plans: HashMap<usize, GpuPlan>,
    last_host: std::time::Duration,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl GpuExecutor {
    /// Differentiates `graph` from `loss`, initializes the parameters from `seed` (the same
    /// values [`super::CpuRun::new`] draws) and prepares `optimizer`.
    pub fn new(
        ctx: &GpuContext,
        mut graph: Graph,
        loss: NodeId,
        optimizer: Optimizer,
        seed: u64,
    ) -> Result<Self> {
        optimizer.validate()?;
        let grads = graph.backward(loss)?;
        let mut offsets = HashMap::new();
        let mut arena_len = 0;
        let mut init = Vec::new();
        for (i, p) in graph.params().into_iter().enumerate() {
            let node = graph.node(p);
            let Op::Param(kind) = &node.op else {
                unreachable!("params() returns params")
            };
            let shape: Vec<usize> = node.shape.iter().map(|d| d.resolve(0)).collect();
            offsets.insert(p, arena_len);
            let values = kind.values(&shape, seed.wrapping_add(i as u64));
            init.resize(arena_len, 0.0);
            init.extend_from_slice(&values);
            arena_len = (arena_len + values.len()).next_multiple_of(ALIGN);
        }
        init.resize(arena_len.max(1), 0.0);
        let arena_len = arena_len.max(1);
        let has_dropout = graph
            .nodes()
            .iter()
            .any(|n| matches!(n.op, Op::Dropout { .. }));
        let arenas = Arenas {
            params: GpuBuffer::from_slice(ctx, "parameters", &init)?,
            grads: GpuBuffer::zeros(ctx, "gradients", arena_len)?,
            state: optimizer
                .state_slots()
                .iter()
                .map(|slot| GpuBuffer::zeros(ctx, &format!("optimizer {slot}"), arena_len))
                .collect::<Result<_>>()?,
            offsets,
            metrics: GpuBuffer::zeros(ctx, "metrics", METRIC_WORDS)?,
            dropout_state: GpuBuffer::zeros(ctx, "dropout state", 4)?,
        };
        let optimizer_kernel = optimizer_kernel(ctx, &optimizer, &arenas, arena_len, 1)?;
        Ok(GpuExecutor {
            graph,
            loss,
            grads,
            arenas,
            optimizer,
            optimizer_kernel,
            clip: None,
            has_dropout,
            arena_len,
            step: 0,
            plans: HashMap::new(),
            last_host: std::time::Duration::ZERO,
        })
    }

    /// Host time of the last step: writing the batch and encoding the prebuilt launches,
    /// excluding `queue.submit` (which on lavapipe runs the work synchronously) and the GPU.
    pub fn last_step_host_time(&self) -> std::time::Duration {
        self.last_host
    }

    /// The differentiated graph (forward nodes, then gradient nodes).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The gradient node of each parameter.
    pub fn gradients(&self) -> &Gradients {
        &self.grads
    }

    /// What the executor holds on the GPU, counted from the resources it owns.
    pub fn memory(&self) -> MemoryReport {
        let a = &self.arenas;
        let bytes = |bufs: &[GpuBuffer]| bufs.iter().map(GpuBuffer::bytes).sum::<u64>();
        let mut scratch = Ledger::default();
        scratch.bytes += a.metrics.bytes() + a.dropout_state.bytes();
        self.optimizer_kernel.count(&mut scratch);
        if let Some((_, clip)) = &self.clip {
            clip.count(&mut scratch);
        }
        let mut report = MemoryReport {
            parameters: a.params.bytes(),
            gradients: a.grads.bytes(),
            optimizer_state: bytes(&a.state),
            ..Default::default()
        };
        for plan in self.plans.values() {
            report.inputs += bytes(&plan.inputs);
            report.activations += bytes(&plan.slots);
            report.activations_without_reuse += plan.without_reuse;
            scratch.bytes += bytes(&plan.scratch);
            for k in &plan.kernels {
                k.count(&mut scratch);
            }
            let pre = &plan.prepacked;
            let textures = pre.inputs.iter().map(|t| &t.2);
            let textures = textures.chain(pre.params.iter().map(|t| &t.3));
            for t in textures.chain(pre.packed.iter().map(|t| &t.3)) {
                scratch.texture(t);
            }
        }
        report.scratch = scratch.bytes;
        report
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Changes the learning rate for the next steps; nothing is rebuilt.
    pub fn set_lr(&mut self, ctx: &GpuContext, lr: f32) -> Result<()> {
        let optimizer = self.optimizer.with_lr(lr);
        optimizer.validate()?;
        self.optimizer = optimizer;
        self.write_optimizer_params(ctx, self.step.max(1))
    }

    /// Clips the gradients of every step to a global L2 norm of at most `max_norm`
    /// (`None`: no clipping), as TensorFlow's `clip_by_global_norm` does.
    pub fn set_clip_global_norm(&mut self, ctx: &GpuContext, max_norm: Option<f32>) -> Result<()> {
        if self.clip.as_ref().map(|c| c.0) == max_norm {
            return Ok(());
        }
        self.clip = match max_norm {
            None => None,
            Some(clip) => {
                let sumsq = GpuBuffer::zeros(ctx, "squared gradient norm", 1)?;
                let n = self.arena_len;
                let launches = vec![
                    kernels::sum_squares(ctx, n, self.arenas.grads.full(), sumsq.full())?,
                    kernels::clip_by_global_norm(
                        ctx,
                        n,
                        clip,
                        sumsq.full(),
                        self.arenas.grads.full(),
                    )?,
                ];
                Some((clip, Kernel::new(launches, vec![sumsq], vec![])))
            }
        };
        Ok(())
    }

    fn write_optimizer_params(&self, ctx: &GpuContext, t: u64) -> Result<()> {
        match &self.optimizer {
            Optimizer::Sgd(c) => {
                let p = kernels::SgdParams::new(c, self.arena_len)?;
                self.optimizer_kernel.set_params(ctx, 0, &p);
            }
            Optimizer::Adam(c) => {
                let p = AdamParams::new(c, self.arena_len, t)?;
                self.optimizer_kernel.set_params(ctx, 0, &p);
            }
        }
        Ok(())
    }

    /// Compiles the plan for `batch` now (otherwise the first step of that size does).
    pub fn prepare(&mut self, ctx: &GpuContext, batch: usize) -> Result<()> {
        if !self.plans.contains_key(&batch) {
            let plan = build_plan(
                ctx,
                &self.graph,
                self.loss,
                &self.grads,
                &self.arenas,
                batch,
            )?;
            self.plans.insert(batch, plan);
        }
        Ok(())
    }

    fn write_feeds(
        &mut self,
        ctx: &GpuContext,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
    ) -> Result<()> {
        self.prepare(ctx, batch)?;
        let plan = &self.plans[&batch];
        for &(id, feed) in feeds {
            let i = self.graph.index(id);
            let Some(Some(Loc::Input(k))) = plan.locs.get(i).filter(|_| self.graph.contains(id))
            else {
                return Err(Error::invalid(
                    "step",
                    format!("node #{i} is not an input of this graph"),
                ));
            };
            let (len, name) = (plan.lens[i], &self.graph.node(id).name);
            let got = match (feed, &self.graph.node(id).op) {
                (Feed::F32(d), Op::Input) => d.len(),
                (Feed::U32(d), Op::Labels) => d.len(),
                _ => {
                    return Err(Error::invalid(
                        "step",
                        format!(
                            "input `{name}` got the wrong element type (f32 features, u32 labels)"
                        ),
                    ))
                }
            };
            if got != len {
                return Err(Error::shape(
                    "step",
                    format!("input `{name}` needs {len} values at batch {batch}, got {got}"),
                ));
            }
            match feed {
                Feed::F32(d) => {
                    plan.inputs[*k].write(ctx, 0, d)?;
                    for (_, cols, texture) in plan.prepacked.inputs.iter().filter(|t| t.0 == *k) {
                        ctx.queue.write_texture(
                            texture.as_image_copy(),
                            bytemuck::cast_slice(d),
                            wgpu::TexelCopyBufferLayout {
                                offset: 0,
                                bytes_per_row: Some((cols * 4) as u32),
                                rows_per_image: None,
                            },
                            wgpu::Extent3d {
                                width: (cols / 4) as u32,
                                height: (d.len() / cols) as u32,
                                depth_or_array_layers: 1,
                            },
                        );
                    }
                }
                Feed::U32(d) => plan.inputs[*k].write(ctx, 0, d)?,
            }
        }
        Ok(())
    }

    /// One training step on a batch: forward, backward, optimizer and metrics, one submission.
    pub fn step(
        &mut self,
        ctx: &GpuContext,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
    ) -> Result<()> {
        self.prepare(ctx, batch)?;
        let start = std::time::Instant::now();
        self.write_feeds(ctx, batch, feeds)?;
        self.step += 1;
        if self.has_dropout {
            let state = kernels::DropoutState::new(self.step, true);
            self.arenas
                .dropout_state
                .write::<u32>(ctx, 0, bytemuck::cast_slice(&[state]))?;
        }
        if matches!(self.optimizer, Optimizer::Adam(_)) {
            self.write_optimizer_params(ctx, self.step)?;
        }
        let plan = &self.plans[&batch];
        let clip = self.clip.as_ref().map(|c| &c.1);
        let kernels = plan
            .kernels
            .iter()
            .chain(clip)
            .chain([&self.optimizer_kernel]);
        let copies = (&self.arenas.params, &plan.prepacked);
        self.last_host = submit(ctx, "training step", start, copies, kernels)?;
        Ok(())
    }

    /// Where a training step's time goes, for `batch` (which must have been prepared or run):
    /// the step's launches are submitted one at a time, in order, `reps` times, and each
    /// row is (label, grid, median seconds). The first rows are an empty submission (the
    /// baseline each row includes) and the copies of weights into their textures that
    /// precede each pass. Running in order keeps each launch's caches as a real step leaves
    /// them. The step's effect on the parameters is repeated too, so profile a copy of a
    /// model, not one being trained.
    pub fn profile(
        &mut self,
        ctx: &GpuContext,
        batch: usize,
        reps: usize,
    ) -> Result<Vec<(String, [u32; 3], f64)>> {
        self.prepare(ctx, batch)?;
        let plan = &self.plans[&batch];
        let clip = self.clip.as_ref().map(|c| &c.1);
        let launches: Vec<&crate::gpu::Launch> = plan
            .kernels
            .iter()
            .chain(clip)
            .chain([&self.optimizer_kernel])
            .flat_map(|k| k.launches())
            .collect();
        let timed = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
            let start = std::time::Instant::now();
            f()?;
            ctx.synchronize()?;
            Ok(start.elapsed().as_secs_f64())
        };
        let mut times = vec![Vec::with_capacity(reps.max(1)); launches.len() + 2];
        for _ in 0..reps.max(1) {
            times[0].push(timed(&|| crate::gpu::run(ctx, &[]))?);
            times[1].push(timed(&|| {
                let copies = (&self.arenas.params, &plan.prepacked);
                submit(
                    ctx,
                    "profile",
                    std::time::Instant::now(),
                    copies,
                    [].into_iter(),
                )
                .map(|_| ())
            })?);
            for (k, l) in launches.iter().enumerate() {
                times[k + 2].push(timed(&|| crate::gpu::run(ctx, &[l]))?);
            }
        }
        let labels = [
            ("(empty submission)".to_string(), [0, 0, 0]),
            ("(weights into textures)".to_string(), [0, 0, 0]),
        ]
        .into_iter()
        .chain(launches.iter().map(|l| (l.label().to_string(), l.grid())));
        Ok(labels
            .zip(times)
            .map(|((label, grid), mut t)| {
                t.sort_by(f64::total_cmp);
                (label, grid, t[t.len() / 2])
            })
            .collect())
    }

    /// Forward pass and metrics only (evaluation), one submission.
    pub fn evaluate_batch(
        &mut self,
        ctx: &GpuContext,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
    ) -> Result<()> {
        let start = std::time::Instant::now();
        self.write_feeds(ctx, batch, feeds)?;
        if self.has_dropout {
            let state = kernels::DropoutState::new(self.step, false);
            self.arenas
                .dropout_state
                .write::<u32>(ctx, 0, bytemuck::cast_slice(&[state]))?;
        }
        let plan = &self.plans[&batch];
        submit(
            ctx,
            "evaluation step",
            start,
            (&self.arenas.params, &plan.prepacked),
            plan.kernels[..plan.forward].iter(),
        )?;
        Ok(())
    }

    /// Reads the metrics accumulated since the last reset (blocks until the GPU is done).
    pub fn metrics(&self, ctx: &GpuContext) -> Result<Metrics> {
        let words: [u32; METRIC_WORDS] = self.arenas.metrics.read::<u32>(ctx)?[..]
            .try_into()
            .expect("the metrics buffer holds METRIC_WORDS words");
        Ok(MetricTotals::from_words(&words).metrics())
    }

    /// Zeroes the accumulated metrics.
    pub fn reset_metrics(&self, ctx: &GpuContext) -> Result<()> {
        self.arenas.metrics.write(ctx, 0, &[0u32; METRIC_WORDS])
    }

    fn param_range(&self, p: NodeId) -> Result<(usize, usize)> {
        let off = *self.arenas.offsets.get(&p).ok_or_else(|| {
            Error::invalid(
                "executor",
                format!("node #{} is not a parameter", self.graph.index(p)),
            )
        })?;
        let len = numel(&self.graph.concrete_shapes(1)[self.graph.index(p)]);
        Ok((off, len))
    }

    /// A parameter's current values.
    pub fn read_param(&self, ctx: &GpuContext, p: NodeId) -> Result<Vec<f32>> {
        let (off, len) = self.param_range(p)?;
        self.arenas.params.view(off, len)?.read(ctx)
    }

    /// A parameter's gradient from the last step.
    pub fn read_grad(&self, ctx: &GpuContext, p: NodeId) -> Result<Vec<f32>> {
        let (off, len) = self.param_range(p)?;
        self.arenas.grads.view(off, len)?.read(ctx)
    }

    /// A parameter's optimizer state: (first moment or SGD velocity, second moment), zeros
    /// for a slot the optimizer does not keep.
    pub fn read_state(&self, ctx: &GpuContext, p: NodeId) -> Result<(Vec<f32>, Vec<f32>)> {
        let (off, len) = self.param_range(p)?;
        let slot = |k: usize| match self.arenas.state.get(k) {
            Some(arena) => arena.view(off, len)?.read(ctx),
            None => Ok(vec![0.0; len]),
        };
        Ok((slot(0)?, slot(1)?))
    }

    /// Overwrites a parameter's optimizer state; values for a slot the optimizer does not
    /// keep must be zeros.
    pub fn write_state(&self, ctx: &GpuContext, p: NodeId, m: &[f32], v: &[f32]) -> Result<()> {
        let (off, len) = self.param_range(p)?;
        if m.len() != len || v.len() != len {
            return Err(Error::shape(
                "write_state",
                format!("{}/{} values for {len} parameters", m.len(), v.len()),
            ));
        }
        self.optimizer
            .check_unkept_state(&self.graph.node(p).name, [m, v])?;
        for (arena, values) in self.arenas.state.iter().zip([m, v]) {
            arena.write(ctx, off, values)?;
        }
        Ok(())
    }

    /// Sets the optimizer step count (when resuming); Adam's bias correction follows it.
    pub fn set_steps(&mut self, ctx: &GpuContext, steps: u64) -> Result<()> {
        self.step = steps;
        self.write_optimizer_params(ctx, steps.max(1))
    }

    /// Overwrites a parameter's values.
    pub fn write_param(&self, ctx: &GpuContext, p: NodeId, values: &[f32]) -> Result<()> {
        let (off, len) = self.param_range(p)?;
        if values.len() != len {
            return Err(Error::shape(
                "write_param",
                format!("{} values for {len} parameters", values.len()),
            ));
        }
        self.arenas.params.write(ctx, off, values)
    }

    /// The value of any node from the last step of a batch size (for tests and debugging).
    pub fn read_node(&self, ctx: &GpuContext, batch: usize, id: NodeId) -> Result<Vec<f32>> {
        let plan = self
            .plans
            .get(&batch)
            .ok_or_else(|| Error::invalid("read_node", format!("no plan for batch {batch}")))?;
        let i = self.graph.index(id);
        if !self.graph.contains(id) {
            return Err(Error::invalid(
                "read_node",
                format!("node #{i} is not in this graph"),
            ));
        }
        view_of(
            plan.locs[i],
            plan.lens[i],
            &self.arenas,
            &plan.inputs,
            &plan.slots,
        )?
        .read(ctx)
    }
}

/// Encodes `kernels` into one command buffer and submits it; returns the host time from
/// `start` up to the submission.
fn submit<'a>(
    ctx: &GpuContext,
    op: &str,
    start: std::time::Instant,
    (params, copies): (&GpuBuffer, &Prepacked),
    kernels: impl Iterator<Item = &'a Kernel>,
) -> Result<std::time::Duration> {
    ctx.scoped(op, || {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
        // Weights into their packed textures (rows are whole 256-byte lines, offsets aligned).
        for (offset, rows, cols, texture) in &copies.params {
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &params.buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: (*offset * 4) as u64,
                        bytes_per_row: Some((*cols * 4) as u32),
                        rows_per_image: None,
                    },
                },
                texture.as_image_copy(),
                wgpu::Extent3d {
                    width: (*cols / 4) as u32,
                    height: *rows as u32,
                    depth_or_array_layers: 1,
                },
            );
        }
        encode_kernel_iter(&mut encoder, kernels);
        let commands = encoder.finish();
        let host = start.elapsed();
        ctx.submit(commands);
        host
    })
}

fn optimizer_kernel(
    ctx: &GpuContext,
    opt: &Optimizer,
    a: &Arenas,
    n: usize,
    t: u64,
) -> Result<Kernel> {
    Ok(match (opt, a.state.as_slice()) {
        (Optimizer::Sgd(c), state) => {
            let velocity = state.first().map(GpuBuffer::full);
            kernels::sgd(ctx, c, n, a.params.full(), a.grads.full(), velocity)?
        }
        (Optimizer::Adam(c), [m, v]) => kernels::adam(
            ctx,
            c,
            t,
            n,
            a.params.full(),
            a.grads.full(),
            m.full(),
            v.full(),
        )?
        .into(),
        (Optimizer::Adam(_), _) => unreachable!("Adam declares two state slots"),
    })
}

fn view_of<'a>(
    loc: Option<Loc>,
    len: usize,
    a: &'a Arenas,
    inputs: &'a [GpuBuffer],
    slots: &'a [GpuBuffer],
) -> Result<View<'a>> {
    match loc {
        Some(Loc::Input(k)) => inputs[k].view(0, len),
        Some(Loc::Param(off)) => a.params.view(off, len),
        Some(Loc::Grad(off)) => a.grads.view(off, len),
        Some(Loc::Slot(s)) => slots[s].view(0, len),
        None => Err(Error::invalid(
            "executor",
            "a node without storage was read",
        )),
    }
}

/// The loss node that computes a gradient node's value in the same launch (fused losses).
fn fused_with(graph: &Graph, loss: NodeId, node: NodeId) -> bool {
    let (l, n) = (graph.node(loss), graph.node(node));
    l.inputs == n.inputs
        && matches!(
            (&l.op, &n.op),
            (Op::SoftmaxXent, Op::SoftmaxXentGrad) | (Op::Loss(_), Op::LossGrad(_))
        )
}

fn build_plan(
    ctx: &GpuContext,
    graph: &Graph,
    loss: NodeId,
    grads: &Gradients,
    arenas: &Arenas,
    batch: usize,
) -> Result<GpuPlan> {
    if batch == 0 {
        return Err(Error::invalid("plan", "batch size 0"));
    }
    let shapes = graph.concrete_shapes(batch);
    let n = graph.len();
    let nodes = graph.nodes();
    let lens: Vec<usize> = shapes.iter().map(|s| numel(s)).collect();
    // Parameter gradients computed straight into the gradient arena, where the node is a
    // fresh computation claimed by exactly one parameter; others are copied there at the end.
    let mut arena_grad: HashMap<usize, usize> = HashMap::new();
    let mut grad_copies: Vec<(usize, usize)> = Vec::new();
    for p in graph.params() {
        let Some(g) = grads.of(p) else { continue };
        let gi = graph.index(g);
        let off = arenas.offsets[&p];
        let fresh = !matches!(
            nodes[gi].op,
            Op::Reshape(_) | Op::Param(_) | Op::Input | Op::Labels
        );
        if fresh && !arena_grad.contains_key(&gi) {
            arena_grad.insert(gi, off);
        } else {
            grad_copies.push((gi, off));
        }
    }
    // Liveness: a value lives until its last reader; a reshape extends its source's life.
    let mut last_use: Vec<usize> = (0..n).collect();
    let loss_i = graph.index(loss);
    last_use[loss_i] = n;
    for &i in &nodes[loss_i].inputs {
        last_use[i.0] = n; // logits and labels are read by the metrics launch
    }
    for &(gi, _) in &grad_copies {
        last_use[gi] = n;
    }
    for i in (0..n).rev() {
        let end = if matches!(nodes[i].op, Op::Reshape(_)) {
            last_use[i].max(i)
        } else {
            i
        };
        for j in &nodes[i].inputs {
            last_use[j.0] = last_use[j.0].max(end);
        }
    }
    // Fusion: a matmul read only by a bias-add (itself read only by a ReLU) becomes one GEMM
    // with a bias (+ ReLU) epilogue writing the last node. No backward rule reads those
    // intermediate values (ReLU's gradient uses its output, matmul's its inputs).
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in nodes.iter().enumerate() {
        for j in &node.inputs {
            readers[j.0].push(i);
        }
    }
    // Values read after the last node (loss, logits, copied gradients) or living in the
    // gradient arena must keep their storage.
    let pinned: Vec<bool> = (0..n)
        .map(|i| last_use[i] == n || arena_grad.contains_key(&i))
        .collect();
    let mut skip = vec![false; n];
    let mut fused: Vec<Option<(usize, usize, Epilogue)>> = vec![None; n];
    for i in 0..n {
        if !matches!(nodes[i].op, Op::MatMul { .. }) || pinned[i] {
            continue;
        }
        let &[j] = readers[i].as_slice() else {
            continue;
        };
        if !matches!(nodes[j].op, Op::BiasAdd) || nodes[j].inputs[0].0 != i {
            continue;
        }
        let (mut target, mut epilogue) = (j, Epilogue::Bias);
        if let &[k] = readers[j].as_slice() {
            if nodes[k].op == Op::Activation(Activation::Relu) && !pinned[j] {
                (target, epilogue) = (k, Epilogue::BiasRelu);
                skip[j] = true;
            }
        }
        skip[i] = true;
        fused[target] = Some((i, nodes[j].inputs[1].0, epilogue));
        // The matmul's operands are now read where the fused node runs.
        for a in &nodes[i].inputs {
            last_use[a.0] = last_use[a.0].max(target);
        }
    }
    // Backward fusion: a matmul read only by a ReLU gradient (as its dy) becomes one GEMM
    // whose epilogue applies the gradient's mask, with the ReLU output in the bias slot.
    for g in 0..n {
        if nodes[g].op != Op::ActivationGrad(Activation::Relu) {
            continue;
        }
        let (y, dy) = (nodes[g].inputs[0].0, nodes[g].inputs[1].0);
        if !matches!(nodes[dy].op, Op::MatMul { .. })
            || pinned[dy]
            || skip[dy]
            || readers[dy].as_slice() != [g]
        {
            continue;
        }
        skip[dy] = true;
        fused[g] = Some((dy, y, Epilogue::ReluGrad));
        for a in &nodes[dy].inputs {
            last_use[a.0] = last_use[a.0].max(g);
        }
    }
    let mut locs: Vec<Option<Loc>> = vec![None; n];
    let mut inputs = Vec::new();
    let mut slots: Vec<GpuBuffer> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut owner: Vec<Option<usize>> = vec![None; n]; // slot owned by node
    let alloc = |len: usize, slots: &mut Vec<GpuBuffer>, free: &mut Vec<usize>| -> Result<usize> {
        // Smallest free slot that fits, else a new one.
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, &s)| slots[s].len() >= len)
            .min_by_key(|(_, &s)| slots[s].len())
            .map(|(k, _)| k);
        Ok(match best {
            Some(k) => free.swap_remove(k),
            None => {
                slots.push(GpuBuffer::zeros(
                    ctx,
                    &format!("activations {}", slots.len()),
                    len.max(1),
                )?);
                slots.len() - 1
            }
        })
    };
    for i in 0..n {
        if locs[i].is_some() || skip[i] {
            continue; // a fused loss gradient (placed with its loss), or folded into a GEMM
        }
        locs[i] = Some(match &nodes[i].op {
            Op::Input | Op::Labels => {
                inputs.push(GpuBuffer::zeros(ctx, &nodes[i].name, lens[i].max(1))?);
                Loc::Input(inputs.len() - 1)
            }
            Op::Param(_) => Loc::Param(arenas.offsets[&graph.id_at(i)]),
            Op::Reshape(_) => locs[nodes[i].inputs[0].0].expect("inputs come first"),
            _ => match arena_grad.get(&i) {
                Some(&off) => Loc::Grad(off),
                None => {
                    let s = alloc(lens[i], &mut slots, &mut free)?;
                    owner[i] = Some(s);
                    Loc::Slot(s)
                }
            },
        });
        if i == loss_i || matches!(nodes[i].op, Op::SoftmaxXent | Op::Loss(_)) {
            // The fused gradient is written by this node's launch: place it now.
            if let Some(g) = (i + 1..n).find(|&g| fused_with(graph, graph.id_at(i), graph.id_at(g)))
            {
                locs[g] = Some(match arena_grad.get(&g) {
                    Some(&off) => Loc::Grad(off),
                    None => {
                        let s = alloc(lens[g], &mut slots, &mut free)?;
                        owner[g] = Some(s);
                        Loc::Slot(s)
                    }
                });
            }
        }
        // Free the slots whose last reader was this node (after allocating its output).
        for j in 0..=i {
            if last_use[j] == i && j != i {
                if let Some(s) = owner[j].take() {
                    free.push(s);
                }
            }
        }
    }
    let mut prepacked = Prepacked::default();
    let max = ctx.limits().max_texture_dimension_2d as usize;
    // op(node) of `rows` x `cols` as a packed texture, with the launch that fills it when
    // this is its first reader. Rows are padded to a multiple of 4 (zeros) so the texture
    // serves as op(A) and as op(B). None where it would need bands (taller than a texture).
    let operand = |node: usize,
                   trans: bool,
                   rows: usize,
                   cols: usize,
                   pre: &mut Prepacked|
     -> Result<Option<(wgpu::Texture, Option<Launch>)>> {
        let height = 4 * rows.div_ceil(4);
        if height > max || cols.div_ceil(4) > max {
            return Ok(None);
        }
        if let Some(t) = pre.packed(node, trans, cols) {
            return Ok(Some((t.clone(), None)));
        }
        let prepacked = match locs[node] {
            // Written by the host straight into the texture.
            Some(Loc::Input(k)) if !trans && cols.is_multiple_of(4) => Some(k),
            // Copied from the arena before each pass: rows must be whole 256-byte lines.
            Some(Loc::Param(_)) if !trans && cols.is_multiple_of(64) => None,
            _ => {
                let view = view_of(locs[node], lens[node], arenas, &inputs, &slots)?;
                let (t, pack) = kernels::pack(
                    ctx,
                    "packed operand",
                    view,
                    rows,
                    cols,
                    trans,
                    height,
                    height,
                )?;
                pre.packed.push((node, trans, cols, t.clone()));
                return Ok(Some((t, Some(pack))));
            }
        };
        let t = kernels::packed_texture(ctx, "packed operand", height, cols, height)?;
        pre.packed.push((node, trans, cols, t.clone()));
        match (prepacked, locs[node]) {
            (Some(k), _) => pre.inputs.push((k, cols, t.clone())),
            (None, Some(Loc::Param(off))) => pre.params.push((off, rows, cols, t.clone())),
            _ => unreachable!("only inputs and parameters are prepacked"),
        }
        Ok(Some((t, None)))
    };
    // Whether op(node) needs a pack launch before a GEMM can read it.
    let needs_pack = |node: usize, trans: bool, cols: usize, pre: &Prepacked| {
        let cached = pre.packed(node, trans, cols).is_some();
        let prepackable = match locs[node] {
            Some(Loc::Input(_)) => !trans && cols.is_multiple_of(4),
            Some(Loc::Param(_)) => !trans && cols.is_multiple_of(64),
            _ => false,
        };
        !(cached || prepackable)
    };
    // A GEMM C = op(A) op(B) from nodes `a` and `b` into `c`, on the texture path with each
    // operand packed once per step and shared by every GEMM that reads it. With an
    // elementwise epilogue it may run as C^T = op(B)^T op(A)^T stored transposed, when that
    // needs fewer packs (a weight gradient reads the forward pass's packed activation; an
    // input gradient reads the weight's texture).
    //
    // With `pack_out` (C's node, read next by a GEMM), C is also written packed as that
    // GEMM's operand by this one, where it can, and no pack launch reads it back.
    let gemm = |spec: &GemmSpec,
                (a, b): (usize, usize),
                bias: Option<View<'_>>,
                c: View<'_>,
                pack_out: Option<usize>,
                pre: &mut Prepacked|
     -> Result<Kernel> {
        let (va, vb) = (
            view_of(locs[a], lens[a], arenas, &inputs, &slots)?,
            view_of(locs[b], lens[b], arenas, &inputs, &slots)?,
        );
        if kernels::gemm_path(ctx, spec) != kernels::GemmPath::Texture {
            return kernels::gemm(ctx, spec, va, vb, bias, c);
        }
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let direct_packs = usize::from(needs_pack(a, spec.trans_a, k, pre))
            + usize::from(needs_pack(b, spec.trans_b, n, pre));
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
            && kernels::gemm_path(ctx, &swapped) == kernels::GemmPath::Texture
            && usize::from(needs_pack(b, !spec.trans_b, k, pre))
                + usize::from(needs_pack(a, !spec.trans_a, m, pre))
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
        let first = resolve(operand(na, ta, ra, ca, pre)?);
        let second = resolve(operand(nb, tb, rb, cb, pre)?);
        let op_a = match &first {
            Some(t) => kernels::GemmOperand::Packed(t, 4 * ra.div_ceil(4)),
            None => kernels::GemmOperand::Buffer(vfa),
        };
        let op_b = match &second {
            Some(t) => kernels::GemmOperand::Packed(t, 0),
            None => kernels::GemmOperand::Buffer(vfb),
        };
        let bias = bias.unwrap_or(va);
        let height = 4 * m.div_ceil(4);
        let out = match pack_out {
            Some(node)
                if !swap
                    && kernels::gemm_tex4_fits(spec, c.len, bias.len)
                    && height <= max
                    && n / 4 <= max
                    && pre.packed(node, false, n).is_none() =>
            {
                let t = kernels::packed_texture(ctx, "packed operand", height, n, height)?;
                pre.packed.push((node, false, n, t.clone()));
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
    };
    // Launches, in node order.
    let mut kernels = Vec::new();
    let mut scratch = Vec::new();
    let mut forward = 0;
    let v = |i: usize| view_of(locs[i], lens[i], arenas, &inputs, &slots);
    for i in 0..n {
        let node = &nodes[i];
        let inp = |k: usize| node.inputs[k].0;
        let s = &shapes[i];
        if skip[i] {
            continue;
        }
        if let Some((mm, bias, epilogue)) = fused[i] {
            let (a, b) = (nodes[mm].inputs[0].0, nodes[mm].inputs[1].0);
            let Op::MatMul { trans_a, trans_b } = nodes[mm].op else {
                unreachable!("fusion starts at a matmul")
            };
            let k = if trans_a { shapes[a][0] } else { shapes[a][1] };
            let spec = GemmSpec::new(s[0], s[1], k)
                .trans_a(trans_a)
                .trans_b(trans_b)
                .epilogue(epilogue);
            // A layer's output that a GEMM reads next leaves this one packed.
            let gemm_reads = readers[i]
                .iter()
                .any(|&j| matches!(nodes[j].op, Op::MatMul { .. }));
            kernels.push(gemm(
                &spec,
                (a, b),
                Some(v(bias)?),
                v(i)?,
                gemm_reads.then_some(i),
                &mut prepacked,
            )?);
            continue;
        }
        // (n, c, h, w) of input `k` and the geometry of a window over it.
        let geom = |k: usize, out: Option<usize>, win: Window| {
            let s = &shapes[inp(k)];
            ConvGeom {
                n: s[0],
                c: s[1],
                h: s[2],
                w: s[3],
                out: out.unwrap_or(s[1]),
                win,
            }
        };
        let kernel: Option<Kernel> = match &node.op {
            Op::Input | Op::Labels | Op::Param(_) | Op::Reshape(_) => None,
            Op::Conv2d(win) => {
                let g = geom(0, Some(shapes[i][1]), *win);
                Some(kernels::conv2d(
                    ctx,
                    &g,
                    v(inp(0))?,
                    v(inp(1))?,
                    v(inp(2))?,
                    v(i)?,
                )?)
            }
            Op::Conv2dGradInput { win, .. } => {
                // Geometry of the forward convolution: its input is this node's output.
                let o = &shapes[i];
                let g = ConvGeom {
                    n: o[0],
                    c: o[1],
                    h: o[2],
                    w: o[3],
                    out: shapes[inp(0)][1],
                    win: *win,
                };
                Some(kernels::conv2d_grad_input(
                    ctx,
                    &g,
                    v(inp(0))?,
                    v(inp(1))?,
                    v(i)?,
                )?)
            }
            Op::Conv2dGradWeight(win) => {
                let g = geom(0, Some(shapes[inp(1)][1]), *win);
                Some(kernels::conv2d_grad_weight(
                    ctx,
                    &g,
                    v(inp(0))?,
                    v(inp(1))?,
                    v(i)?,
                )?)
            }
            Op::ChannelSum => {
                let d = &shapes[inp(0)];
                let positions = d[2] * d[3];
                Some(kernels::channel_sum(
                    ctx,
                    d[0],
                    d[1],
                    positions,
                    v(inp(0))?,
                    v(i)?,
                )?)
            }
            Op::MaxPool2d(win) | Op::AvgPool2d(win) => {
                let max = matches!(node.op, Op::MaxPool2d(_));
                let g = geom(0, None, *win);
                Some(kernels::pool(ctx, &g, max, v(inp(0))?, v(i)?)?.into())
            }
            Op::MaxPool2dGrad(win) => {
                let g = geom(0, None, *win);
                Some(kernels::pool_grad(ctx, &g, true, v(inp(0))?, v(inp(1))?, v(i)?)?.into())
            }
            Op::AvgPool2dGrad { win, .. } => {
                let o = &shapes[i];
                let g = ConvGeom {
                    n: o[0],
                    c: o[1],
                    h: o[2],
                    w: o[3],
                    out: o[1],
                    win: *win,
                };
                let dy = v(inp(0))?;
                Some(kernels::pool_grad(ctx, &g, false, dy, dy, v(i)?)?.into())
            }
            Op::MatMul { trans_a, trans_b } => {
                let a = &shapes[inp(0)];
                let k = if *trans_a { a[0] } else { a[1] };
                let spec = GemmSpec::new(s[0], s[1], k)
                    .trans_a(*trans_a)
                    .trans_b(*trans_b);
                Some(gemm(
                    &spec,
                    (inp(0), inp(1)),
                    None,
                    v(i)?,
                    None,
                    &mut prepacked,
                )?)
            }
            Op::BiasAdd => {
                Some(kernels::bias_add_out(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into())
            }
            Op::Activation(a) => {
                Some(kernels::activation_forward(ctx, *a, lens[i], v(inp(0))?, v(i)?)?.into())
            }
            Op::ActivationGrad(a) => Some(
                kernels::activation_backward(ctx, *a, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?
                    .into(),
            ),
            Op::Dropout { rate, seed } => Some(
                kernels::dropout(
                    ctx,
                    lens[i],
                    *rate,
                    *seed,
                    arenas.dropout_state.full(),
                    v(inp(0))?,
                    v(i)?,
                )?
                .into(),
            ),
            Op::Softmax => {
                Some(kernels::softmax_forward(ctx, s[0], s[1], v(inp(0))?, v(i)?)?.into())
            }
            Op::SoftmaxGrad => Some(
                kernels::softmax_backward(ctx, s[0], s[1], v(inp(0))?, v(inp(1))?, v(i)?)?.into(),
            ),
            Op::SoftmaxXent | Op::Loss(_) => {
                let g = (i + 1..n).find(|&g| fused_with(graph, graph.id_at(i), graph.id_at(g)));
                let grad_len = lens[inp(0)];
                let grad_view = match g {
                    Some(g) => v(g)?,
                    None => {
                        scratch.push(GpuBuffer::zeros(ctx, "unused loss gradient", grad_len)?);
                        scratch.last().expect("just pushed").full()
                    }
                };
                let k = match &node.op {
                    Op::SoftmaxXent => {
                        let ls = &shapes[inp(0)];
                        kernels::softmax_xent(
                            ctx,
                            ls[0],
                            ls[1],
                            v(inp(0))?,
                            v(inp(1))?,
                            grad_view,
                            v(i)?,
                        )?
                    }
                    Op::Loss(kind) => kernels::pointwise_loss(
                        ctx,
                        *kind,
                        grad_len,
                        v(inp(0))?,
                        v(inp(1))?,
                        grad_view,
                        v(i)?,
                    )?,
                    _ => unreachable!("matched above"),
                };
                Some(k)
            }
            Op::SoftmaxXentGrad | Op::LossGrad(_) => {
                let fused = (0..i).any(|l| fused_with(graph, graph.id_at(l), graph.id_at(i)));
                if !fused {
                    return Err(Error::invalid(
                        "plan",
                        format!("{} without its loss node", node.op.name()),
                    ));
                }
                None
            }
            Op::ColumnSum => {
                let (x, d) = (inp(0), &shapes[inp(0)]);
                // A layer's output gradient that GEMMs read transposed is packed in the same
                // pass that sums it (see `pack_transposed_with_sums`).
                let gemm_reads = readers[x]
                    .iter()
                    .any(|&j| matches!(nodes[j].op, Op::MatMul { .. }));
                let cached = prepacked.packed(x, true, d[0]).is_some();
                let vx = v(x)?;
                Some(
                    if gemm_reads
                        && !cached
                        && vx.offset.is_multiple_of(4)
                        && kernels::pack_with_sums_fits(ctx, d[0], d[1])
                    {
                        let (t, launch) =
                            kernels::pack_transposed_with_sums(ctx, vx, d[0], d[1], v(i)?)?;
                        prepacked.packed.push((x, true, d[0], t));
                        launch.into()
                    } else {
                        kernels::column_sum(ctx, d[0], d[1], false, vx, v(i)?)?.into()
                    },
                )
            }
            Op::Add => Some(kernels::add(ctx, lens[i], v(inp(0))?, v(inp(1))?, v(i)?)?.into()),
        };
        kernels.extend(kernel);
        if i == loss_i {
            // Metrics right after the loss: the forward prefix ends here.
            let outputs = inp(0);
            let os = &shapes[outputs];
            let (rows, cols) = (os[0], os[1..].iter().product());
            kernels.push(
                kernels::metrics(
                    ctx,
                    rows,
                    cols,
                    metric_kind(&node.op, cols),
                    v(outputs)?,
                    v(inp(1))?,
                    v(i)?,
                    arenas.metrics.full(),
                )?
                .into(),
            );
            forward = kernels.len();
        }
    }
    for (gi, off) in grad_copies {
        let dst = arenas.grads.view(off, lens[gi])?;
        kernels.push(
            kernels::activation_forward(ctx, Activation::Identity, lens[gi], v(gi)?, dst)?.into(),
        );
    }
    let without_reuse = lens
        .iter()
        .zip(&locs)
        .filter(|(_, l)| matches!(l, Some(Loc::Slot(_))))
        .map(|(n, _)| *n as u64 * 4)
        .sum();
    Ok(GpuPlan {
        kernels,
        prepacked,
        forward,
        locs,
        lens,
        inputs,
        slots,
        scratch,
        without_reuse,
    })
}
