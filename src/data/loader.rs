//! The loader thread: decodes, shuffles, normalizes and augments batches ahead of the trainer
//! and sends them over a bounded `flume` channel (back-pressure: `prefetch` batches ahead).
//! Batch buffers come back through a return channel, so a steady epoch allocates nothing.
//! An error or a panic in the thread arrives as an `Err` item; dropping the loader stops the
//! thread at its next batch.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Affine, ArrayDataset, Dataset};
use crate::error::{Error, Result};

/// How pixels become model inputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Normalize {
    /// x / 255, in [0, 1].
    Unit,
    /// `(x / 255 - mean[c]) / std[c]` per channel.
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
}

impl Normalize {
    /// Channel `c`'s (scale, shift): a byte b becomes b * scale + shift.
    fn channel_affine(&self, c: usize) -> (f32, f32) {
        match self {
            Normalize::Unit => (1.0 / 255.0, 0.0),
            Normalize::MeanStd { mean, std } => (1.0 / (255.0 * std[c]), -mean[c] / std[c]),
        }
    }

    /// The model inputs of one channel-planar image of `channels` planes, scaled exactly as
    /// the loader scales them.
    pub fn apply(&self, image: &[u8], channels: usize) -> Vec<f32> {
        let plane = image.len() / channels.max(1);
        image
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let (s, t) = self.channel_affine((i / plane.max(1)).min(channels - 1));
                b as f32 * s + t
            })
            .collect()
    }
}

/// Training-time augmentation (the CIFAR recipe): a random crop of the image padded with
/// `crop_padding` zero pixels on each side, and a horizontal flip with probability 1/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    pub crop_padding: usize,
    pub flip: bool,
}

impl Augment {
    /// 4-pixel padded random crops and horizontal flips.
    pub fn cifar() -> Self {
        Augment {
            crop_padding: 4,
            flip: true,
        }
    }

    /// One sample's draws: (row shift, column shift, flip). Every sample of a batch takes
    /// the same draws whether it is decoded or only skipped (a shard's loader skips the other
    /// ranks' rows), so the streams stay aligned across ranks.
    pub(crate) fn draw(&self, rng: &mut ChaCha8Rng) -> (i64, i64, bool) {
        let p = self.crop_padding as i64;
        let dy = rng.random_range(-p..=p);
        let dx = rng.random_range(-p..=p);
        (dy, dx, self.flip && rng.random_bool(0.5))
    }
}

/// One rank's part of every batch in data-parallel training (ARCHITECTURE.md,
/// "Data parallelism"): each global batch, drawn from the same seeded shuffle on every rank,
/// is cut into contiguous row ranges in rank order, the first `rows % ranks` ranks taking one
/// row more. A batch with fewer rows than ranks goes whole to rank 0 (the others get empty
/// batches), so every rank handles the last partial batch the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub ranks: usize,
}

impl Shard {
    /// The rows of a `rows`-row global batch this rank takes.
    pub fn range(&self, rows: usize) -> std::ops::Range<usize> {
        if rows < self.ranks {
            return if self.rank == 0 { 0..rows } else { 0..0 };
        }
        let (per, extra) = (rows / self.ranks, rows % self.ranks);
        let start = self.rank * per + self.rank.min(extra);
        start..start + per + usize::from(self.rank < extra)
    }
}

/// What the loader streams and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Reshuffle every epoch (from `seed` and the epoch number).
    pub shuffle: bool,
    pub seed: u64,
    /// Skip the last batch of an epoch when it is partial.
    pub drop_last: bool,
    /// Batches decoded ahead of the consumer (the channel's bound).
    pub prefetch: usize,
    pub epochs: usize,
    /// The number of the first epoch streamed (shuffles and augmentation are seeded by
    /// (seed, epoch number), so a resumed run sees the batches an uninterrupted one would).
    pub first_epoch: usize,
    /// How image pixels become inputs ([`Dataset`] only).
    pub normalize: Normalize,
    /// Image augmentation ([`Dataset`] only).
    pub augment: Option<Augment>,
    /// Per-feature scaling of numeric inputs ([`ArrayDataset`] only).
    pub feature_scaling: Option<Arc<Affine>>,
    /// Per-column scaling of real-valued targets ([`ArrayDataset`] only).
    pub target_scaling: Option<Arc<Affine>>,
    /// Stream only this rank's rows of each batch (`None`: whole batches).
    pub shard: Option<Shard>,
}

