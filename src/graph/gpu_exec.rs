//! The GPU executor: a graph compiled per batch size into prebuilt launches over resident
//! buffers. Parameters, their gradients and the optimizer's moments live in flat arenas (one
//! optimizer dispatch over everything); activations live in buffers reused by liveness. A
//! training step writes the batch, encodes the prebuilt launches and submits once.

mod access;
mod memory;
mod profile;

pub use memory::MemoryReport;

use std::collections::HashMap;
use std::sync::Arc;

use super::plan::{self, Arenas, GpuPlan, Loc, Prepacked};
use super::{Executor, Feed, Gradients, Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::gpu::kernels;
use crate::gpu::{encode_kernel_iter, GpuBuffer, GpuContext, Kernel};
use crate::graph::ShapeOp;
use crate::ops::{MetricTotals, METRIC_WORDS};
use crate::optim::{Optimizer, ParamOptions};

/// A graph with a loss, differentiated, running on the GPU with an in-shader optimizer.
pub struct GpuExecutor {
    ctx: Arc<GpuContext>,
    graph: Graph,
    loss: NodeId,
    grads: Gradients,
    arenas: Arenas,
    optimizer: Optimizer,
    optimizer_kernel: Kernel,
    /// Global-norm gradient clipping (squared norm, then scale), before the optimizer.
    clip: Option<(f32, Kernel)>,
    /// Whether some op reads the step and train/eval flag, so submissions write it.
    reads_mode: bool,
    arena_len: usize,
    /// The parameter groups: (options, arena start, elements); one optimizer launch each.
    groups: Vec<(ParamOptions, usize, usize)>,
    step: u64,
    plans: HashMap<usize, GpuPlan>,
    last_host: std::time::Duration,
    /// The batch whose gradients were computed but not yet applied.
    pending: Option<Pending>,
}

/// A step between [`GpuExecutor::compute_gradients`] and [`GpuExecutor::apply_gradients`].
struct Pending {
    batch: usize,
    /// When the step began (for [`GpuExecutor::last_step_host_time`]).
    start: std::time::Instant,
    /// Whether its forward and backward launches were submitted already (at the seam).
    submitted: bool,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl GpuExecutor {
    /// Differentiates `graph` from `loss`, initializes the parameters from `seed` (the same
    /// values [`super::CpuRun::new`] draws) and prepares `optimizer`.
    pub fn new(
        ctx: &Arc<GpuContext>,
        mut graph: Graph,
        loss: NodeId,
        optimizer: Optimizer,
        seed: u64,
    ) -> Result<Self> {
        optimizer.validate()?;
        graph.check_leaf_sizes("GpuExecutor")?;
        let grads = graph.backward(loss)?;
        let (layout, arena_len) = graph.param_layout();
        let mut offsets = HashMap::new();
        let mut init = vec![0.0; arena_len];
        // The values the CPU executor starts from (Graph::initial_values).
        for &(p, off, len) in &layout {
            offsets.insert(p, off);
            init[off..off + len].copy_from_slice(&graph.initial_values(p, seed));
        }
        let (buffer_layout, buffers_len) = graph.buffer_layout();
        let mut buffer_init = vec![0.0; buffers_len];
        let mut buffer_offsets = HashMap::new();
        for &(b, off, len) in &buffer_layout {
            buffer_offsets.insert(b, off);
            buffer_init[off..off + len].copy_from_slice(&graph.initial_values(b, seed));
        }
        let reads_mode = graph.nodes().iter().any(|n| n.op.reads_mode());
        let arenas = Arenas {
            params: GpuBuffer::from_slice(ctx, "parameters", &init)?,
            grads: GpuBuffer::zeros(ctx, "gradients", arena_len)?,
            state: optimizer
                .state_slots()
                .iter()
                .map(|slot| GpuBuffer::zeros(ctx, &format!("optimizer {slot}"), arena_len))
                .collect::<Result<_>>()?,
            offsets,
            buffers: GpuBuffer::from_slice(ctx, "buffers", &buffer_init)?,
            buffer_offsets,
            metrics: GpuBuffer::zeros(ctx, "metrics", METRIC_WORDS)?,
            mode: GpuBuffer::zeros(ctx, "step and mode", 4)?,
        };
        let groups = graph.param_group_ranges();
        let optimizer_kernel = optimizer_kernel(ctx, &optimizer, &arenas, &groups, 1)?;
        Ok(GpuExecutor {
            ctx: Arc::clone(ctx),
            graph,
            loss,
            grads,
            arenas,
            optimizer,
            optimizer_kernel,
            clip: None,
            reads_mode,
            arena_len,
            groups,
            step: 0,
            plans: HashMap::new(),
            last_host: std::time::Duration::ZERO,
            pending: None,
        })
    }

    /// Host time of the last step: writing the batch and encoding the prebuilt launches,
    /// excluding `queue.submit` (which on lavapipe runs the work synchronously) and the GPU.
    pub fn last_step_host_time(&self) -> std::time::Duration {
        self.last_host
    }

    /// The gradient node of each parameter.
    pub fn gradients(&self) -> &Gradients {
        &self.grads
    }

    fn write_optimizer_params(&self, ctx: &GpuContext, t: u64) -> Result<()> {
        for (k, (options, _, n)) in self.groups.iter().enumerate() {
            self.optimizer.for_group(options).write_gpu_params(
                ctx,
                &self.optimizer_kernel,
                k,
                *n,
                t,
            )?;
        }
        Ok(())
    }

    /// Compiles the plan for `batch` now (otherwise the first step of that size does).
    pub fn prepare(&mut self, batch: usize) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        if !self.plans.contains_key(&batch) {
            let plan = plan::build(
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
        self.prepare(batch)?;
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
                (Feed::F32(d), Op::Shape(ShapeOp::Input)) => d.len(),
                (Feed::U32(d), Op::Shape(ShapeOp::Labels)) => d.len(),
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

    /// Submits the pending batch's forward and backward launches, if not done yet.
    fn run_pending(&mut self, ctx: &GpuContext, op: &'static str) -> Result<()> {
        let pending = self.pending.as_mut().ok_or_else(|| no_pending(op))?;
        if !pending.submitted {
            let plan = &self.plans[&pending.batch];
            let copies = (&self.arenas.params, &plan.prepacked);
            submit(ctx, op, pending.start, Some(copies), plan.kernels.iter())?;
            pending.submitted = true;
        }
        Ok(())
    }

    fn check_no_pending(&self, op: &'static str) -> Result<()> {
        match self.pending {
            Some(_) => Err(Error::invalid(
                op,
                "the gradients of the last batch were computed but not applied; call \
                 apply_gradients first",
            )),
            None => Ok(()),
        }
    }

    /// Writes `feeds` and submits the forward pass in evaluation mode, with the metrics
    /// launch (which ends the forward prefix) or without it; `op` is (the method, for errors
    /// about its use; the submission's label).
    fn run_forward(
        &mut self,
        ctx: &GpuContext,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        (op, label): (&'static str, &str),
        with_metrics: bool,
    ) -> Result<()> {
        self.check_no_pending(op)?;
        let start = std::time::Instant::now();
        self.write_feeds(ctx, batch, feeds)?;
        self.write_mode(ctx, self.step, false)?;
        let plan = &self.plans[&batch];
        let end = plan.forward - usize::from(!with_metrics);
        let copies = Some((&self.arenas.params, &plan.prepacked));
        submit(ctx, label, start, copies, plan.kernels[..end].iter())?;
        Ok(())
    }

    /// Writes the step and train/eval flag, when some op reads them.
    fn write_mode(&self, ctx: &GpuContext, step: u64, training: bool) -> Result<()> {
        if self.reads_mode {
            let state = kernels::StepMode::new(step, training);
            self.arenas
                .mode
                .write::<u32>(ctx, 0, bytemuck::cast_slice(&[state]))?;
        }
        Ok(())
    }
}

fn no_pending(op: &'static str) -> Error {
    Error::invalid(op, "no gradients are pending; call compute_gradients first")
}

/// Encodes `kernels` into one command buffer and submits it; returns the host time from
/// `start` up to the submission.
fn submit<'a>(
    ctx: &GpuContext,
    op: &str,
    start: std::time::Instant,
    copies: Option<(&GpuBuffer, &Prepacked)>,
    kernels: impl Iterator<Item = &'a Kernel>,
) -> Result<std::time::Duration> {
    ctx.scoped(op, || {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
        // Weights into their packed textures (rows are whole 256-byte lines, offsets aligned).
        let (params, copies) = match copies {
            Some((params, copies)) => (Some(params), copies.params.as_slice()),
            None => (None, &[][..]),
        };
        for (offset, rows, cols, texture) in copies {
            let params = params.expect("copies come with their parameter arena");
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

/// One optimizer launch per parameter group, over the group's range of the arenas (launch k
/// updates group k, so [`GpuExecutor::write_optimizer_params`] rewrites block k for it).
fn optimizer_kernel(
    ctx: &GpuContext,
    opt: &Optimizer,
    a: &Arenas,
    groups: &[(ParamOptions, usize, usize)],
    t: u64,
) -> Result<Kernel> {
    let mut parts = Vec::new();
    for (options, start, n) in groups {
        let (start, n) = (*start, *n);
        let (param, grad) = (a.params.view(start, n)?, a.grads.view(start, n)?);
        let state = a
            .state
            .iter()
            .map(|s| s.view(start, n))
            .collect::<Result<Vec<_>>>()?;
        parts.push(
            opt.for_group(options)
                .gpu_update(ctx, t, n, param, grad, &state)?,
        );
    }
    Ok(Kernel::sequence(parts, vec![]))
}

impl Executor for GpuExecutor {
    /// The differentiated graph (forward nodes, then gradient nodes).
    fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Optimizer steps taken.
    fn steps(&self) -> u64 {
        self.step
    }

    /// Changes the learning rate for the next steps; nothing is rebuilt.
    fn set_lr(&mut self, lr: f32) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let optimizer = self.optimizer.with_lr(lr);
        optimizer.validate()?;
        self.optimizer = optimizer;
        self.write_optimizer_params(ctx, self.step.max(1))
    }

    /// Clips the gradients of every step to a global L2 norm of at most `max_norm`
    /// (`None`: no clipping), as TensorFlow's `clip_by_global_norm` does.
    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
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

    /// One training step on a batch: [`Self::compute_gradients`], then
    /// [`Self::apply_gradients`]: forward, backward, metrics, clipping and the optimizer in
    /// one submission.
    fn step(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        self.compute_gradients(batch, feeds)?;
        self.apply_gradients()
    }

    /// The first half of a step (ARCHITECTURE.md, "The training step"): writes the batch and
    /// records its forward pass, metrics and backward pass. They run with
    /// [`Self::apply_gradients`] in one submission, or at once when the seam
    /// ([`Self::read_gradients`], [`Self::write_gradients`]) needs the gradients.
    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.check_no_pending("compute_gradients")?;
        self.prepare(batch)?;
        let start = std::time::Instant::now();
        self.write_feeds(ctx, batch, feeds)?;
        // Masks are drawn for the step this batch will be (1-based).
        self.write_mode(ctx, self.step + 1, true)?;
        self.pending = Some(Pending {
            batch,
            start,
            submitted: false,
        });
        Ok(())
    }

    /// The seam: the pending batch's gradients, flat in [`Graph::param_layout`]'s layout
    /// (blocks until they are computed).
    fn read_gradients(&mut self) -> Result<Vec<f32>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.run_pending(ctx, "read_gradients")?;
        self.arenas.grads.read(ctx)
    }

    /// The seam: replaces the pending batch's gradients (a sum over devices, an accumulated
    /// total), flat in [`Graph::param_layout`]'s layout.
    fn write_gradients(&mut self, grads: &[f32]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (what, len) = ("a gradient layout", self.arena_len);
        super::check_host_values("write_gradients", what, "gradient", len, grads)?;
        self.run_pending(ctx, "write_gradients")?;
        self.arenas.grads.write(ctx, 0, grads)
    }

    /// Submits the pending batch's forward and backward launches, if not done yet, and
    /// waits for the GPU to finish them (a read-back after this measures only the copy).
    fn finish(&mut self) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        if self.pending.is_some() {
            self.run_pending(ctx, "finish")?;
        }
        ctx.wait("finish")
    }

    /// The second half of a step: clipping (when set) and the optimizer update from the
    /// pending batch's gradients; counts the step.
    fn apply_gradients(&mut self) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let pending = self
            .pending
            .take()
            .ok_or_else(|| no_pending("apply_gradients"))?;
        self.step += 1;
        if self.optimizer.params_change_per_step() {
            self.write_optimizer_params(ctx, self.step)?;
        }
        let plan = &self.plans[&pending.batch];
        let clip = self.clip.as_ref().map(|c| &c.1);
        let (copies, forward_backward) = if pending.submitted {
            (None, [].iter())
        } else {
            (
                Some((&self.arenas.params, &plan.prepacked)),
                plan.kernels.iter(),
            )
        };
        let kernels = forward_backward.chain(clip).chain([&self.optimizer_kernel]);
        self.last_host = submit(ctx, "training step", pending.start, copies, kernels)?;
        Ok(())
    }

    /// Forward pass and metrics only (evaluation), one submission.
    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.run_forward(
            ctx,
            batch,
            feeds,
            ("evaluate_batch", "evaluation step"),
            true,
        )
    }

    /// The values of `node` for a batch: the forward pass without the metrics launch (nothing
    /// is counted or updated; dropout is the identity).
    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.run_forward(ctx, batch, feeds, ("forward", "forward pass"), false)?;
        self.read_node(batch, node)
    }

    /// The running totals (blocks until the GPU is done).
    fn metric_totals(&self) -> Result<MetricTotals> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let words: [u32; METRIC_WORDS] = self.arenas.metrics.read::<u32>(ctx)?[..]
            .try_into()
            .expect("the metrics buffer holds METRIC_WORDS words");
        Ok(MetricTotals::from_words(&words))
    }

    /// Zeroes the accumulated metrics.
    fn reset_metrics(&mut self) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.arenas.metrics.write(ctx, 0, &[0u32; METRIC_WORDS])
    }

    /// Sets the optimizer step count (when resuming); Adam's bias correction follows it.
    fn set_steps(&mut self, steps: u64) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.step = steps;
        self.write_optimizer_params(ctx, steps.max(1))
    }

    /// A parameter's current values.
    fn read_param(&self, p: NodeId) -> Result<Vec<f32>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.param_range(p)?;
        self.arenas.params.view(off, len)?.read(ctx)
    }

    /// A parameter's optimizer state: one vector per slot the optimizer keeps, in the order
    /// of [`crate::optim::Optimizer::state_slots`].
    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.param_range(p)?;
        self.arenas
            .state
            .iter()
            .map(|arena| arena.view(off, len)?.read(ctx))
            .collect()
    }

    /// Overwrites a parameter's optimizer state: one vector per slot, as `read_state` gives.
    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.param_range(p)?;
        self.optimizer
            .check_state(&self.graph.node(p).name, len, state)?;
        for (arena, values) in self.arenas.state.iter().zip(state) {
            arena.write(ctx, off, values)?;
        }
        Ok(())
    }

    /// Overwrites a parameter's values.
    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.param_range(p)?;
        if values.len() != len {
            return Err(Error::shape(
                "write_param",
                format!("{} values for {len} parameters", values.len()),
            ));
        }
        self.arenas.params.write(ctx, off, values)
    }

    /// A buffer's values ([`crate::graph::Graph::buffer`]).
    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.buffer_range(b, "read_buffer")?;
        self.arenas.buffers.view(off, len)?.read(ctx)
    }

    /// Overwrites a buffer's values (every value finite); later steps read the new values.
    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        let (off, len) = self.buffer_range(b, "write_buffer")?;
        crate::graph::check_host_values("write_buffer", "a buffer", "buffer", len, values)?;
        self.arenas.buffers.write(ctx, off, values)
    }
}
