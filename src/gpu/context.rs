//! The GPU context: adapter choice, a device opened with the adapter's real limits, error scopes
//! turned into `Result`s, and device loss observed instead of waited on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// Environment variable that selects an adapter by a case-insensitive substring of its name or
/// backend, e.g. `WGTRAIN_ADAPTER=llvmpipe` or `WGTRAIN_ADAPTER=vulkan`.
pub const ADAPTER_ENV: &str = "WGTRAIN_ADAPTER";
/// Environment variable that forces the plan kernels are built for: `gpu` (shared-memory
/// tiles over storage buffers, what real GPUs run) or `cpu` (packed textures, what CPU
/// adapters run), on any adapter. See [`GpuOptions::plan`].
pub const PLAN_ENV: &str = "WGTRAIN_PLAN";

/// How to pick and open a GPU.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter's name or backend (`"vulkan"`, `"nvidia"`,
    /// `"llvmpipe"`). `None` reads [`ADAPTER_ENV`], and without it takes the best adapter:
    /// discrete, then integrated, then virtual, then CPU.
    pub adapter: Option<String>,
    /// The longest a blocking wait (read-back, `synchronize`) may take before it returns
    /// [`Error::Timeout`].
    pub timeout: Duration,
    /// Limits to request instead of the adapter's own: a smaller device to check that work
    /// stays within what other adapters offer (`wgpu::Limits::downlevel_defaults()`, say).
    /// Each must be within the adapter's.
    pub limits: Option<wgpu::Limits>,
    /// The plan kernels are built for, whatever the adapter: [`AdapterKind::Gpu`] runs the
    /// real-GPU kernels (so a CPU adapter in CI exercises them), [`AdapterKind::Cpu`] the
    /// CPU-adapter ones (which need subgroups of 8). `None` reads [`PLAN_ENV`], and without it
    /// follows the adapter's kind.
    pub plan: Option<AdapterKind>,
    /// Which of several equally good matching adapters to take (modulo their number): a
    /// process's place among those sharing a machine with several GPUs. `None` takes the
    /// first.
    pub ordinal: Option<usize>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter: None,
            timeout: Duration::from_secs(120),
            limits: None,
            plan: None,
            ordinal: None,
        }
    }
}

/// What kind of adapter the context runs on; kernels choose their variant by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A discrete or integrated GPU: shared-memory tiling pays.
    Gpu,
    /// A CPU rasterizer such as lavapipe/llvmpipe: barriers and per-lane loads are costly.
    Cpu,
}

/// An open GPU device with its queue, limits and pipeline cache. Cheap to share behind an `Arc`.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// The plan kernels are built for (the adapter's kind unless forced).
    plan: AdapterKind,
    limits: wgpu::Limits,
    timeout: Duration,
    lost: Arc<Mutex<Option<(String, String)>>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
    pub(crate) pipelines: Mutex<HashMap<super::PipelineKey, Arc<wgpu::ComputePipeline>>>,
    pub(crate) modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    counters: Counters,
    id: u64,
}

/// What the context has created and submitted so far (for tests of steady-state behaviour:
/// a training step must allocate nothing and submit once).
#[derive(Debug, Default)]
pub struct Counters {
    buffers: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    submissions: std::sync::atomic::AtomicU64,
}

impl Counters {
    /// GPU buffers and textures created through wgtrain.
    pub fn buffers(&self) -> u64 {
        self.buffers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of the buffers and textures created through wgtrain that outlive the call that
    /// made them (read-back staging buffers, freed at once, are not counted).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queue submissions made through wgtrain.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish_non_exhaustive()
    }
}

fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