impl LoaderConfig {
    /// Shuffled batches of `batch_size` for one epoch, inputs in [0, 1], 4 batches ahead.
    pub fn new(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed: 0,
            drop_last: false,
            prefetch: 4,
            epochs: 1,
            first_epoch: 0,
            normalize: Normalize::Unit,
            augment: None,
            feature_scaling: None,
            target_scaling: None,
            shard: None,
        }
    }
}

/// The kind of targets a dataset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Class indices below this count.
    Classes(usize),
    /// Rows of this many real values.
    Values(usize),
}

/// What the loader streams from: an in-memory dataset that checks a configuration against
/// itself and writes the samples a batch selects. Implemented by [`Dataset`] (u8 images) and
/// [`ArrayDataset`] (f32 arrays).
pub trait Samples: std::fmt::Debug + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// What the samples are trained towards.
    fn target_kind(&self) -> TargetKind;

    /// The numeric dataset behind these samples, if they are one.
    fn as_arrays(&self) -> Option<&ArrayDataset> {
        None
    }

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Model inputs per sample.
    fn sample_len(&self) -> usize;

    /// One sample's shape (images: (channels, height, width)); flat by default.
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.sample_len()]
    }

    /// Checks the data, then `cfg` against them (called once, before the thread starts).
    fn check(&self, cfg: &LoaderConfig) -> Result<()>;

    /// Fills `batch` (inputs, and labels or targets) with samples `ids`; `rng` drives
    /// augmentation and is seeded per epoch.
    fn write_batch(
        &self,
        ids: &[usize],
        cfg: &LoaderConfig,
        rng: &mut ChaCha8Rng,
        batch: &mut Batch,
    ) -> Result<()>;
}

/// One batch: `len` samples of `features` f32 inputs each, and their labels (class indices)
/// or targets (real-valued rows), whichever the data hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// (len, features), row-major.
    pub inputs: Vec<f32>,
    /// (len) class indices; empty when the data hold real-valued targets.
    pub labels: Vec<u32>,
    /// (len, target width), row-major; empty when the data hold class indices.
    pub targets: Vec<f32>,
    pub len: usize,
    pub epoch: usize,
    /// Position of the batch within its epoch.
    pub index: usize,
}

type FillFn<'a> = dyn FnMut(usize, usize, &mut Batch) -> Result<()> + Send + 'a;

/// A running loader. Iterate it (or call [`Loader::next_batch`]) for batches; give buffers
/// back with [`Loader::recycle`].
pub struct Loader {
    rx: flume::Receiver<Result<Batch>>,
    recycle: flume::Sender<Batch>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    batches_per_epoch: usize,
    total: usize,
    received: usize,
    failed: bool,
}

