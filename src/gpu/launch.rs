//! Prebuilt kernel launches: a cached pipeline, a bind group and a small uniform buffer of
//! shape parameters. Built once (when a plan is compiled), encoded every step.

use std::sync::Arc;

use bytemuck::Pod;

use super::pipeline::{shader_source, BindKind, PipelineKey};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, View};

/// One binding of a launch after its uniform block: a storage-buffer view or an
/// `rgba32float` storage texture.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    Read(View<'a>),
    ReadWrite(View<'a>),
    TextureRead(&'a wgpu::TextureView),
    TextureWrite(&'a wgpu::TextureView),
}

impl<'a> Binding<'a> {
    pub(crate) fn view(&self) -> Option<&View<'a>> {
        match self {
            Binding::Read(v) | Binding::ReadWrite(v) => Some(v),
            _ => None,
        }
    }

    fn kind(&self) -> BindKind {
        match self {
            Binding::Read(_) => BindKind::Read,
            Binding::ReadWrite(_) => BindKind::ReadWrite,
            Binding::TextureRead(_) => BindKind::TextureRead,
            Binding::TextureWrite(_) => BindKind::TextureWrite,
        }
    }
}

/// What a kernel constructor hands to [`Launch::new`].
pub(crate) struct LaunchDesc<'a, P: Pod> {
    pub shader: &'static str,
    pub entry: &'static str,
    /// Override constants (WGSL `override` values: bool, integer or float).
    pub constants: Vec<(&'static str, f64)>,
    pub params: P,
    pub bindings: Vec<Binding<'a>>,
    /// Total workgroups, spread over x/y/z by [`grid`].
    pub workgroups: u32,
}

/// A ready-to-encode kernel launch.
#[derive(Debug)]
pub struct Launch {
    label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    grid: [u32; 3],
}

/// Spreads `total` workgroups over x, y and z so no dimension exceeds `max` (65,535 on most
/// adapters). Shaders recover the linear index as `x + nx * (y + ny * z)` and skip the excess.
pub fn grid(total: u32, max: u32) -> Result<[u32; 3]> {
    if total == 0 {
        return Ok([0, 1, 1]);
    }
    let x = total.min(max);
    let rest = total.div_ceil(x);
    let y = rest.min(max);
    let z = rest.div_ceil(y);
    if z > max {
        return Err(Error::invalid(
            "dispatch",
            format!("{total} workgroups exceed {max}^3; split the work"),
        ));
    }
    Ok([x, y, z])
}

impl Launch {
    pub(crate) fn new<P: Pod>(ctx: &GpuContext, desc: LaunchDesc<'_, P>) -> Result<Self> {
        let label = format!("{}::{}", desc.shader, desc.entry);
        let limits = ctx.limits();
        let align = limits.min_storage_buffer_offset_alignment as usize;
        for v in desc.bindings.iter().filter_map(Binding::view) {
            v.buffer.check_context(ctx, "launch")?;
            if (v.offset * 4) % align != 0 {
                return Err(Error::invalid(
                    "launch",
                    format!(
                        "{label}: view of `{}` starts at element {}, not on the device's \
                         {align}-byte storage alignment",
                        v.buffer.label(),
                        v.offset
                    ),
                ));
            }
            let bytes = (v.len.max(1) * 4) as u64;
            if bytes > limits.max_storage_buffer_binding_size {
                return Err(Error::BufferTooLarge {
                    label: format!("{} (bound by {label})", v.buffer.label()),
                    bytes,
                    limit: limits.max_storage_buffer_binding_size,
                    which: "max_storage_buffer_binding_size",
                });
            }
        }
        // The parameter block at binding 0 is a storage buffer too.
        let buffers = 1 + desc.bindings.iter().filter_map(Binding::view).count() as u32;
        let textures = desc.bindings.len() as u32 + 1 - buffers;
        for (n, limit, what, which) in [
            (
                buffers,
                limits.max_storage_buffers_per_shader_stage,
                "storage buffers",
                "max_storage_buffers_per_shader_stage",
            ),
            (
                textures,
                limits.max_storage_textures_per_shader_stage,
                "storage textures",
                "max_storage_textures_per_shader_stage",
            ),
        ] {
            if n > limit {
                return Err(Error::invalid(
                    "launch",
                    format!(
                        "{label} needs {n} {what}; the device allows {limit} ({which}). \
                         Use an adapter with higher limits"
                    ),
                ));
            }
        }
        let grid = grid(desc.workgroups, limits.max_compute_workgroups_per_dimension)?;
        let key = PipelineKey {
            shader: desc.shader,
            entry: desc.entry,
            constants: desc
                .constants
                .iter()
                .map(|&(n, v)| (n, v.to_bits()))
                .collect(),
            kinds: desc.bindings.iter().map(Binding::kind).collect(),
        };
        let pipeline = pipeline(ctx, &key)?;
        let param_bytes = std::mem::size_of::<P>().max(16) as u64;
        ctx.count_buffer(param_bytes);
        ctx.scoped(&format!("building launch {label}"), || {
            let params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size: param_bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.queue
                .write_buffer(&params, 0, bytemuck::bytes_of(&desc.params));
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: params.as_entire_binding(),
            }];
            for (i, b) in desc.bindings.iter().enumerate() {
                let resource = match b {
                    Binding::Read(v) | Binding::ReadWrite(v) => {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &v.buffer.buffer,
                            offset: v.offset as u64 * 4,
                            size: wgpu::BufferSize::new(v.len.max(1) as u64 * 4),
                        })
                    }
                    Binding::TextureRead(t) | Binding::TextureWrite(t) => {
                        wgpu::BindingResource::TextureView(t)
                    }
                };
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource,
                });
            }
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&label),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            Launch {
                label: label.clone(),
                pipeline: pipeline.clone(),
                bind_group,
                params,
                grid,
            }
        })
    }

    /// Records this launch into a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.grid[0] == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid[0], self.grid[1], self.grid[2]);
    }

    /// Rewrites the launch's uniform parameters (a new learning rate, a step count) without
    /// rebuilding anything; takes effect for the next submission.
    pub fn set_params<P: Pod>(&self, ctx: &GpuContext, params: &P) {
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(params));
    }

    /// `shader::entry`, for profiling and errors.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Bytes of its parameter block on the device.
    pub(crate) fn bytes(&self) -> u64 {
        self.params.size()
    }

    /// The workgroup grid this launch dispatches.
    pub fn grid(&self) -> [u32; 3] {
        self.grid
    }
}