impl GpuContext {
    /// Opens the best adapter, or the one named by `WGTRAIN_ADAPTER`.
    ///
    /// ```no_run
    /// let gpu = wgtrain::gpu::GpuContext::new()?;
    /// println!("running on {}", gpu.adapter_name());
    /// # Ok::<(), wgtrain::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default())
    }

    /// Opens an adapter chosen by `options`.
    pub fn with_options(options: GpuOptions) -> Result<Self> {
        let wanted = options
            .adapter
            .clone()
            .or_else(|| std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty()));
        // Honors wgpu's own WGPU_BACKEND and friends. Unless asked for, GL is probed only
        // when no other backend has a matching adapter: the sort below would never pick a GL
        // adapter over another, and initializing EGL loads Mesa's whole GL stack for nothing.
        let from_env = wgpu::InstanceDescriptor::new_without_display_handle_from_env;
        let available = from_env().backends;
        let explicit = std::env::var_os("WGPU_BACKEND").is_some();
        let matches = |a: &wgpu::Adapter| {
            wanted.as_ref().is_none_or(|w| {
                let (w, info) = (w.to_lowercase(), a.get_info());
                info.name.to_lowercase().contains(&w)
                    || format!("{:?}", info.backend).to_lowercase().contains(&w)
            })
        };
        let enumerate = |backends: wgpu::Backends| -> Vec<wgpu::Adapter> {
            if backends.is_empty() {
                return Vec::new();
            }
            let mut d = from_env();
            d.backends = backends;
            let instance = wgpu::Instance::new(d);
            pollster::block_on(instance.enumerate_adapters(backends))
        };
        let wants_gl = explicit
            || wanted
                .as_ref()
                .is_some_and(|w| ["gl", "opengl", "egl"].contains(&w.to_lowercase().as_str()));
        let first = if wants_gl {
            available
        } else {
            available - wgpu::Backends::GL
        };
        let mut all = enumerate(first);
        if !all.iter().any(matches) && !wants_gl {
            all.extend(enumerate(available & wgpu::Backends::GL));
        }
        let seen = all
            .iter()
            .map(|a| describe(&a.get_info()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut adapters: Vec<wgpu::Adapter> = all.into_iter().filter(|a| matches(a)).collect();
        // GL adapters cannot run compute with our storage-buffer counts; prefer anything else.
        let key = |a: &wgpu::Adapter| {
            let info = a.get_info();
            (
                info.backend == wgpu::Backend::Gl,
                device_type_rank(info.device_type),
            )
        };
        adapters.sort_by_key(key);
        if let (Some(k), Some(best)) = (options.ordinal, adapters.first().map(key)) {
            let equals = adapters.iter().take_while(|a| key(a) == best).count();
            adapters.swap(0, k % equals);
        }
        let Some(adapter) = adapters.into_iter().next() else {
            return Err(Error::NoAdapter {
                wanted: wanted
                    .map(|w| format!(" matching `{w}` ({ADAPTER_ENV})"))
                    .unwrap_or_default(),
                seen,
            });
        };
        let plan = match options.plan {
            Some(p) => Some(p),
            None => match std::env::var(PLAN_ENV).ok().filter(|s| !s.is_empty()) {
                None => None,
                Some(v) => Some(match v.to_lowercase().as_str() {
                    "gpu" => AdapterKind::Gpu,
                    "cpu" => AdapterKind::Cpu,
                    _ => {
                        return Err(Error::invalid(
                            "GpuContext",
                            format!("{PLAN_ENV}={v}: the plan is `gpu` or `cpu`"),
                        ))
                    }
                }),
            },
        };
        Self::from_adapter(adapter, options.timeout, options.limits, plan)
    }

    fn from_adapter(
        adapter: wgpu::Adapter,
        timeout: Duration,
        limits: Option<wgpu::Limits>,
        plan: Option<AdapterKind>,
    ) -> Result<Self> {
        let info = adapter.get_info();
        // The adapter's real limits, not WebGPU's small defaults: large storage bindings and
        // enough storage buffers per stage for fused kernels.
        let limits = limits.unwrap_or_else(|| adapter.limits());
        // Subgroups let the CPU-adapter GEMM share loads across a SIMD vector.
        let features = adapter.features() & wgpu::Features::SUBGROUP;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: describe(&info),
            message: e.to_string(),
        })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_cb = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = lost_cb.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some((format!("{reason:?}"), message));
        });
        // Errors outside our scopes are recorded and surfaced by the next `check`, never a panic.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let uncaptured_cb = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            uncaptured_cb
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }));

        let fixed = info.subgroup_min_size == info.subgroup_max_size;
        let subgroup = (device.features().contains(wgpu::Features::SUBGROUP) && fixed)
            .then_some(info.subgroup_min_size);
        // The CPU-adapter kernels share operands across subgroups of 8: a CPU adapter without
        // them (SwiftShader, WARP) runs the real-GPU plan.
        let natural = match info.device_type {
            wgpu::DeviceType::Cpu if subgroup == Some(8) => AdapterKind::Cpu,
            _ => AdapterKind::Gpu,
        };
        if plan == Some(AdapterKind::Cpu) && subgroup != Some(8) {
            return Err(Error::invalid(
                "GpuContext",
                format!(
                    "the CPU-adapter plan shares operands across subgroups of 8; {} has {}",
                    describe(&info),
                    subgroup.map_or("no fixed subgroup size".to_string(), |s| format!(
                        "subgroups of {s}"
                    ))
                ),
            ));
        }
        let plan = plan.unwrap_or(natural);
        Ok(GpuContext {
            device,
            queue,
            info,
            plan,
            limits,
            timeout,
            lost,
            uncaptured,
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    /// This context's identity: buffers remember the context that made them.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Buffers created and submissions made so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counts a buffer or texture of `bytes` that outlives its call (0 for staging).
    pub(crate) fn count_buffer(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.buffers.fetch_add(1, Relaxed);
        self.counters.bytes.fetch_add(bytes, Relaxed);
    }

    /// Submits command buffers (every wgtrain submission goes through here, so it is counted).
    pub(crate) fn submit(&self, commands: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.counters
            .submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.submit([commands])
    }

    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// Full adapter information (backend, device type, driver).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The subgroup size when the device has subgroup operations and a fixed size.
    pub fn subgroup_size(&self) -> Option<u32> {
        let fixed = self.info.subgroup_min_size == self.info.subgroup_max_size;
        (self.device.features().contains(wgpu::Features::SUBGROUP) && fixed)
            .then_some(self.info.subgroup_min_size)
    }

    /// Whether this is a CPU adapter (lavapipe, SwiftShader, WARP) or a real GPU.
    pub fn kind(&self) -> AdapterKind {
        match self.info.device_type {
            wgpu::DeviceType::Cpu => AdapterKind::Cpu,
            _ => AdapterKind::Gpu,
        }
    }

    /// Every specialized pipeline this context has built so far (module, entry point,
    /// override constants), each once, sorted: what a portability check must translate.
    pub fn pipeline_variants(&self) -> Vec<super::PipelineVariant> {
        let map = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<super::PipelineVariant> = Vec::new();
        for key in map.keys() {
            let v = key.variant();
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out.sort_by(|a, b| {
            (a.shader, a.entry, format!("{:?}", a.constants)).cmp(&(
                b.shader,
                b.entry,
                format!("{:?}", b.constants),
            ))
        });
        out
    }

    /// The plan kernels are built for: the CPU-adapter plan on a CPU adapter with subgroups of
    /// 8, the real-GPU plan otherwise, unless [`GpuOptions::plan`] or [`PLAN_ENV`] forced one.
    pub fn plan(&self) -> AdapterKind {
        self.plan
    }

    /// The underlying wgpu device, for users who mix their own passes with ours.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The underlying wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Returns the device-lost error if the device is gone.
    pub fn check_lost(&self) -> Result<()> {
        let slot = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((reason, message)) => Err(Error::DeviceLost {
                reason: reason.clone(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and turns anything
    /// they catch into an error naming `op`. Also reports a lost device and uncaptured errors.
    pub fn scoped<T>(&self, op: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_lost()?;
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
            pollster::block_on(internal.pop()),
        ];
        self.check_lost()?;
        if let Some(e) = errors.into_iter().flatten().next() {
            let op = op.to_string();
            return Err(match e {
                wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory {
                    op,
                    message: e.to_string(),
                },
                wgpu::Error::Validation { description, .. } => Error::Validation {
                    op,
                    message: description,
                },
                wgpu::Error::Internal { description, .. } => Error::Internal {
                    op,
                    message: description,
                },
            });
        }
        self.check_uncaptured(op)?;
        Ok(value)
    }

    fn check_uncaptured(&self, op: &str) -> Result<()> {
        let mut errors = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(Error::Validation {
            op: format!("{op} (reported outside an error scope)"),
            message,
        })
    }

    /// Blocks until all submitted work is done, within the context's timeout.
    pub fn synchronize(&self) -> Result<()> {
        self.wait("synchronize")
    }

    pub(crate) fn wait(&self, op: &str) -> Result<()> {
        self.check_lost()?;
        let result = self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(self.timeout),
        });
        self.check_lost()?;
        match result {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(Error::Timeout {
                op: op.to_string(),
                waited: self.timeout,
            }),
            Err(e) => Err(Error::DeviceLost {
                reason: "poll failed".into(),
                message: e.to_string(),
            }),
        }
    }

    /// Polls until `rx` yields (a map callback fired, perhaps on another thread's poll), the
    /// device is lost, or the timeout passes.
    pub(crate) fn wait_for<T>(
        &self,
        op: &str,
        submission: wgpu::SubmissionIndex,
        rx: &flume::Receiver<T>,
    ) -> Result<T> {
        let start = std::time::Instant::now();
        let mut submission = Some(submission);
        loop {
            if let Ok(v) = rx.try_recv() {
                return Ok(v);
            }
            self.check_lost()?;
            let left = self.timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    op: op.to_string(),
                    waited: self.timeout,
                });
            }
            let polled = self.device.poll(wgpu::PollType::Wait {
                submission_index: submission.take(),
                timeout: Some(left.min(Duration::from_millis(100))),
            });
            match polled {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => {
                    self.check_lost()?;
                    return Err(Error::DeviceLost {
                        reason: "poll failed".into(),
                        message: e.to_string(),
                    });
                }
            }
            if let Ok(v) = rx.recv_timeout(Duration::from_millis(1)) {
                return Ok(v);
            }
        }
    }

    /// Destroys the device (for tests of device loss); every later call returns
    /// [`Error::DeviceLost`].
    pub fn destroy(&self) {
        self.device.destroy();
    }
}
