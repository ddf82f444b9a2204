//! Misuse of the public API: each case must end in a specific error, never a panic, a hang or
//! a silently accepted value. Every case runs in a child process (this test binary, re-run with
//! the case's name) under a timeout, so a regression that panics or hangs fails its case
//! instead of taking the test runner down.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use wgtrain::data::{ArrayDataset, Dataset, Loader, LoaderConfig};
use wgtrain::nn::{Conv2d, Dense, Device, FitConfig, Loss, Model, Sequential};
use wgtrain::optim::{AdamConfig, Optimizer};

const CASE: &str = "WGTRAIN_RELIABILITY_CASE";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A small valid dataset: `n` images of 4x4, three classes.
fn data(n: usize) -> Dataset {
    Dataset {
        images: (0..n * 16).map(|i| (i * 31 % 256) as u8).collect(),
        labels: (0..n).map(|i| (i % 3) as u8).collect(),
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 3,
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn model(loss: Loss, outputs: usize) -> Model {
    Sequential::new(&[4, 4])
        .flatten()
        .dense(Dense::new(outputs))
        .compile(
            loss,
            Optimizer::Adam(AdamConfig::adam(1e-2)),
            Device::Cpu,
            0,
        )
        .unwrap()
}

/// A one-feature model with `outputs` outputs, for the numeric-array cases.
fn model_1d(loss: Loss, outputs: usize) -> Model {
    Sequential::new(&[1])
        .dense(Dense::new(outputs))
        .compile(
            loss,
            Optimizer::Adam(AdamConfig::adam(1e-2)),
            Device::Cpu,
            0,
        )
        .unwrap()
}

/// The error of `r`, which must be one, containing every one of `needles`.
fn expect_err<T: std::fmt::Debug>(r: wgtrain::Result<T>, needles: &[&str]) {
    let err = r.expect_err("an error").to_string();
    for n in needles {
        assert!(err.contains(n), "`{err}` lacks `{n}`");
    }
}

fn fit(m: &mut Model, d: &Dataset, cfg: FitConfig) -> wgtrain::Result<()> {
    m.fit(d, &cfg).map(|_| ())
}

/// A checkpoint of the standard model, rewritten by `edit` (with a valid SHA-256), loaded back.
fn load_edited(
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
    step: Option<u64>,
) -> wgtrain::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
    m.fit(&data(12), &FitConfig::new(1, 4)).unwrap();
    m.save(&path).unwrap();
    let bytes = common::rewrite_checkpoint_step(&std::fs::read(&path).unwrap(), step, edit);
    std::fs::write(&path, bytes).unwrap();
    model(Loss::SparseCategoricalCrossentropy, 3).load(&path)
}

fn set_f32(t: &mut [(String, Vec<usize>, Vec<u8>)], name: &str, value: f32) {
    let (_, _, d) = t.iter_mut().find(|(n, _, _)| n == name).unwrap();
    d[..4].copy_from_slice(&value.to_le_bytes());
}

/// Every case: its name and the code that must end in the expected error.
fn cases() -> Vec<(&'static str, fn())> {
    vec![
        // Datasets, checked before use.
        ("dataset: label >= num_classes (fit, no shuffle)", || {
            let mut d = data(12);
            d.labels[5] = 7;
            let cfg = FitConfig {
                shuffle: false,
                ..FitConfig::new(1, 4)
            };
            let mut m = model(Loss::MeanSquaredError, 3);
            expect_err(
                fit(&mut m, &d, cfg),
                &["label 7 of sample 5", "num_classes (3)"],
            );
        }),
        ("dataset: label >= num_classes (evaluate)", || {
            let mut d = data(12);
            d.labels[0] = 3;
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(m.evaluate(&d, 4), &["label 3 of sample 0"]);
        }),
        ("dataset: BCE target of 5", || {
            let mut d = data(12);
            d.num_classes = 2;
            d.class_names.truncate(2);
            d.labels = (0..12).map(|i| (i % 2) as u8).collect();
            d.labels[4] = 5;
            let mut m = model(Loss::BinaryCrossentropy { from_logits: true }, 1);
            expect_err(
                fit(&mut m, &d, FitConfig::new(1, 4)),
                &["label 5 of sample 4"],
            );
        }),
        ("dataset: class_counts with a bad label", || {
            let mut d = data(6);
            d.labels[2] = 9;
            expect_err(d.class_counts(), &["label 9 of sample 2"]);
        }),
        ("dataset: images shorter than len x features", || {
            let mut d = data(12);
            d.images.truncate(100);
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(
                fit(&mut m, &d, FitConfig::new(1, 4)),
                &["192 pixel bytes", "got 100"],
            );
        }),
        ("dataset: images longer than len x features", || {
            let mut d = data(12);
            d.images.push(0);
            let r = Loader::new(std::sync::Arc::new(d), None, LoaderConfig::new(4));
            expect_err(r.map(|_| ()), &["192 pixel bytes", "got 193"]);
        }),
        ("loader: augmentation padding larger than the image", || {
            let cfg = LoaderConfig {
                augment: Some(wgtrain::data::Augment {
                    crop_padding: 9,
                    flip: true,
                }),
                ..LoaderConfig::new(4)
            };
            let r = Loader::new(std::sync::Arc::new(data(12)), None, cfg);
            expect_err(r.map(|_| ()), &["crop padding 9", "4x4"]);
        }),
        ("loader: a NaN normalization std", || {
            let cfg = LoaderConfig {
                normalize: wgtrain::data::Normalize::MeanStd {
                    mean: vec![0.5],
                    std: vec![f32::NAN],
                },
                ..LoaderConfig::new(4)
            };
            let r = Loader::new(std::sync::Arc::new(data(12)), None, cfg);
            expect_err(r.map(|_| ()), &["finite non-zero stds", "NaN"]);
        }),
        ("dataset: empty", || {
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(fit(&mut m, &data(0), FitConfig::new(1, 4)), &["no samples"]);
        }),
        // Fit configuration.
        ("fit: validation_split -0.1", || {
            let cfg = FitConfig {
                validation_split: -0.1,
                ..FitConfig::new(1, 4)
            };
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(fit(&mut m, &data(12), cfg), &["validation_split -0.1"]);
        }),
        ("fit: validation_split NaN", || {
            let cfg = FitConfig {
                validation_split: f64::NAN,
                ..FitConfig::new(1, 4)
            };
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(fit(&mut m, &data(12), cfg), &["validation_split NaN"]);
        }),
        ("fit: a split that holds out no sample", || {
            let cfg = FitConfig {
                validation_split: 0.01,
                ..FitConfig::new(1, 4)
            };
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(fit(&mut m, &data(12), cfg), &["holds out none"]);
        }),
        ("fit: empty validation_data", || {
            let cfg = FitConfig {
                validation_data: Some(std::sync::Arc::new(data(0))),
                ..FitConfig::new(1, 4)
            };
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(fit(&mut m, &data(12), cfg), &["no samples"]);
        }),
        // Layers.
        ("layers: Dense(0)", || {
            let r = Sequential::new(&[4]).dense(Dense::new(0)).compile(
                Loss::SparseCategoricalCrossentropy,
                Optimizer::Adam(AdamConfig::adam(1e-3)),
                Device::Cpu,
                0,
            );
            expect_err(r.map(|_| ()), &["Dense", "units must be at least 1"]);
        }),
        ("layers: Conv2d with 0 filters (GPU)", || {
            let r = Sequential::new(&[1, 8, 8])
                .conv2d(Conv2d::new(0, 3))
                .flatten()
                .dense(Dense::new(2))
                .compile(
                    Loss::SparseCategoricalCrossentropy,
                    Optimizer::Adam(AdamConfig::adam(1e-3)),
                    Device::gpu().expect("a GPU adapter"),
                    0,
                );
            expect_err(r.map(|_| ()), &["Conv2d", "at least 1"]);
        }),
        ("graph: a zero-sized parameter on the GPU", || {
            use wgtrain::graph::{Dim, Executor, Feed, GpuExecutor, Graph, Init};
            let ctx = std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("a GPU adapter"));
            let mut g = Graph::new();
            let x = g.input("x", &[Dim::Batch, Dim::Fixed(4)]);
            let y = g.labels("y");
            let w = g.param("w", &[4, 0], Init::Zeros);
            let z = g.matmul(x, w).unwrap();
            let loss = g.softmax_xent(z, y).unwrap();
            let sgd = Optimizer::Sgd(wgtrain::optim::SgdConfig::new(0.1));
            let mut e = GpuExecutor::new(&ctx, g, loss, sgd, 0).unwrap();
            let r = e.step(2, &[(x, Feed::F32(&[0.0; 8])), (y, Feed::U32(&[0, 0]))]);
            expect_err(r, &["no dimension may be 0"]);
        }),
        // GPU buffers belong to their context.
        ("gpu: a buffer of another context", || {
            let (a, b) = (
                wgtrain::gpu::GpuContext::new().expect("a GPU adapter"),
                wgtrain::gpu::GpuContext::new().expect("a GPU adapter"),
            );
            let x = wgtrain::gpu::GpuBuffer::zeros(&a, "x", 8).unwrap();
            let y = wgtrain::gpu::GpuBuffer::zeros(&b, "y", 8).unwrap();
            let r = wgtrain::unstable::kernels::add(&b, 8, x.full(), y.full(), y.full());
            expect_err(r, &["`x` was made on another GpuContext"]);
            expect_err(x.read::<f32>(&b), &["another GpuContext"]);
            expect_err(x.write(&b, 0, &[1.0f32]), &["another GpuContext"]);
        }),
        // Checkpoints that hold what training cannot produce.
        ("checkpoint: a NaN parameter", || {
            let r = load_edited(|t| set_f32(t, "dense_0.weight", f32::NAN), None);
            expect_err(r, &["`dense_0.weight`[0] is NaN"]);
        }),
        ("checkpoint: an infinite moment", || {
            let r = load_edited(|t| set_f32(t, "dense_0.bias.m", f32::INFINITY), None);
            expect_err(r, &["`dense_0.bias.m`[0] is inf"]);
        }),
        ("checkpoint: a negative second moment", || {
            let r = load_edited(|t| set_f32(t, "dense_0.weight.v", -1.0), None);
            expect_err(r, &["`dense_0.weight.v`[0] is -1", "never negative"]);
        }),
        ("checkpoint: step count u64::MAX", || {
            let r = load_edited(|_| {}, Some(u64::MAX));
            expect_err(r, &["step count 18446744073709551615"]);
        }),
        (
            "checkpoint: same tensor shapes, another architecture",
            || {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("m.safetensors");
                let build = |act| {
                    Sequential::new(&[4, 4])
                        .flatten()
                        .dense(Dense::new(5).activation(act))
                        .dense(Dense::new(3))
                        .compile(
                            Loss::SparseCategoricalCrossentropy,
                            Optimizer::Adam(AdamConfig::adam(1e-2)),
                            Device::Cpu,
                            0,
                        )
                        .unwrap()
                };
                build(wgtrain::ops::Activation::Relu).save(&path).unwrap();
                let r = build(wgtrain::ops::Activation::Tanh).load(&path);
                expect_err(
                    r,
                    &[
                        "another architecture",
                        "layer 1",
                        "dense(5,relu)",
                        "dense(5,tanh)",
                    ],
                );
            },
        ),
        // Gzip: every member is read; the size a header declares is bounded by the file.
        ("gzip: two members whose second is extra data", || {
            let dir = tempfile::tempdir().unwrap();
            let idx = idx_bytes(&[3], &[1, 2, 3]);
            let mut bytes = gz(&idx);
            bytes.extend(gz(&[9, 9]));
            let path = dir.path().join("x.gz");
            std::fs::write(&path, bytes).unwrap();
            expect_err(wgtrain::data::read_idx(&path), &["trailing bytes"]);
        }),
        (
            "gzip: a header declaring more than the file can hold",
            || {
                let dir = tempfile::tempdir().unwrap();
                // 1 GiB declared, a few bytes of deflate.
                let mut idx = idx_bytes(&[1 << 15, 1 << 15], &[]);
                idx.extend([0u8; 16]);
                let path = dir.path().join("bomb.gz");
                std::fs::write(&path, gz(&idx)).unwrap();
                let start = Instant::now();
                expect_err(
                    wgtrain::data::read_idx(&path),
                    &["more than the compressed file can hold"],
                );
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "rejected before inflating"
                );
            },
        ),
        // Numeric arrays: shapes, values and options checked before anything is allocated
        // on a device.
        ("arrays: features without a feature axis", || {
            let x = ndarray::arr1(&[1.0f32, 2.0]);
            expect_err(
                ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32, 2.0])),
                &["sample axis and at least one feature axis"],
            );
        }),
        ("arrays: NaN feature", || {
            let x = ndarray::arr2(&[[1.0f32], [f32::NAN]]);
            expect_err(
                ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32, 2.0])),
                &["feature 0 of sample 1 is NaN"],
            );
        }),
        ("arrays: label >= classes", || {
            let x = ndarray::arr2(&[[1.0f32], [2.0]]);
            expect_err(
                ArrayDataset::classification(&x, &[0, 2], 2),
                &["label 2 of sample 1"],
            );
        }),
        (
            "arrays: a field edited after construction is checked by fit",
            || {
                let x = ndarray::arr2(&[[1.0f32], [2.0]]);
                let mut d = ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32, 2.0])).unwrap();
                d.features.push(3.0);
                let mut m = model_1d(Loss::MeanSquaredError, 1);
                expect_err(m.fit(&d, &FitConfig::new(1, 2)), &["need 2 values, got 3"]);
            },
        ),
        ("arrays: image normalization on numeric data", || {
            let x = ndarray::arr2(&[[1.0f32], [2.0]]);
            let d = ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32, 2.0])).unwrap();
            let mut m = model_1d(Loss::MeanSquaredError, 1);
            let cfg = FitConfig {
                augment: Some(wgtrain::data::Augment::cifar()),
                ..FitConfig::new(1, 2)
            };
            expect_err(m.fit(&d, &cfg), &["apply to images"]);
        }),
        ("arrays: feature scaling on images", || {
            let cfg = FitConfig {
                scale_features: Some(wgtrain::data::Scaling::Standard),
                ..FitConfig::new(1, 4)
            };
            expect_err(
                fit(
                    &mut model(Loss::SparseCategoricalCrossentropy, 3),
                    &data(8),
                    cfg,
                ),
                &["apply to numeric arrays"],
            );
        }),
        ("arrays: target scaling of class indices", || {
            let x = ndarray::arr2(&[[1.0f32], [2.0]]);
            let d = ArrayDataset::classification(&x, &[0, 1], 2).unwrap();
            let mut m = model_1d(Loss::SparseCategoricalCrossentropy, 2);
            let cfg = FitConfig {
                scale_targets: Some(wgtrain::data::Scaling::Standard),
                ..FitConfig::new(1, 2)
            };
            expect_err(
                m.fit(&d, &cfg),
                &["real-valued targets; these are class indices"],
            );
        }),
        ("arrays: validation data of another kind", || {
            let x = ndarray::arr2(&[[1.0f32; 16], [2.0; 16], [3.0; 16]]);
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            let cfg = FitConfig {
                validation_data: Some(std::sync::Arc::new(
                    ArrayDataset::classification(&x, &[0, 1, 2], 3).unwrap(),
                )),
                ..FitConfig::new(1, 4)
            };
            expect_err(fit(&mut m, &data(8), cfg), &["another kind of data"]);
        }),
        (
            "arrays: error metrics with the sparse cross-entropy",
            || {
                let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
                expect_err(
                    m.set_metrics(&[wgtrain::nn::Metric::Mae]),
                    &["mae compares outputs with real-valued targets"],
                );
            },
        ),
        (
            "arrays: early stopping on a metric the model does not report",
            || {
                let cfg = FitConfig {
                    validation_split: 0.25,
                    early_stopping: Some(wgtrain::nn::EarlyStopping::new(
                        wgtrain::nn::Monitor::Val(wgtrain::nn::Metric::R2),
                        2,
                    )),
                    ..FitConfig::new(2, 4)
                };
                expect_err(
                    fit(
                        &mut model(Loss::SparseCategoricalCrossentropy, 3),
                        &data(8),
                        cfg,
                    ),
                    &["watches val_r2"],
                );
            },
        ),
        (
            "arrays: predict_array of the wrong width, or with an infinity",
            || {
                let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
                expect_err(
                    m.predict_array(&ndarray::Array2::<f32>::zeros((2, 5))),
                    &["samples of 16 inputs"],
                );
                let mut x = ndarray::Array2::<f32>::zeros((2, 16));
                x[[1, 3]] = f32::INFINITY;
                expect_err(m.predict_array(&x), &["feature 3 of sample 1 is inf"]);
            },
        ),
        ("arrays: zero batch size in fit and evaluate", || {
            let mut m = model(Loss::SparseCategoricalCrossentropy, 3);
            expect_err(
                fit(&mut m, &data(8), FitConfig::new(1, 0)),
                &["batch_size is 0"],
            );
            expect_err(m.evaluate(&data(8), 0), &["batch_size is 0"]);
        }),
        // The GPU context's choices.
        ("context: WGTRAIN_PLAN names no plan", || {
            // This child process runs only this case, so the variable reaches no other test.
            std::env::set_var(wgtrain::gpu::PLAN_ENV, "fast");
            expect_err(
                wgtrain::gpu::GpuContext::new(),
                &["WGTRAIN_PLAN=fast", "`gpu` or `cpu`"],
            );
        }),
    ]
}

