//! Data pipeline: strict parsers (round trips through files in the exact real formats, and
//! corrupted variants each rejected with a specific error), the loader thread, pictures, and
//! downloads against a local HTTP server.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wgtrain::data::{
    self, cifar10, download, mnist, picture, Augment, Dataset, Loader, LoaderConfig, Normalize,
    Shard,
};
use wgtrain::Error;

fn idx_bytes(type_code: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A small MNIST-format split: `n` images of `rows` x `cols` and labels i % 10.
fn mnist_files(dir: &Path, prefix: &str, n: u32, compress: bool) -> (Vec<u8>, Vec<u8>) {
    let (rows, cols) = (5u32, 4u32);
    let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let img = idx_bytes(0x08, &[n, rows, cols], &pixels);
    let lab = idx_bytes(0x08, &[n], &labels);
    let (ext, img, lab) = if compress {
        (".gz", gz(&img), gz(&lab))
    } else {
        ("", img, lab)
    };
    write(dir, &format!("{prefix}-images-idx3-ubyte{ext}"), &img);
    write(dir, &format!("{prefix}-labels-idx1-ubyte{ext}"), &lab);
    (pixels, labels)
}

#[test]
fn mnist_round_trip_raw_and_gzip() {
    for compress in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (px, lb) = mnist_files(dir.path(), "train", 23, compress);
        mnist_files(dir.path(), "t10k", 7, compress);
        let s = mnist::load_mnist(dir.path()).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (23, 7));
        assert_eq!((s.train.height, s.train.width, s.train.channels), (5, 4, 1));
        assert_eq!(s.train.images, px);
        assert_eq!(s.train.labels, lb);
    }
}

/// Writes `bytes` as an image file next to a valid label file and returns the error text.
fn image_file_error(bytes: &[u8], name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let images = write(dir.path(), name, bytes);
    let labels = write(dir.path(), "l", &idx_bytes(0x08, &[2], &[0, 1]));
    let err = mnist::load_pair(&images, &labels, 10, data::digit_names()).unwrap_err();
    assert!(
        matches!(err, Error::Data { .. } | Error::Io { .. }),
        "{err:?}"
    );
    err.to_string()
}

#[test]
fn corrupt_files_are_rejected_with_specific_errors() {
    let good = idx_bytes(0x08, &[2, 3, 3], &[1; 18]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad magic",
            {
                let mut b = good.clone();
                b[0] = 0x12;
                b
            },
            "bad magic",
        ),
        (
            "wrong type code",
            idx_bytes(0x0D, &[2, 3, 3], &[0; 72]),
            "type code 0x0d (f32)",
        ),
        (
            "invalid type code",
            idx_bytes(0x42, &[2, 3, 3], &[0; 18]),
            "invalid IDX type code",
        ),
        (
            "wrong dimension count",
            idx_bytes(0x08, &[2, 9], &[0; 18]),
            "3 dimensions",
        ),
        ("zero dimensions", idx_bytes(0x08, &[], &[]), "0 dimensions"),
        ("truncated header", good[..3].to_vec(), "truncated header"),
        ("truncated dims", good[..9].to_vec(), "dimension bytes"),
        (
            "truncated payload",
            good[..good.len() - 5].to_vec(),
            "truncated payload",
        ),
        (
            "trailing bytes",
            [good.clone(), vec![9, 9]].concat(),
            "2 trailing bytes",
        ),
        (
            "huge declared dims",
            idx_bytes(0x08, &[u32::MAX, u32::MAX, 2], &[0; 4]),
            "declare more than",
        ),
        (
            "zero dimension",
            idx_bytes(0x08, &[0, 3, 3], &[]),
            "include a zero",
        ),
        ("empty file", vec![], "truncated header"),
        (
            "corrupt gzip header",
            {
                let mut z = gz(&good);
                z[2] = 0;
                z
            },
            "gzip",
        ),
        (
            "gzip checksum",
            {
                let mut z = gz(&good);
                let n = z.len();
                z[n - 8] ^= 0xff;
                z
            },
            "corrupt gzip",
        ),
        (
            "gzip payload cut",
            gz(&good[..good.len() - 4]),
            "truncated payload",
        ),
        (
            "gzip trailing",
            gz(&[good.clone(), vec![1]].concat()),
            "trailing bytes",
        ),
    ];
    for (what, bytes, needle) in cases {
        let msg = image_file_error(&bytes, "images");
        assert!(msg.contains(needle), "{what}: `{msg}` lacks `{needle}`");
    }
    // Label-side problems.
    let dir = tempfile::tempdir().unwrap();
    let images = write(dir.path(), "i", &good);
    let out_of_range = write(dir.path(), "l1", &idx_bytes(0x08, &[2], &[3, 10]));
    let msg = mnist::load_pair(&images, &out_of_range, 10, data::digit_names())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("label 10 at index 1"), "{msg}");
    let count = write(dir.path(), "l2", &idx_bytes(0x08, &[3], &[1, 2, 3]));
    let msg = mnist::load_pair(&images, &count, 10, data::digit_names())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("3 labels for 2 images"), "{msg}");
    let missing = mnist::load_mnist(dir.path()).unwrap_err().to_string();
    assert!(missing.contains("train-images-idx3-ubyte"), "{missing}");
}

