//! Downloads from public mirrors with SHA-256 verification. A file is streamed to a temporary
//! `.<name>.<random>.part` beside it, hashed on the way, checked for size and digest, synced
//! and only then renamed to its name: a failed, cut or corrupted download never leaves a file that later loads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One file of a dataset, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: &'static str,
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: &'static str,
}

/// A dataset's files and the mirrors that serve them (tried in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub name: &'static str,
    pub mirrors: &'static [&'static str],
    pub files: &'static [RemoteFile],
}

/// MNIST, from the mirrors PyTorch and TensorFlow use.
pub const MNIST: Source = Source {
    name: "MNIST",
    mirrors: &[
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    files: &[
        RemoteFile {
            name: "train-images-idx3-ubyte.gz",
            size: 9_912_422,
            sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        },
        RemoteFile {
            name: "train-labels-idx1-ubyte.gz",
            size: 28_881,
            sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        },
        RemoteFile {
            name: "t10k-images-idx3-ubyte.gz",
            size: 1_648_877,
            sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        },
        RemoteFile {
            name: "t10k-labels-idx1-ubyte.gz",
            size: 4_542,
            sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ],
};

/// CIFAR-10's binary version, from its authors' site.
pub const CIFAR10: Source = Source {
    name: "CIFAR-10",
    mirrors: &["https://www.cs.toronto.edu/~kriz/"],
    files: &[RemoteFile {
        name: "cifar-10-binary.tar.gz",
        size: 170_052_171,
        sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    }],
};

/// How long a download may wait: to connect, and for each read of the transfer (a server that
/// stops sending fails after `read_timeout`, however long the whole file takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: std::time::Duration,
    pub read: std::time::Duration,
}

impl Default for Timeouts {
    /// 30 s to connect, 60 s without data.
    fn default() -> Self {
        Timeouts {
            connect: std::time::Duration::from_secs(30),
            read: std::time::Duration::from_secs(60),
        }
    }
}

/// Makes sure every file of `source` is in `dir` with the right digest, downloading what is
/// missing, with the default [`Timeouts`]. Returns the files' paths.
pub fn fetch(source: &Source, dir: &Path, progress: bool) -> Result<Vec<PathBuf>> {
    fetch_with(source, dir, progress, Timeouts::default())
}

/// [`fetch`] with its own timeouts.
pub fn fetch_with(
    source: &Source,
    dir: &Path,
    progress: bool,
    timeouts: Timeouts,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::new();
    for file in source.files {
        let dest = dir.join(file.name);
        if dest.is_file() && sha256_file(&dest)? == file.sha256 {
            paths.push(dest);
            continue;
        }
        let mut failures = Vec::new();
        let mut done = false;
        for mirror in source.mirrors {
            let url = format!("{mirror}{}", file.name);
            match fetch_url(
                &url,
                &dest,
                file.sha256,
                Some(file.size),
                progress,
                timeouts,
            ) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if !done {
            return Err(Error::Download {
                what: format!("{} ({})", source.name, file.name),
                detail: format!(
                    "every mirror failed: [{}]. Without internet access, put the files {} \
                     in {} yourself",
                    failures.join("; "),
                    source
                        .files
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                    dir.display()
                ),
            });
        }
        paths.push(dest);
    }
    Ok(paths)
}

/// Downloads `url` to `dest` if its SHA-256 is `sha256` (and its size `size`, when given),
/// failing with an error naming `url` when connecting or any read takes longer than
/// `timeouts` allow. Nothing is left behind on failure.
pub fn fetch_url(
    url: &str,
    dest: &Path,
    sha256: &str,
    size: Option<u64>,
    progress: bool,
    timeouts: Timeouts,
) -> Result<()> {
    crate::atomic_file::write_atomic(dest, |file, part| {
        stream_to(url, file, part, sha256, size, progress, timeouts)
    })
}

fn stream_to(
    url: &str,
    file: &mut std::fs::File,
    part: &Path,
    sha256: &str,
    size: Option<u64>,
    progress: bool,
    timeouts: Timeouts,
) -> Result<()> {
    let fail = |detail: String| Error::Download {
        what: url.to_string(),
        detail,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(timeouts.connect))
        .timeout_per_read(Some(timeouts.read))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let declared = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expected = size.or(declared);
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(expected.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("the progress template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(format!("transfer broke off after {total} bytes: {e}"))),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| Error::io(part, e))?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    if let Some(want) = expected {
        if total != want {
            return Err(fail(format!(
                "got {total} bytes, expected {want}: the transfer was cut"
            )));
        }
    }
    let digest = hex(&hasher.finalize());
    if digest != sha256 {
        return Err(fail(format!(
            "SHA-256 {digest} does not match the published {sha256}"
        )));
    }
    Ok(())
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
