//! CIFAR-10 binary batches: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, each
//! a sequence of 3,073-byte records (a label byte, then 3x32x32 channel-planar pixels).

use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{Error, Result};

/// Bytes per record: 1 label + 3 * 32 * 32 pixels.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// The training batch files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder the official archive unpacks to.
pub const ARCHIVE_DIR: &str = "cifar-10-batches-bin";
/// Class names, in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Train and test splits.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// The folder holding the batch files: `dir` itself or `dir/cifar-10-batches-bin`.
pub fn batches_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(ARCHIVE_DIR);
    if !dir.join(TEST_FILE).is_file() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Finds and loads CIFAR-10 as the examples do: from `dir` when given, else from
/// `./data/cifar10` when it holds the batches, else (with `download`) fetched there first,
/// else an error saying how to get it.
pub fn locate(dir: Option<&Path>, download: bool, progress: bool) -> Result<Splits> {
    if let Some(dir) = dir {
        return load(dir);
    }
    let local = Path::new("data/cifar10");
    if batches_dir(local).join(TEST_FILE).is_file() {
        return load(local);
    }
    if download {
        return load(&self::download(local, progress)?);
    }
    Err(crate::Error::Data {
        path: local.display().to_string(),
        detail: "CIFAR-10 is not here: pass --data DIR with the binary batches, rerun with \
                 --download to fetch it into ./data/cifar10, or get cifar-10-binary.tar.gz from \
                 https://www.cs.toronto.edu/~kriz/cifar.html and unpack it there"
            .into(),
    })
}

/// Loads both splits from `dir` (or `dir/cifar-10-batches-bin`).
pub fn load(dir: &Path) -> Result<Splits> {
    let dir = batches_dir(dir);
    let train: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    Ok(Splits {
        train: load_files(&train)?,
        test: load_files(&[dir.join(TEST_FILE)])?,
    })
}

/// Loads and concatenates batch files.
pub fn load_files(paths: &[PathBuf]) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        if !path.is_file() {
            return Err(Error::data(
                path,
                "missing CIFAR-10 batch file; get the binary version (cifar-10-binary.tar.gz) \
                 with `wgtrain::data::cifar10::download` or from https://www.cs.toronto.edu/~kriz/cifar.html",
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        parse_records(&bytes, path, &mut images, &mut labels)?;
    }
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        num_classes: 10,
        class_names: CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

/// Appends the records in `bytes` to `images` and `labels`; nothing is appended on error.
pub fn parse_records(
    bytes: &[u8],
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::data(path, "empty batch file"));
    }
    if !bytes.len().is_multiple_of(RECORD) {
        let whole = bytes.len() / RECORD;
        return Err(Error::data(
            path,
            format!(
                "record {} is cut short: {} bytes after {whole} whole {RECORD}-byte records",
                whole,
                bytes.len() % RECORD
            ),
        ));
    }
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] >= 10 {
            return Err(Error::data(
                path,
                format!("record {i} has label {}, outside 0..10", rec[0]),
            ));
        }
    }
    for rec in bytes.chunks_exact(RECORD) {
        labels.push(rec[0]);
        images.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Downloads the official binary archive (checksum-verified) into `dir` and unpacks its batch
/// files into `dir/cifar-10-batches-bin`. Files already present and valid are kept.
pub fn download(dir: &Path, progress: bool) -> Result<PathBuf> {
    let out = dir.join(ARCHIVE_DIR);
    let all_present = TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .all(|f| out.join(f).is_file());
    if all_present {
        return Ok(out);
    }
    let archive =
        super::download::fetch(&super::download::CIFAR10, dir, progress).map_err(|e| match e {
            Error::Download { what, detail } => Error::Download {
                what,
                detail: format!("{detail}, or its six .bin batch files in {}", out.display()),
            },
            other => other,
        })?;
    extract(&archive[0], &out)?;
    Ok(out)
}

/// Unpacks the `.bin` batch files of a `cifar-10-binary.tar.gz` into `out`, each written to a
/// temporary name and renamed, so an interrupted extraction leaves no half file.
pub fn extract(archive: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| Error::io(archive, e))?;
    let mut found = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io(archive, e))?;
        let name = entry
            .path()
            .map_err(|e| Error::io(archive, e))?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(TRAIN_FILES.contains(&name.as_str()) || name == TEST_FILE) {
            continue;
        }
        let dest = out.join(&name);
        let tmp = out.join(format!(".{name}.part"));
        let result = std::fs::File::create(&tmp)
            .and_then(|mut f| std::io::copy(&mut entry, &mut f).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &dest));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&dest, e));
        }
        found += 1;
    }
    if found != 6 {
        return Err(Error::data(
            archive,
            format!("the archive held {found} of the 6 CIFAR-10 batch files"),
        ));
    }
    Ok(())
}