impl Loader {
    /// Streams `indices` of `dataset` (all of it when `None`, or a split) as `cfg` says.
    pub fn new<S: Samples + Send + 'static>(
        dataset: Arc<S>,
        indices: Option<Vec<usize>>,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        let (batches, fill) = Self::plan(dataset, indices, cfg.clone())?;
        Ok(Self::spawn(batches, cfg.epochs, cfg.prefetch, fill, |f| {
            Some(
                thread_builder()
                    .spawn(f)
                    .expect("spawning the loader thread"),
            )
        }))
    }

    /// [`Loader::new`] over a borrowed dataset, with its thread in `scope`: nothing is copied,
    /// and the scope joins the thread when it ends (dropping the loader stops it first).
    ///
    /// ```no_run
    /// # use wgtrain::data::{Dataset, Loader, LoaderConfig};
    /// # fn demo(data: &Dataset) -> wgtrain::Result<()> {
    /// std::thread::scope(|scope| {
    ///     for batch in Loader::scoped(scope, data, None, LoaderConfig::new(32))? {
    ///         let batch = batch?;
    ///         // ... train on batch.inputs and batch.labels
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn scoped<'scope, 'env, S: Samples + ?Sized>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        dataset: &'env S,
        indices: Option<Vec<usize>>,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        let (batches, fill) = Self::plan(dataset, indices, cfg.clone())?;
        Ok(Self::spawn(batches, cfg.epochs, cfg.prefetch, fill, |f| {
            thread_builder()
                .spawn_scoped(scope, f)
                .expect("spawning the loader thread");
            None
        }))
    }

    /// Checks the configuration and builds the batch filler: (batches per epoch, filler).
    fn plan<'a, D, S>(
        dataset: D,
        indices: Option<Vec<usize>>,
        cfg: LoaderConfig,
    ) -> Result<(usize, Box<FillFn<'a>>)>
    where
        D: std::ops::Deref<Target = S> + Send + 'a,
        S: Samples + ?Sized + 'a,
    {
        if cfg.batch_size == 0 {
            return Err(Error::invalid("loader", "batch_size is 0"));
        }
        if let Some(s) = cfg.shard {
            if s.rank >= s.ranks {
                return Err(Error::invalid(
                    "loader",
                    format!("shard rank {} is not below its {} ranks", s.rank, s.ranks),
                ));
            }
        }
        dataset.check(&cfg)?;
        let indices = indices.unwrap_or_else(|| (0..dataset.len()).collect());
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(Error::invalid(
                "loader",
                format!(
                    "index {bad} is outside the dataset of {} samples",
                    dataset.len()
                ),
            ));
        }
        let n = indices.len();
        let batches = if cfg.drop_last {
            n / cfg.batch_size
        } else {
            n.div_ceil(cfg.batch_size)
        };
        let first = cfg.first_epoch;
        let mut fill = dataset_filler(dataset, indices, cfg);
        let shifted = move |epoch: usize, index: usize, batch: &mut Batch| {
            fill(epoch + first, index, batch)?;
            batch.epoch = epoch + first;
            Ok(())
        };
        Ok((batches, Box::new(shifted)))
    }

    /// Runs `fill(epoch, index, batch)` on the loader thread for `batches_per_epoch` batches of
    /// each of `epochs` epochs: the general form, for data that is not a [`Dataset`].
    pub fn from_fn(
        batches_per_epoch: usize,
        epochs: usize,
        prefetch: usize,
        fill: impl FnMut(usize, usize, &mut Batch) -> Result<()> + Send + 'static,
    ) -> Self {
        Self::spawn(batches_per_epoch, epochs, prefetch, Box::new(fill), |f| {
            Some(
                thread_builder()
                    .spawn(f)
                    .expect("spawning the loader thread"),
            )
        })
    }

    /// Starts the thread body with `start` (a plain or a scoped thread), which returns the
    /// handle to join on drop, if any.
    fn spawn<'a>(
        batches_per_epoch: usize,
        epochs: usize,
        prefetch: usize,
        mut fill: Box<FillFn<'a>>,
        start: impl FnOnce(Box<dyn FnOnce() + Send + 'a>) -> Option<JoinHandle<()>>,
    ) -> Self {
        let (tx, rx) = flume::bounded(prefetch.max(1));
        let (recycle, recycled) = flume::unbounded::<Batch>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let handle = start(Box::new(move || {
            lower_thread_priority();
            let tx_panic = tx.clone();
            let run = catch_unwind(AssertUnwindSafe(|| {
                for epoch in 0..epochs {
                    for index in 0..batches_per_epoch {
                        if stop_thread.load(Ordering::Relaxed) {
                            return;
                        }
                        let mut batch = recycled.try_recv().unwrap_or_default();
                        batch.epoch = epoch;
                        batch.index = index;
                        let item = fill(epoch, index, &mut batch).map(|_| batch);
                        let failed = item.is_err();
                        // A send error means the consumer is gone: stop quietly.
                        if tx.send(item).is_err() || failed {
                            return;
                        }
                    }
                }
            }));
            if let Err(panic) = run {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let _ = tx_panic.send(Err(Error::Loader {
                    detail: format!("the loader thread panicked: {msg}"),
                }));
            }
        }));
        Loader {
            rx,
            recycle,
            stop,
            handle,
            batches_per_epoch,
            total: batches_per_epoch * epochs,
            received: 0,
            failed: false,
        }
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }

    /// The next batch; `None` once every epoch has been delivered (or after an error).
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.failed || self.received == self.total {
            return None;
        }
        match self.rx.recv() {
            Ok(Ok(batch)) => {
                self.received += 1;
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.failed = true;
                Some(Err(e))
            }
            Err(flume::RecvError::Disconnected) => {
                self.failed = true;
                Some(Err(Error::Loader {
                    detail: format!(
                        "the loader thread stopped after {} of {} batches",
                        self.received, self.total
                    ),
                }))
            }
        }
    }

    /// Returns a batch's buffers for reuse by the thread.
    pub fn recycle(&self, batch: Batch) {
        let _ = self.recycle.send(batch);
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a thread waiting on a full channel, then wait for it to finish its batch.
        while self.rx.try_recv().is_ok() {}
        let (_, dead) = flume::bounded(1);
        self.rx = dead;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// SplitMix64: decorrelates the per-epoch seeds derived from one user seed.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn thread_builder() -> std::thread::Builder {
    std::thread::Builder::new().name("wgtrain-loader".into())
}