#[test]
fn fashion_mnist_from_the_system_package() {
    let dir = Path::new(mnist::FASHION_MNIST_SYSTEM_DIR);
    let s = mnist::load_fashion_mnist(dir).unwrap_or_else(|e| {
        panic!("Fashion-MNIST must be installed (apt-get install dataset-fashion-mnist; .ci/run does): {e}")
    });
    assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
    assert_eq!((s.train.height, s.train.width), (28, 28));
    assert_eq!(s.train.class_counts().unwrap(), vec![6_000; 10]);
    assert_eq!(s.test.class_counts().unwrap(), vec![1_000; 10]);
    assert_eq!(s.train.class_names[9], "Ankle boot");
}

fn cifar_records(n: usize, seed: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * cifar10::RECORD);
    for i in 0..n {
        v.push(((i + seed as usize) % 10) as u8);
        v.extend((0..3072).map(|j| ((i * 31 + j + seed as usize) % 256) as u8));
    }
    v
}

fn cifar_dir(records: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join(cifar10::ARCHIVE_DIR);
    std::fs::create_dir(&sub).unwrap();
    for (k, f) in cifar10::TRAIN_FILES.iter().enumerate() {
        write(&sub, f, &cifar_records(records, k as u8));
    }
    write(&sub, cifar10::TEST_FILE, &cifar_records(records, 9));
    dir
}

#[test]
fn cifar10_round_trip_and_corruptions() {
    let dir = cifar_dir(6);
    let s = cifar10::load(dir.path()).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (30, 6));
    assert_eq!(
        (s.train.channels, s.train.height, s.train.width),
        (3, 32, 32)
    );
    let first = cifar_records(6, 0);
    assert_eq!(s.train.labels[0], first[0]);
    assert_eq!(s.train.image(0), &first[1..cifar10::RECORD]);
    assert_eq!(s.train.class_names[0], "airplane");

    let sub = dir.path().join(cifar10::ARCHIVE_DIR);
    let mut cut = cifar_records(2, 0);
    cut.truncate(cifar10::RECORD + 100);
    write(&sub, "data_batch_3.bin", &cut);
    let msg = cifar10::load(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("record 1 is cut short"),
        "{msg}"
    );

    let mut bad_label = cifar_records(2, 0);
    bad_label[cifar10::RECORD] = 10;
    write(&sub, "data_batch_3.bin", &bad_label);
    let msg = cifar10::load(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("record 1 has label 10"), "{msg}");

    std::fs::remove_file(sub.join("data_batch_3.bin")).unwrap();
    let msg = cifar10::load(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn cifar10_archive_extracts_the_batches() {
    let src = cifar_dir(3);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&archive).unwrap(),
        flate2::Compression::fast(),
    ));
    tar.append_dir_all(cifar10::ARCHIVE_DIR, src.path().join(cifar10::ARCHIVE_DIR))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let out = dir.path().join("out");
    cifar10::extract(&archive, &out).unwrap();
    assert_eq!(cifar10::load(&out).unwrap().train.len(), 15);
}