/// A kernel that needs several launches in order, with the scratch resources they share (a
/// loss's per-row buffer, a GEMM's packed textures). Dropping it frees them.
#[derive(Debug)]
pub struct Kernel {
    launches: Vec<Launch>,
    _buffers: Vec<crate::gpu::GpuBuffer>,
    _textures: Vec<wgpu::Texture>,
}

impl Kernel {
    pub(crate) fn new(
        launches: Vec<Launch>,
        buffers: Vec<crate::gpu::GpuBuffer>,
        textures: Vec<wgpu::Texture>,
    ) -> Self {
        Kernel {
            launches,
            _buffers: buffers,
            _textures: textures,
        }
    }

    /// Kernels run one after another as one, owning all their resources and `buffers`.
    pub(crate) fn sequence(parts: Vec<Kernel>, buffers: Vec<crate::gpu::GpuBuffer>) -> Self {
        let mut out = Kernel::new(vec![], buffers, vec![]);
        for k in parts {
            out.launches.extend(k.launches);
            out._buffers.extend(k._buffers);
            out._textures.extend(k._textures);
        }
        out
    }

    /// Adds the device memory this kernel owns to `ledger`.
    pub(crate) fn count(&self, ledger: &mut Ledger) {
        ledger.bytes += self.launches.iter().map(Launch::bytes).sum::<u64>();
        ledger.bytes += self._buffers.iter().map(|b| b.bytes()).sum::<u64>();
        for t in &self._textures {
            ledger.texture(t);
        }
    }

    /// The launches, in the order they run.
    pub fn launches(&self) -> impl Iterator<Item = &Launch> {
        self.launches.iter()
    }

    /// Records every launch into one compute pass.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        encode_kernels(encoder, &[self]);
    }

    /// Encodes and submits this kernel alone.
    pub fn run(&self, ctx: &GpuContext) -> Result<()> {
        run_kernels(ctx, &[self])
    }

    /// Rewrites the parameter block of launch `index` (see [`Launch::set_params`]).
    pub fn set_params<P: Pod>(&self, ctx: &GpuContext, index: usize, params: &P) {
        if let Some(l) = self.launches.get(index) {
            l.set_params(ctx, params);
        }
    }
}

/// Device bytes held by a set of resources; a texture shared by several owners (a packed
/// operand that a plan and its GEMMs both hold) counts once.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub bytes: u64,
    textures: std::collections::HashSet<wgpu::Texture>,
}