fn dataset_filler<D, S>(
    data: D,
    indices: Vec<usize>,
    cfg: LoaderConfig,
) -> impl FnMut(usize, usize, &mut Batch) -> Result<()> + Send
where
    D: std::ops::Deref<Target = S> + Send,
    S: Samples + ?Sized,
{
    let mut order = indices;
    let mut augment_rng = ChaCha8Rng::seed_from_u64(0);
    move |epoch, index, batch| {
        if index == 0 {
            if cfg.shuffle {
                order.sort_unstable();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                    cfg.seed,
                    epoch as u64,
                    1,
                )));
            }
            augment_rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch as u64, 2));
        }
        let start = index * cfg.batch_size;
        let global = &order[start..(start + cfg.batch_size).min(order.len())];
        let Some(shard) = cfg.shard else {
            batch.len = global.len();
            return data.write_batch(global, &cfg, &mut augment_rng, batch);
        };
        let rows = shard.range(global.len());
        // The other ranks' rows take their augmentation draws here, undecoded.
        let skip = |n: usize, rng: &mut ChaCha8Rng| {
            if let Some(a) = cfg.augment {
                for _ in 0..n {
                    let _ = a.draw(rng);
                }
            }
        };
        skip(rows.start, &mut augment_rng);
        batch.len = rows.len();
        data.write_batch(&global[rows.clone()], &cfg, &mut augment_rng, batch)?;
        skip(global.len() - rows.end, &mut augment_rng);
        Ok(())
    }
}

/// A shared dataset streams as the dataset itself (`fit(&arc, ..)` works as `fit(&*arc, ..)`).
impl<T: Samples + ?Sized + Send> Samples for Arc<T> {
    fn len(&self) -> usize {
        (**self).len()
    }

    fn target_kind(&self) -> TargetKind {
        (**self).target_kind()
    }

    fn as_arrays(&self) -> Option<&ArrayDataset> {
        (**self).as_arrays()
    }

    fn sample_len(&self) -> usize {
        (**self).sample_len()
    }

    fn sample_shape(&self) -> Vec<usize> {
        (**self).sample_shape()
    }

    fn check(&self, cfg: &LoaderConfig) -> Result<()> {
        (**self).check(cfg)
    }

    fn write_batch(
        &self,
        ids: &[usize],
        cfg: &LoaderConfig,
        rng: &mut ChaCha8Rng,
        batch: &mut Batch,
    ) -> Result<()> {
        (**self).write_batch(ids, cfg, rng, batch)
    }
}