fn small_dataset(n: usize) -> Arc<Dataset> {
    Arc::new(Dataset {
        images: (0..n * 4).map(|i| (i % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        channels: 1,
        height: 2,
        width: 2,
        num_classes: 10,
        class_names: data::digit_names(),
    })
}

fn collect(loader: Loader) -> Vec<data::Batch> {
    loader.map(|b| b.unwrap()).collect()
}

#[test]
fn loader_covers_every_sample_and_is_reproducible() {
    let ds = small_dataset(103);
    let cfg = LoaderConfig {
        epochs: 2,
        seed: 7,
        ..LoaderConfig::new(10)
    };
    let a = collect(Loader::new(ds.clone(), None, cfg.clone()).unwrap());
    let b = collect(Loader::new(ds.clone(), None, cfg.clone()).unwrap());
    assert_eq!(a, b, "same seed, same batches");
    assert_eq!(a.len(), 22);
    assert_eq!(a[10].len, 3, "the partial last batch is kept");
    for epoch in 0..2 {
        let mut seen: Vec<u32> = a
            .iter()
            .filter(|b| b.epoch == epoch)
            .flat_map(|b| {
                // Pixel 0 of sample i is (4i % 251): recover i to check each sample appears once.
                b.inputs
                    .chunks(4)
                    .map(|px| (px[0] * 255.0).round() as u32)
                    .collect::<Vec<_>>()
            })
            .collect();
        seen.sort();
        let mut want: Vec<u32> = (0..103).map(|i| (4 * i % 251) as u32).collect();
        want.sort();
        assert_eq!(seen, want, "epoch {epoch} delivers every sample once");
    }
    assert_ne!(a[0].labels, a[11].labels, "epochs are shuffled differently");
    let c = collect(
        Loader::new(
            ds.clone(),
            None,
            LoaderConfig {
                seed: 8,
                ..cfg.clone()
            },
        )
        .unwrap(),
    );
    assert_ne!(a[0].labels, c[0].labels, "another seed, another order");
    let dropped = collect(
        Loader::new(
            ds,
            None,
            LoaderConfig {
                drop_last: true,
                ..cfg
            },
        )
        .unwrap(),
    );
    assert_eq!(dropped.len(), 20);
    assert!(dropped.iter().all(|b| b.len == 10));
}

#[test]
fn loader_normalizes_and_recycles() {
    let ds = small_dataset(8);
    let cfg = LoaderConfig {
        shuffle: false,
        normalize: Normalize::MeanStd {
            mean: vec![0.5],
            std: vec![0.25],
        },
        ..LoaderConfig::new(4)
    };
    let mut loader = Loader::new(ds.clone(), None, cfg).unwrap();
    let b = loader.next_batch().unwrap().unwrap();
    let want = (ds.images[1] as f32 / 255.0 - 0.5) / 0.25;
    assert!((b.inputs[1] - want).abs() < 1e-6);
    loader.recycle(b);
    assert!(loader.next_batch().unwrap().is_ok());
    assert!(loader.next_batch().is_none());
    let bad = LoaderConfig {
        normalize: Normalize::MeanStd {
            mean: vec![0.5; 3],
            std: vec![1.0; 3],
        },
        ..LoaderConfig::new(4)
    };
    assert!(Loader::new(ds.clone(), None, bad).is_err());
    assert!(Loader::new(ds, Some(vec![0, 99]), LoaderConfig::new(4)).is_err());
}

#[test]
fn loader_errors_and_panics_reach_the_consumer() {
    let mut failing = Loader::from_fn(10, 1, 2, |_, index, batch| {
        if index == 3 {
            return Err(Error::Loader {
                detail: "decode failed at batch 3".into(),
            });
        }
        batch.len = 1;
        Ok(())
    });
    let results: Vec<_> = failing.by_ref().collect();
    assert_eq!(results.len(), 4);
    assert!(results[3]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("batch 3"));

    let panicking = Loader::from_fn(10, 1, 2, |_, index, _| {
        assert!(index < 2, "synthetic failure in the loader");
        Ok(())
    });
    let results: Vec<_> = panicking.collect();
    let err = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(
        err.contains("panicked") && err.contains("synthetic failure"),
        "{err}"
    );
}

#[test]
fn dropping_the_loader_mid_epoch_stops_the_thread() {
    let mut loader = Loader::from_fn(1_000_000, 1, 2, |_, _, batch| {
        std::thread::sleep(Duration::from_millis(1));
        batch.len = 1;
        Ok(())
    });
    assert!(loader.next_batch().unwrap().is_ok());
    let start = Instant::now();
    drop(loader);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        start.elapsed()
    );
}

#[test]
fn validation_splits() {
    let ds = small_dataset(100);
    let (train, val) = ds.split_last(0.2).unwrap();
    assert_eq!((train.len(), val.len()), (80, 20));
    assert_eq!(val[0], 80);
    let (t1, v1) = ds.split_seeded(0.25, 3).unwrap();
    let (t2, v2) = ds.split_seeded(0.25, 3).unwrap();
    assert_eq!((t1.clone(), v1.clone()), (t2, v2));
    let mut all = [t1, v1].concat();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert!(ds.split_last(1.5).is_err());
}

#[test]
fn augmentation_is_seeded_and_keeps_pixels_in_place() {
    let ds = Arc::new(Dataset {
        images: (0..2 * 3 * 8 * 8).map(|i| (i % 200 + 1) as u8).collect(),
        labels: vec![0, 1],
        channels: 3,
        height: 8,
        width: 8,
        num_classes: 10,
        class_names: data::digit_names(),
    });
    let cfg = LoaderConfig {
        augment: Some(Augment::cifar()),
        shuffle: false,
        epochs: 3,
        ..LoaderConfig::new(2)
    };
    let a = collect(Loader::new(ds.clone(), None, cfg.clone()).unwrap());
    let b = collect(Loader::new(ds.clone(), None, cfg.clone()).unwrap());
    assert_eq!(a, b);
    assert!(
        a.windows(2).any(|w| w[0].inputs != w[1].inputs),
        "epochs are augmented differently"
    );
    // A zero-padding crop never invents values: each output is a source pixel or padding.
    let src: std::collections::HashSet<u32> = ds.images.iter().map(|&p| p as u32).collect();
    for b in &a {
        for &v in &b.inputs {
            let p = (v * 255.0).round() as u32;
            assert!(p == 0 || src.contains(&p));
        }
    }
    let plain = collect(
        Loader::new(
            ds.clone(),
            None,
            LoaderConfig {
                augment: None,
                ..cfg
            },
        )
        .unwrap(),
    );
    assert_eq!((plain[0].inputs[0] * 255.0).round() as u8, ds.images[0]);
}

#[test]
fn shards_cut_every_batch_into_the_ranks_rows() {
    // 23 samples in batches of 10: the last batch has 3 rows, fewer than 4 ranks, and goes
    // whole to rank 0. With augmentation, a rank's rows must be augmented exactly as in the
    // whole batch, though it skips the other ranks' rows.
    let ds = Arc::new(Dataset {
        images: (0..23 * 3 * 8 * 8).map(|i| (i % 251) as u8).collect(),
        labels: (0..23).map(|i| i % 10).collect(),
        channels: 3,
        height: 8,
        width: 8,
        num_classes: 10,
        class_names: data::digit_names(),
    });
    let cfg = LoaderConfig {
        augment: Some(Augment::cifar()),
        epochs: 2,
        seed: 3,
        ..LoaderConfig::new(10)
    };
    let whole = collect(Loader::new(ds.clone(), None, cfg.clone()).unwrap());
    for ranks in [2, 3, 4] {
        let parts: Vec<Vec<data::Batch>> = (0..ranks)
            .map(|rank| {
                let shard = Some(Shard { rank, ranks });
                collect(
                    Loader::new(
                        ds.clone(),
                        None,
                        LoaderConfig {
                            shard,
                            ..cfg.clone()
                        },
                    )
                    .unwrap(),
                )
            })
            .collect();
        for (i, batch) in whole.iter().enumerate() {
            let mut inputs = Vec::new();
            let mut labels = Vec::new();
            for (rank, p) in parts.iter().enumerate() {
                let rows = Shard { rank, ranks }.range(batch.len);
                assert_eq!(
                    p[i].len,
                    rows.len(),
                    "{ranks} ranks, batch {i}, rank {rank}"
                );
                inputs.extend_from_slice(&p[i].inputs);
                labels.extend_from_slice(&p[i].labels);
            }
            // (Compared without printing thousands of pixels on failure.)
            assert!(
                inputs == batch.inputs,
                "{ranks} ranks, batch {i}: other inputs"
            );
            assert_eq!(labels, batch.labels, "{ranks} ranks, batch {i}");
        }
        // Rows of 10: 5/5, 4/3/3, 3/3/2/2; the last batch of 3 goes to rank 0 with 4 ranks.
        let sizes: Vec<usize> = parts.iter().map(|p| p[0].len).collect();
        let want: &[usize] = match ranks {
            2 => &[5, 5],
            3 => &[4, 3, 3],
            _ => &[3, 3, 2, 2],
        };
        assert_eq!(sizes, want);
    }
    assert_eq!(Shard { rank: 0, ranks: 4 }.range(3), 0..3);
    assert_eq!(Shard { rank: 3, ranks: 4 }.range(3), 0..0);
    let bad = LoaderConfig {
        shard: Some(Shard { rank: 2, ranks: 2 }),
        ..cfg
    };
    let err = Loader::new(ds, None, bad)
        .err()
        .expect("rank 2 of 2 is rejected");
    assert!(
        err.to_string().contains("rank 2 is not below its 2 ranks"),
        "{err}"
    );
}

#[test]
fn pictures_grid_and_model_input() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_dataset(12);
    let path = dir.path().join("grid.png");
    let preds: Vec<u32> = (0..12)
        .map(|i| if i % 3 == 0 { 9 } else { (i % 10) as u32 })
        .collect();
    picture::save_grid(&path, &ds, &(0..12).collect::<Vec<_>>(), 4, Some(&preds)).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.width() % 4, 0);
    assert!(
        img.pixels().any(|p| p.0 == [220, 40, 40]),
        "a wrong prediction is framed red"
    );
    assert!(
        img.pixels().any(|p| p.0 == [40, 200, 60]),
        "a right prediction is framed green"
    );
    assert_eq!(
        common::part_files(dir.path()),
        Vec::<String>::new(),
        "no temporary file is left"
    );

    // A dark digit on a white page, 56x56, becomes a 28x28 light-on-dark input.
    let mut page = image::GrayImage::from_pixel(56, 56, image::Luma([255]));
    for y in 10..46 {
        for x in 26..30 {
            page.put_pixel(x, y, image::Luma([0]));
        }
    }
    let digit = dir.path().join("digit.png");
    page.save(&digit).unwrap();
    let x = picture::load_for_model(&digit, 1, 28, 28).unwrap();
    assert_eq!(x.len(), 784);
    assert!(
        x[0] < 0.05 && x[14 * 28 + 14] > 0.75,
        "inverted: {} {}",
        x[0],
        x[14 * 28 + 14]
    );
    let not_image = write(dir.path(), "x.png", b"not an image");
    assert!(picture::load_for_model(&not_image, 1, 28, 28).is_err());
}

