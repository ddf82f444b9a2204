//! MNIST and its same-format siblings (Fashion-MNIST, KMNIST, EMNIST): the four standard files,
//! raw or `.gz`.

use std::path::{Path, PathBuf};

use super::{read_idx, Dataset};
use crate::error::{Error, Result};

/// The standard file names, without `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Where Debian's `dataset-fashion-mnist` package puts Fashion-MNIST.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Train and test splits.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// Finds `name` or `name.gz` in `dir`.
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::data(
        dir,
        format!("missing {name} (or {name}.gz); MNIST-style data needs the four standard files"),
    ))
}

/// Loads both splits from `dir` with `num_classes` classes (10 for MNIST, Fashion-MNIST and
/// KMNIST) and the given class names.
pub fn load_dir(dir: &Path, num_classes: usize, class_names: Vec<String>) -> Result<Splits> {
    let train = load_pair(
        &find_file(dir, TRAIN_IMAGES)?,
        &find_file(dir, TRAIN_LABELS)?,
        num_classes,
        class_names.clone(),
    )?;
    let test = load_pair(
        &find_file(dir, TEST_IMAGES)?,
        &find_file(dir, TEST_LABELS)?,
        num_classes,
        class_names,
    )?;
    Ok(Splits { train, test })
}

/// Loads digits MNIST from `dir`.
pub fn load_mnist(dir: &Path) -> Result<Splits> {
    load_dir(dir, 10, super::digit_names())
}

/// Loads Fashion-MNIST from `dir`.
pub fn load_fashion_mnist(dir: &Path) -> Result<Splits> {
    load_dir(
        dir,
        10,
        super::FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

/// Loads one image file and its label file and checks that they belong together.
pub fn load_pair(
    images: &Path,
    labels: &Path,
    num_classes: usize,
    class_names: Vec<String>,
) -> Result<Dataset> {
    let img = read_idx(images)?;
    if img.dims.len() != 3 {
        return Err(Error::data(
            images,
            format!(
                "image files have 3 dimensions (count, rows, columns), found {:?}",
                img.dims
            ),
        ));
    }
    let lab = read_idx(labels)?;
    if lab.dims.len() != 1 {
        return Err(Error::data(
            labels,
            format!("label files have 1 dimension (count), found {:?}", lab.dims),
        ));
    }
    if img.dims[0] != lab.dims[0] {
        return Err(Error::data(
            labels,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                images.display()
            ),
        ));
    }
    if let Some((i, &l)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(Error::data(
            labels,
            format!("label {l} at index {i} is outside 0..{num_classes}"),
        ));
    }
    Ok(Dataset {
        images: img.data,
        labels: lab.data,
        channels: 1,
        height: img.dims[1],
        width: img.dims[2],
        num_classes,
        class_names,
    })
}
