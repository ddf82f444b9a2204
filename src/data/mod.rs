//! Datasets: MNIST-style IDX files and CIFAR-10 binary batches parsed strictly into memory,
//! a loader thread that streams shuffled, normalized batches, downloads with checksums, and
//! pictures (sample grids, images loaded for prediction).

mod arrays;
pub mod cifar10;
pub mod download;
mod idx;
pub mod loader;
pub mod mnist;
pub mod picture;
pub mod tabular;

pub use arrays::{to_categorical, Affine, ArrayDataset, Scaling, Targets};
pub use idx::{parse_idx, read_idx, IdxArray};
pub use loader::{Augment, Batch, Loader, LoaderConfig, Normalize, Samples, Shard, TargetKind};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Error, Result};

/// An in-memory image classification dataset: u8 pixels, channel-planar per image
/// (channels, height, width), and one label per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// (len, channels, height, width) bytes.
    pub images: Vec<u8>,
    /// (len) labels, each below `num_classes`.
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// A display name for each class.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// The samples at `indices`, in that order (each index below [`Dataset::len`]).
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(
                "select",
                format!("sample {i} of a dataset of {}", self.len()),
            ));
        }
        Ok(Dataset {
            images: indices
                .iter()
                .flat_map(|&i| self.image(i).iter().copied())
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone()
        })
    }

    /// The first `n` samples (all of them when there are fewer), for quick runs on a subset.
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.features()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone()
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes (and model inputs) per sample: channels * height * width.
    pub fn features(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let f = self.features();
        &self.images[i * f..(i + 1) * f]
    }

    /// Checks what the fields must agree on: at least one class and one feature, exactly
    /// `len * features` pixels (computed without overflow), every label below `num_classes`,
    /// and a name per class when names are given. The loader, `fit`, `evaluate` and
    /// `class_counts` call it before using the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::invalid("dataset", detail));
        if self.num_classes == 0 {
            return bad("num_classes is 0: a dataset needs at least one class".into());
        }
        let features = self
            .channels
            .checked_mul(self.height)
            .and_then(|f| f.checked_mul(self.width));
        let Some(features) = features.filter(|&f| f > 0) else {
            return bad(format!(
                "channels x height x width ({} x {} x {}) must be at least 1 and fit in memory",
                self.channels, self.height, self.width
            ));
        };
        let want = self.labels.len().checked_mul(features);
        if want != Some(self.images.len()) {
            return bad(format!(
                "{} labels of {features} pixels each need {} pixel bytes, got {}",
                self.labels.len(),
                want.map_or("more than addressable".into(), |w| w.to_string()),
                self.images.len()
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.num_classes)
        {
            return bad(format!(
                "label {l} of sample {i} is not below num_classes ({})",
                self.num_classes
            ));
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.num_classes {
            return bad(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            ));
        }
        Ok(())
    }

    /// How many samples each class has (after [`Dataset::validate`]).
    pub fn class_counts(&self) -> Result<Vec<usize>> {
        self.validate()?;
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        Ok(counts)
    }

    /// A validation split as Keras makes it: the last `fraction` of the samples is held out.
    /// Returns (train indices, validation indices).
    pub fn split_last(&self, fraction: f64) -> Result<(Vec<usize>, Vec<usize>)> {
        split_last(self.len(), fraction)
    }

    /// A seeded random validation split of `fraction` of the samples.
    pub fn split_seeded(&self, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        split_seeded(self.len(), fraction, seed)
    }
}

/// Keras' validation split of `len` samples: the last `fraction` is held out.
/// Returns (kept indices, held-out indices).
pub fn split_last(len: usize, fraction: f64) -> Result<(Vec<usize>, Vec<usize>)> {
    let cut = split_point(len, fraction)?;
    Ok(((0..cut).collect(), (cut..len).collect()))
}

/// A seeded random split of `len` samples holding out `fraction` of them (the same seed gives
/// the same split). Returns (kept indices, held-out indices).
pub fn split_seeded(len: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    let cut = split_point(len, fraction)?;
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let held_out = order.split_off(cut);
    Ok((order, held_out))
}

fn split_point(len: usize, fraction: f64) -> Result<usize> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::invalid(
            "validation split",
            format!("fraction {fraction} is not in [0, 1)"),
        ));
    }
    let held_out = (len as f64 * fraction).round() as usize;
    if fraction > 0.0 && held_out == 0 {
        return Err(Error::invalid(
            "validation split",
            format!(
                "fraction {fraction} of {len} samples holds out none; use a larger fraction \
                 or no split"
            ),
        ));
    }
    Ok(len - held_out)
}

/// Class names for the ten digits.
pub fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
