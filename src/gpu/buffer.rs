//! Storage buffers on the GPU and views into them.
//!
//! Every element is 4 bytes (`f32` or `u32`). A [`View`] is an (offset, len) window into a flat
//! buffer; offsets must sit on the device's storage-binding alignment so kernels index from 0.

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// A flat storage buffer of 4-byte elements.
#[derive(Debug)]
pub struct GpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    len: usize,
    label: String,
    /// The context that made it ([`GpuContext::id`]): another context's device cannot use it.
    ctx_id: u64,
}

/// A window of `len` elements starting at element `offset` of a [`GpuBuffer`].
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub buffer: &'a GpuBuffer,
    pub offset: usize,
    pub len: usize,
}

impl GpuBuffer {
    /// A buffer of `len` zeroed elements.
    pub fn zeros(ctx: &GpuContext, label: &str, len: usize) -> Result<Self> {
        let bytes = byte_len(label, len)?;
        let max = ctx.limits().max_buffer_size;
        if bytes > max {
            return Err(Error::BufferTooLarge {
                label: label.to_string(),
                bytes,
                limit: max,
                which: "max_buffer_size",
            });
        }
        // wgpu rejects zero-sized bindings; an empty buffer still gets one element of storage.
        let size = bytes.max(4);
        ctx.count_buffer(size);
        let buffer = ctx.scoped(&format!("allocating `{label}` ({bytes} bytes)"), || {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        Ok(GpuBuffer {
            ctx_id: ctx.id(),
            buffer,
            len,
            label: label.to_string(),
        })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice<T: Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> Result<Self> {
        check_elem::<T>()?;
        let buf = Self::zeros(ctx, label, data.len())?;
        buf.write(ctx, 0, data)?;
        Ok(buf)
    }

    /// Bytes allocated on the device (at least 4: an empty buffer keeps one element).
    pub fn bytes(&self) -> u64 {
        self.buffer.size()
    }

    /// Number of 4-byte elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying wgpu buffer, for users who mix their own passes with ours.
    pub fn wgpu_buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The label given at creation (used in error messages).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The whole buffer as a view.
    pub fn full(&self) -> View<'_> {
        View {
            buffer: self,
            offset: 0,
            len: self.len,
        }
    }

    /// A view of `len` elements from `offset`; fails if it does not fit.
    pub fn view(&self, offset: usize, len: usize) -> Result<View<'_>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(
                "view",
                format!(
                    "elements {offset}..{} are outside `{}` ({} elements)",
                    offset.saturating_add(len),
                    self.label,
                    self.len
                ),
            ));
        }
        Ok(View {
            buffer: self,
            offset,
            len,
        })
    }

    /// An error unless `ctx` made this buffer.
    pub(crate) fn check_context(&self, ctx: &GpuContext, op: &'static str) -> Result<()> {
        if self.ctx_id != ctx.id() {
            return Err(Error::invalid(
                op,
                format!(
                    "`{}` was made on another GpuContext; a buffer can only be used on the \
                     context (device) that created it",
                    self.label
                ),
            ));
        }
        Ok(())
    }

    /// Writes `data` at element `offset` (queued; visible to later submissions).
    pub fn write<T: Pod>(&self, ctx: &GpuContext, offset: usize, data: &[T]) -> Result<()> {
        self.check_context(ctx, "write")?;
        check_elem::<T>()?;
        if offset
            .checked_add(data.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(Error::invalid(
                "write",
                format!(
                    "{} elements at offset {offset} do not fit `{}` ({} elements)",
                    data.len(),
                    self.label,
                    self.len
                ),
            ));
        }
        if data.is_empty() {
            return Ok(());
        }
        ctx.scoped(&format!("writing `{}`", self.label), || {
            ctx.queue
                .write_buffer(&self.buffer, offset as u64 * 4, bytemuck::cast_slice(data))
        })
    }

    /// Copies the whole buffer back to the host (blocks until the GPU is done).
    pub fn read<T: Pod>(&self, ctx: &GpuContext) -> Result<Vec<T>> {
        self.full().read(ctx)
    }
}

impl View<'_> {
    /// Copies this view back to the host through a staging buffer (blocks until done).
    pub fn read<T: Pod>(&self, ctx: &GpuContext) -> Result<Vec<T>> {
        self.buffer.check_context(ctx, "read")?;
        check_elem::<T>()?;
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let label = self.buffer.label.as_str();
        let bytes = self.len as u64 * 4;
        let op = format!("reading back `{label}`");
        ctx.count_buffer(0); // transient
        let (staging, submission) = ctx.scoped(&op, || {
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgtrain staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
            encoder.copy_buffer_to_buffer(
                &self.buffer.buffer,
                self.offset as u64 * 4,
                &staging,
                0,
                bytes,
            );
            let submission = ctx.submit(encoder.finish());
            (staging, submission)
        })?;
        let (tx, rx) = flume::bounded(1);
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver outlives this callback unless the wait below failed; then nobody cares.
            let _ = tx.send(r);
        });
        // Another thread's poll may run our callback, so wait on the channel, not on poll alone.
        ctx.wait_for(&op, submission, &rx)?
            .map_err(|e| Error::ReadBack {
                label: label.to_string(),
                message: e.to_string(),
            })?;
        let range = staging.get_mapped_range(..).map_err(|e| Error::ReadBack {
            label: label.to_string(),
            message: e.to_string(),
        })?;
        let out = bytemuck::cast_slice::<u8, T>(&range).to_vec();
        drop(range);
        staging.unmap();
        Ok(out)
    }
}

fn check_elem<T: Pod>() -> Result<()> {
    if std::mem::size_of::<T>() != 4 {
        return Err(Error::invalid(
            "buffer transfer",
            format!(
                "elements must be 4 bytes (f32 or u32), got {} bytes",
                std::mem::size_of::<T>()
            ),
        ));
    }
    Ok(())
}

fn byte_len(label: &str, len: usize) -> Result<u64> {
    (len as u64)
        .checked_mul(4)
        .ok_or_else(|| Error::BufferTooLarge {
            label: label.to_string(),
            bytes: u64::MAX,
            limit: u64::MAX,
            which: "address space",
        })
}