/// Serves `routes` (path -> behaviour) on 127.0.0.1 for `connections` requests.
fn serve(routes: Vec<(&'static str, Vec<u8>, &'static str)>, connections: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut req = [0u8; 2048];
            let n = stream.read(&mut req).unwrap_or(0);
            let line = String::from_utf8_lossy(&req[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let Some((_, body, mode)) = routes.iter().find(|(p, _, _)| path.ends_with(p)) else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            };
            match *mode {
                "error" => {
                    let _ = stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                }
                "stall" => {
                    // Half the body, then silence with the connection held open.
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body[..body.len() / 2]);
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
                "truncate" => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body[..body.len() / 2]);
                }
                _ => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                }
            }
        }
    });
    format!("http://{addr}/")
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn downloads_verify_and_never_leave_bad_files() {
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let digest = sha(&content);
    let base = serve(
        vec![
            ("ok.bin", content.clone(), "ok"),
            (
                "tampered.bin",
                [&content[..50], b"X", &content[51..]].concat(),
                "ok",
            ),
            ("short.bin", content.clone(), "truncate"),
            ("broken.bin", vec![], "error"),
            ("stalled.bin", content.clone(), "stall"),
        ],
        5,
    );
    let timeouts = download::Timeouts {
        connect: std::time::Duration::from_secs(5),
        read: std::time::Duration::from_millis(300),
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    download::fetch_url(
        &format!("{base}ok.bin"),
        &dest,
        &digest,
        Some(content.len() as u64),
        false,
        timeouts,
    )
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);

    for (name, needle) in [
        ("tampered.bin", "does not match"),
        ("short.bin", ""),
        ("broken.bin", "500"),
        // A server that stops sending fails after the read timeout, naming the mirror.
        ("stalled.bin", "stalled.bin"),
    ] {
        let start = std::time::Instant::now();
        let dest = dir.path().join(name);
        let err = download::fetch_url(
            &format!("{base}{name}"),
            &dest,
            &digest,
            Some(content.len() as u64),
            false,
            timeouts,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(4),
            "{name}: failed only after {:?}",
            start.elapsed()
        );
        assert!(!dest.exists(), "{name}: no file may be left");
        assert_eq!(
            common::part_files(dir.path()),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

#[test]
fn offline_download_says_where_to_put_the_files() {
    // Port 9 on loopback has no server: every mirror is refused at once.
    let source = download::Source {
        name: "TestSet",
        mirrors: &["http://127.0.0.1:9/a/", "http://127.0.0.1:9/b/"],
        files: &[download::RemoteFile {
            name: "x.gz",
            size: 4,
            sha256: "00",
        }],
    };
    let dir = tempfile::tempdir().unwrap();
    let err = download::fetch(&source, dir.path(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("every mirror failed") && err.contains("x.gz") && err.contains("yourself"),
        "{err}"
    );
    assert!(!dir.path().join("x.gz").exists());
}

#[test]
fn a_loader_starting_at_a_later_epoch_streams_that_epoch() {
    // Resuming training relies on this: epoch k is shuffled the same whether it is the k-th
    // epoch of one loader or the first epoch of a loader starting at k.
    let ds = small_dataset(103);
    let all = collect(
        Loader::new(
            ds.clone(),
            None,
            LoaderConfig {
                seed: 5,
                epochs: 3,
                ..LoaderConfig::new(10)
            },
        )
        .unwrap(),
    );
    let tail = collect(
        Loader::new(
            ds,
            None,
            LoaderConfig {
                seed: 5,
                epochs: 1,
                first_epoch: 2,
                ..LoaderConfig::new(10)
            },
        )
        .unwrap(),
    );
    let third: Vec<_> = all.into_iter().filter(|b| b.epoch == 2).collect();
    assert_eq!(third, tail);
}

/// The loader thread runs 10 nice levels below the rest of the process on Linux, so waking
/// it never preempts training.
#[cfg(target_os = "linux")]
#[test]
fn the_loader_thread_runs_at_lower_priority() {
    let cfg = LoaderConfig {
        prefetch: 1,
        ..LoaderConfig::new(10)
    };
    let mut loader = Loader::new(small_dataset(103), None, cfg).unwrap();
    // With one batch taken and the channel full again, the thread is blocked in `send`.
    let first = loader.next_batch().unwrap().unwrap();
    loader.recycle(first);
    let nice_of = |stat: &str| -> Option<i32> {
        // Fields after the parenthesized name: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(16)?.parse::<i32>().ok()
    };
    let process = nice_of(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
    let nice_of_loader = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                if comm.trim() != "wgtrain-loader" {
                    return None;
                }
                nice_of(&std::fs::read_to_string(dir.join("stat")).ok()?)
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let nice = loop {
        let found = nice_of_loader();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // (Other tests' loaders may be running too.)
    assert!(
        !nice.is_empty() && nice.iter().all(|&n| n == (process + 10).min(19)),
        "nice of the threads named wgtrain-loader: {nice:?}, of the process: {process}"
    );
    drop(loader);
}