impl Ledger {
    /// Counts an `rgba32float` texture once.
    pub fn texture(&mut self, t: &wgpu::Texture) {
        if self.textures.insert(t.clone()) {
            let s = t.size();
            self.bytes += s.width as u64 * s.height as u64 * s.depth_or_array_layers as u64 * 16;
        }
    }
}

impl From<Launch> for Kernel {
    fn from(l: Launch) -> Self {
        Kernel::new(vec![l], vec![], vec![])
    }
}

/// Records the launches of `kernels` in order, all in one compute pass.
pub fn encode_kernels(encoder: &mut wgpu::CommandEncoder, kernels: &[&Kernel]) {
    encode_kernel_iter(encoder, kernels.iter().copied());
}

/// [`encode_kernels`] over an iterator (no collection needed on a hot path).
pub fn encode_kernel_iter<'a>(
    encoder: &mut wgpu::CommandEncoder,
    kernels: impl Iterator<Item = &'a Kernel>,
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("wgtrain"),
        timestamp_writes: None,
    });
    for launch in kernels.flat_map(|k| k.launches.iter()) {
        launch.encode(&mut pass);
    }
}

/// Encodes `kernels` in order into one command buffer and submits it.
pub fn run_kernels(ctx: &GpuContext, kernels: &[&Kernel]) -> Result<()> {
    ctx.scoped("submitting kernels", || {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgtrain"),
            });
        encode_kernels(&mut encoder, kernels);
        ctx.submit(encoder.finish());
    })
}

/// Encodes `launches` in one compute pass and submits them as one command buffer.
pub fn run(ctx: &GpuContext, launches: &[&Launch]) -> Result<()> {
    ctx.scoped("submitting kernels", || {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgtrain"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgtrain"),
                timestamp_writes: None,
            });
            for l in launches {
                l.encode(&mut pass);
            }
        }
        ctx.submit(encoder.finish());
    })
}

fn pipeline(ctx: &GpuContext, key: &PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
    let mut cache = ctx.pipelines.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cache.get(key) {
        return Ok(p.clone());
    }
    let source = shader_source(key.shader)
        .ok_or_else(|| Error::invalid("pipeline", format!("no shader `{}`", key.shader)))?;
    let op = format!("compiling {}::{}", key.shader, key.entry);
    let mut modules = ctx.modules.lock().unwrap_or_else(|p| p.into_inner());
    if !modules.contains_key(key.shader) {
        // Cached only once it validates: a module that failed would make every later
        // pipeline fail with a vaguer "invalid module" error.
        let module = ctx.scoped(&format!("compiling shader `{}`", key.shader), || {
            ctx.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(key.shader),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                })
        })?;
        modules.insert(key.shader, module);
    }
    let module = &modules[key.shader];
    let pipeline = ctx.scoped(&op, || {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: true },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, &kind) in key.kinds.iter().enumerate() {
            let texture = |access| wgpu::BindingType::StorageTexture {
                access,
                format: wgpu::TextureFormat::Rgba32Float,
                view_dimension: wgpu::TextureViewDimension::D2,
            };
            let buffer = |read_only| wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match kind {
                    BindKind::Read => buffer(true),
                    BindKind::ReadWrite => buffer(false),
                    BindKind::TextureRead => texture(wgpu::StorageTextureAccess::ReadOnly),
                    BindKind::TextureWrite => texture(wgpu::StorageTextureAccess::WriteOnly),
                },
                count: None,
            });
        }
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(key.entry),
                entries: &entries,
            });
        let pipeline_layout = ctx
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(key.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|&(n, v)| (n, f64::from_bits(v)))
            .collect();
        ctx.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key.entry),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
    })?;
    let pipeline = Arc::new(pipeline);
    cache.insert(key.clone(), pipeline.clone());
    Ok(pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shader module that fails validation is not cached: asking again reports the same
    /// compile error, not a vaguer "invalid module" from a cached failure.
    #[test]
    fn a_module_that_fails_validation_is_not_cached() {
        let ctx = GpuContext::new().expect("a GPU adapter (lavapipe on CI)");
        let key = PipelineKey {
            shader: "broken_for_tests",
            entry: "main",
            constants: vec![],
            kinds: vec![],
        };
        for attempt in 0..2 {
            let err = pipeline(&ctx, &key).unwrap_err().to_string();
            assert!(
                err.contains("compiling shader `broken_for_tests`"),
                "attempt {attempt}: {err}"
            );
        }
        assert!(!ctx.modules.lock().unwrap().contains_key("broken_for_tests"));
    }
}
