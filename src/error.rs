//! The crate's one error type. Each variant carries what a user needs to fix the problem.

use std::time::Duration;

/// Everything that can go wrong in wgtrain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter matched (or none exists at all).
    #[error(
        "no GPU adapter found{wanted}; adapters seen: [{seen}]. \
         Install a GPU driver; on headless Linux install Mesa's software Vulkan driver \
         (`apt-get install mesa-vulkan-drivers`), or pick another adapter with \
         WGTRAIN_ADAPTER=<name or backend substring>"
    )]
    NoAdapter { wanted: String, seen: String },

    /// The adapter refused to open a device.
    #[error("could not open a device on adapter `{adapter}`: {message}")]
    RequestDevice { adapter: String, message: String },

    /// wgpu reported a validation error inside an error scope.
    #[error("GPU validation error during {op}: {message}")]
    Validation { op: String, message: String },

    /// wgpu reported an out-of-memory error inside an error scope.
    #[error("GPU out of memory during {op}: {message}. Use a smaller batch or model")]
    OutOfMemory { op: String, message: String },

    /// An internal driver error.
    #[error("GPU internal error during {op}: {message}")]
    Internal { op: String, message: String },

    /// A buffer or binding would exceed one of the device's limits; caught before wgpu sees it.
    #[error(
        "`{label}` needs {bytes} bytes but the device allows at most {limit} bytes ({which}); \
         use a smaller batch or split the tensor"
    )]
    BufferTooLarge {
        label: String,
        bytes: u64,
        limit: u64,
        which: &'static str,
    },

    /// The device was lost (driver reset, `destroy`, ...). Everything on it is gone.
    #[error("the GPU device was lost ({reason}): {message}. Create a new context to continue")]
    DeviceLost { reason: String, message: String },

    /// A rank of a distributed run failed, or the ranks disagree; every rank stops with this
    /// error, naming the rank (ARCHITECTURE.md, "Data parallelism").
    #[error("rank {rank} of {ranks}: {detail}")]
    Rank {
        rank: usize,
        ranks: usize,
        detail: String,
    },

    /// Waiting for the GPU took longer than the context's timeout.
    #[error("waited {waited:?} for the GPU during {op} without completion")]
    Timeout { op: String, waited: Duration },

    /// Reading a buffer back to the host failed.
    #[error("reading `{label}` back from the GPU failed: {message}")]
    ReadBack { label: String, message: String },

    /// Operand shapes do not fit the operation.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A data file is missing, malformed or inconsistent; nothing was loaded from it.
    #[error("{path}: {detail}")]
    Data { path: String, detail: String },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A download failed; no partial file was left behind.
    #[error("downloading {what} failed: {detail}")]
    Download { what: String, detail: String },

    /// The data loader thread failed or stopped early.
    #[error("data loader: {detail}")]
    Loader { detail: String },

    /// An argument is out of its valid range (a learning rate of NaN, a zero-sized dimension, ...).
    #[error("invalid argument to {op}: {detail}")]
    InvalidArgument { op: &'static str, detail: String },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }

    pub fn data(path: impl AsRef<std::path::Path>, detail: impl Into<String>) -> Self {
        Error::Data {
            path: path.as_ref().display().to_string(),
            detail: detail.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }
}