/// An unsigned-byte IDX file of `dims` holding `data`.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A valid gzip stream of two members (as `cat a.gz b.gz` or bgzip write) reads whole.
#[test]
fn multi_member_gzip_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let idx = idx_bytes(&[6], &[1, 2, 3, 4, 5, 6]);
    let mut bytes = gz(&idx[..9]);
    bytes.extend(gz(&idx[9..]));
    let path = dir.path().join("x.gz");
    std::fs::write(&path, bytes).unwrap();
    let a = wgtrain::data::read_idx(&path).unwrap();
    assert_eq!((a.dims, a.data), (vec![6], vec![1, 2, 3, 4, 5, 6]));
}

#[test]
fn misuse_ends_in_a_named_error_never_a_panic_or_hang() {
    let all = cases();
    if let Ok(name) = std::env::var(CASE) {
        let (_, case) = all.iter().find(|(n, _)| *n == name).expect("a known case");
        case();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    for (name, _) in &all {
        let out_dir = tempfile::tempdir().unwrap();
        let log = out_dir.path().join("log");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "misuse_ends_in_a_named_error_never_a_panic_or_hang",
                "--nocapture",
            ])
            .env(CASE, name)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(out_dir.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let err = std::fs::read_to_string(out_dir.path().join("err")).unwrap_or_default();
        match status {
            Some(s) if s.success() => {}
            Some(s) => failures.push(format!("{name}: {s}\n{}", tail(&err))),
            None => failures.push(format!("{name}: hung for {TIMEOUT:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
    eprintln!("{} misuse cases each ended in their named error", all.len());
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("lacks"))
        .collect();
    lines.join("\n")
}