impl Samples for Dataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::Classes(self.num_classes)
    }

    fn sample_len(&self) -> usize {
        self.features()
    }

    fn sample_shape(&self) -> Vec<usize> {
        vec![self.channels, self.height, self.width]
    }

    fn check(&self, cfg: &LoaderConfig) -> Result<()> {
        self.validate()?;
        if cfg.feature_scaling.is_some() || cfg.target_scaling.is_some() {
            return Err(Error::invalid(
                "loader",
                "feature and target scaling apply to numeric arrays; images are scaled by \
                 `normalize`",
            ));
        }
        if let Some(a) = &cfg.augment {
            let side = self.height.min(self.width);
            if a.crop_padding >= side {
                return Err(Error::invalid(
                    "loader",
                    format!(
                        "augmentation crop padding {} is not smaller than the {}x{} image",
                        a.crop_padding, self.height, self.width
                    ),
                ));
            }
        }
        if let Normalize::MeanStd { mean, std } = &cfg.normalize {
            let finite = mean.iter().chain(std).all(|v| v.is_finite());
            if mean.len() != self.channels
                || std.len() != self.channels
                || std.contains(&0.0)
                || !finite
            {
                return Err(Error::invalid(
                    "loader",
                    format!(
                        "normalization needs {} finite means and finite non-zero stds, got \
                         {mean:?} / {std:?}",
                        self.channels
                    ),
                ));
            }
        }
        Ok(())
    }

    fn write_batch(
        &self,
        ids: &[usize],
        cfg: &LoaderConfig,
        rng: &mut ChaCha8Rng,
        batch: &mut Batch,
    ) -> Result<()> {
        let (c, h, w) = (self.channels, self.height, self.width);
        let plane = h * w;
        let features = self.features();
        batch.inputs.resize(ids.len() * features, 0.0);
        batch.labels.clear();
        batch.targets.clear();
        for (slot, &i) in ids.iter().enumerate() {
            batch.labels.push(self.labels[i] as u32);
            let src = self.image(i);
            let dst = &mut batch.inputs[slot * features..(slot + 1) * features];
            let (dy, dx, flip) = match cfg.augment {
                Some(a) => a.draw(rng),
                None => (0, 0, false),
            };
            for ch in 0..c {
                let (s, b) = cfg.normalize.channel_affine(ch);
                for y in 0..h {
                    let sy = y as i64 + dy;
                    for x in 0..w {
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = xx as i64 + dx;
                        // Outside the image is the zero padding (before normalization).
                        let v = if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                            src[ch * plane + sy as usize * w + sx as usize]
                        } else {
                            0
                        };
                        dst[ch * plane + y * w + x] = v as f32 * s + b;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Samples for ArrayDataset {
    fn len(&self) -> usize {
        ArrayDataset::len(self)
    }

    fn target_kind(&self) -> TargetKind {
        match &self.targets {
            super::Targets::Classes { classes, .. } => TargetKind::Classes(*classes),
            super::Targets::Values { width, .. } => TargetKind::Values(*width),
        }
    }

    fn as_arrays(&self) -> Option<&ArrayDataset> {
        Some(self)
    }

    fn sample_len(&self) -> usize {
        ArrayDataset::sample_len(self)
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.sample_shape.clone()
    }

    fn check(&self, cfg: &LoaderConfig) -> Result<()> {
        self.validate()?;
        if cfg.augment.is_some() || cfg.normalize != Normalize::Unit {
            return Err(Error::invalid(
                "loader",
                "`normalize` and `augment` apply to u8 images; numeric arrays are scaled by \
                 feature_scaling (FitConfig::scale_features)",
            ));
        }
        if let Some(a) = &cfg.feature_scaling {
            a.check("feature scaling", self.sample_len())?;
        }
        if let Some(a) = &cfg.target_scaling {
            match &self.targets {
                super::Targets::Values { width, .. } => a.check("target scaling", *width)?,
                super::Targets::Classes { .. } => {
                    return Err(Error::invalid(
                        "loader",
                        "target scaling applies to real-valued targets, these are class indices",
                    ))
                }
            }
        }
        Ok(())
    }

    fn write_batch(
        &self,
        ids: &[usize],
        cfg: &LoaderConfig,
        _rng: &mut ChaCha8Rng,
        batch: &mut Batch,
    ) -> Result<()> {
        let f = self.sample_len();
        batch.inputs.clear();
        for &i in ids {
            let row = &self.features[i * f..(i + 1) * f];
            match &cfg.feature_scaling {
                None => batch.inputs.extend_from_slice(row),
                Some(a) => batch.inputs.extend(a.apply_row(row)),
            }
        }
        batch.labels.clear();
        batch.targets.clear();
        match &self.targets {
            super::Targets::Classes { labels, .. } => {
                batch.labels.extend(ids.iter().map(|&i| labels[i]))
            }
            super::Targets::Values { values, width } => {
                for &i in ids {
                    let row = &values[i * width..(i + 1) * width];
                    match &cfg.target_scaling {
                        None => batch.targets.extend_from_slice(row),
                        Some(a) => batch.targets.extend(a.apply_row(row)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Lowers the calling thread's priority by 10 nice levels (at most 19), so that waking the loader never preempts
/// the training thread. Each `recv` that frees a slot in the full channel wakes the loader,
/// and at equal priority the scheduler often ran it at once in the training thread's place:
/// on lavapipe (2 cores, whose worker threads take both during a step) that cost
/// 784-512-512-10 0.05-0.34 s per Fashion-MNIST epoch of waiting with batches ready, and
/// 0.005-0.012 s at nice +10. The loader needs ~2% of a core, which it still gets.
/// Linux only, where niceness is per thread (elsewhere it would apply to the whole process).
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority/setpriority only read their integer arguments; `who` 0 is the calling thread
    // on Linux. Failure (never expected when raising niceness) leaves the priority as is.
    unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (current + 10).min(19));
    }
}
