//! Batch normalization through the model API: the GPU and CPU executors agree over 20 steps
//! (parameters and running statistics), prediction in evaluation mode does not depend on
//! which samples share a batch, checkpoints carry the running statistics and resume bit for
//! bit, and the summary counts them as non-trainable.

mod common;

use std::sync::Arc;

use wgtrain::data::Dataset;
use wgtrain::gpu::GpuContext;
use wgtrain::nn::{Conv2d, Dense, Device, FitConfig, Loss, Model, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{Optimizer, SgdConfig};

/// `n` images of 2x8x8 in four classes, each class with its own brightness and pattern.
fn images(n: usize) -> Dataset {
    let mut images = Vec::with_capacity(n * 128);
    for i in 0..n {
        let class = i % 4;
        for p in 0..128 {
            let pattern = ((p * (class + 3) + i * 7) % 64) as f32;
            images.push((pattern + 40.0 * class as f32).min(255.0) as u8);
        }
    }
    Dataset {
        images,
        labels: (0..n).map(|i| (i % 4) as u8).collect(),
        channels: 2,
        height: 8,
        width: 8,
        num_classes: 4,
        class_names: vec![],
    }
}

/// Convolution, 2-D batch normalization, pooling, a dense layer with 1-D batch normalization.
fn net() -> Sequential {
    Sequential::new(&[2, 8, 8])
        .conv2d(Conv2d::new(4, 3).same())
        .batch_norm()
        .push(wgtrain::nn::Layer::Activation(Activation::Relu))
        .max_pool2d(2)
        .flatten()
        .dense(Dense::new(16))
        .batch_norm()
        .push(wgtrain::nn::Layer::Activation(Activation::Relu))
        .dense(Dense::new(4))
}

fn compile(device: Device) -> Model {
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.05)
    });
    net()
        .compile(Loss::SparseCategoricalCrossentropy, sgd, device, 5)
        .unwrap()
}

type Weights = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Equal bits in every tensor, or a panic naming the first that differs.
fn assert_same(a: &Weights, b: &Weights, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((name, _, x), (_, _, y)) in a.iter().zip(b) {
        let same = x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits());
        assert!(
            same,
            "{what}: `{name}` differs: {:?} vs {:?}",
            &x[..x.len().min(4)],
            &y[..y.len().min(4)]
        );
    }
}

/// Every tensor of `g` within 2e-3 of `c`'s, relative to |c| + 1e-2.
fn assert_close(g: &Weights, c: &Weights) {
    assert_eq!(g.len(), c.len());
    for ((name, _, a), (_, _, b)) in g.iter().zip(c) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1e-2 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-3, "`{name}` differs by {worst} (relative)");
    }
}

fn gpu() -> Device {
    Device::Gpu(Arc::new(
        GpuContext::new().expect("GPU tests need an adapter (install mesa-vulkan-drivers)"),
    ))
}

#[test]
fn gpu_and_cpu_agree_over_20_steps_with_running_statistics() {
    // 160 samples at batch 16, two epochs: 20 steps.
    let data = images(160);
    let cfg = FitConfig {
        seed: 1,
        ..FitConfig::new(2, 16)
    };
    let mut weights = Vec::new();
    for device in [gpu(), Device::Cpu] {
        let mut m = compile(device);
        m.fit(&data, &cfg).unwrap();
        weights.push(m.weights().unwrap());
    }
    let (g, c) = (&weights[0], &weights[1]);
    assert_close(g, c);
    // The running statistics moved away from their start (mean 0, variance 1).
    let running = |n: &str| &g.iter().find(|w| w.0 == n).unwrap().2;
    assert!(running("batch_norm_0.running_mean")
        .iter()
        .any(|&v| v.abs() > 1e-3));
    assert!(running("batch_norm_1.running_var")
        .iter()
        .any(|&v| (v - 1.0).abs() > 1e-3));
}

/// ResNet-8 (`Sequential::resnet` with one block per stage: identity and projection
/// shortcuts, batch normalization everywhere) trains alike on both executors over 20 steps.
#[test]
fn a_small_resnet_agrees_on_gpu_and_cpu_over_20_steps() {
    let data = images(160);
    let cfg = FitConfig {
        seed: 2,
        ..FitConfig::new(2, 16)
    };
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..SgdConfig::new(0.02)
    });
    let mut weights = Vec::new();
    for device in [gpu(), Device::Cpu] {
        let mut m = Sequential::resnet(&[2, 8, 8], 1, 4)
            .compile(Loss::SparseCategoricalCrossentropy, sgd, device, 6)
            .unwrap();
        m.fit(&data, &cfg).unwrap();
        weights.push(m.weights().unwrap());
    }
    let (g, c) = (&weights[0], &weights[1]);
    assert!(g.iter().any(|w| w.0 == "residual_1.shortcut.weight"));
    assert_close(g, c);
}

#[test]
fn evaluation_mode_predictions_do_not_depend_on_the_batch() {
    let data = images(64);
    for device in [gpu(), Device::Cpu] {
        let name = device.name();
        let mut m = compile(device);
        m.fit(&data, &FitConfig::new(1, 16)).unwrap();
        let first = data.head(8);
        let together = m.predict(&first).unwrap().outputs;
        for i in 0..8 {
            let alone = m.predict(&data.select(&[i]).unwrap()).unwrap().outputs;
            let (a, b) = (together.row(i).to_vec(), alone.row(0).to_vec());
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                    "{name}, sample {i}: {a:?} in a batch of 8, {b:?} alone"
                );
            }
        }
        // And predicting moves no running statistic.
        let before = m.weights().unwrap();
        m.predict(&first).unwrap();
        assert_same(
            &before,
            &m.weights().unwrap(),
            &format!("{name}: predicting"),
        );
    }
}

#[test]
fn checkpoints_carry_running_statistics_and_resume_bit_exactly() {
    let data = images(96);
    let dir = tempfile::tempdir().unwrap();
    let cfg = |epochs| FitConfig {
        seed: 2,
        ..FitConfig::new(epochs, 16)
    };
    let mut straight = compile(gpu());
    straight.fit(&data, &cfg(2)).unwrap();
    let mut first = compile(gpu());
    first.fit(&data, &cfg(1)).unwrap();
    let path = dir.path().join("epoch1.safetensors");
    first.save(&path).unwrap();
    let names = safetensors::SafeTensors::deserialize(&std::fs::read(&path).unwrap())
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(
        names.contains(&"batch_norm_1.running_var".to_string()),
        "{names:?}"
    );
    let mut resumed = compile(gpu());
    resumed.load(&path).unwrap();
    assert_same(
        &resumed.weights().unwrap(),
        &first.weights().unwrap(),
        "loaded",
    );
    // A checkpoint whose running variance is negative (valid hash) is refused, naming it,
    // and the model is unchanged; one without the running statistics is refused too.
    let bytes = std::fs::read(&path).unwrap();
    let negative = common::rewrite_checkpoint(&bytes, |tensors| {
        for (name, _, data) in tensors.iter_mut() {
            if name == "batch_norm_0.running_var" {
                data[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
            }
        }
    });
    let bad = dir.path().join("negative.safetensors");
    std::fs::write(&bad, negative).unwrap();
    let err = resumed.load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("`batch_norm_0.running_var`[0] is -1: a variance is never negative"),
        "{err}"
    );
    let missing = common::rewrite_checkpoint(&bytes, |tensors| {
        tensors.retain(|(name, _, _)| !name.contains("running_mean"));
    });
    std::fs::write(&bad, missing).unwrap();
    let err = resumed.load(&bad).unwrap_err().to_string();
    assert!(err.contains("missing `batch_norm_0.running_mean`"), "{err}");
    assert_same(
        &resumed.weights().unwrap(),
        &first.weights().unwrap(),
        "after refused loads",
    );
    resumed
        .fit(
            &data,
            &FitConfig {
                initial_epoch: 1,
                ..cfg(2)
            },
        )
        .unwrap();
    assert_same(
        &resumed.weights().unwrap(),
        &straight.weights().unwrap(),
        "resumed",
    );
}

#[test]
fn summary_counts_running_statistics_as_non_trainable() {
    let s = net().summary();
    // conv 4x2x3x3 + 4; batch norm 4 + 4 trainable, 4 + 4 not; dense 64x16 + 16; batch norm
    // 16 + 16 and 16 + 16; dense 16x4 + 4.
    assert!(
        s.contains("batch_norm_0 (BatchNorm)") && s.contains("batch_norm_1 (BatchNorm)"),
        "{s}"
    );
    let trainable = 76 + 8 + 1040 + 32 + 68;
    assert!(
        s.contains(&format!("Total params: {}", trainable + 40)),
        "{s}"
    );
    assert!(s.contains(&format!("Trainable params: {trainable}")), "{s}");
    assert!(s.contains("Non-trainable params: 40"), "{s}");
}

/// Folding batch normalization into the layer before it: the folded copy of a trained model
/// has no batch normalization left and predicts what the model predicts in evaluation mode,
/// for a CNN (convolution and dense pairs) and for ResNet-8 (pairs inside residual blocks,
/// a projection shortcut among them).
#[test]
fn folded_batch_norm_predicts_what_evaluation_mode_predicts() {
    let data = images(96);
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.05)
    });
    let models = [
        // net() applies ReLU after each batch normalization, not before: both pairs fold.
        net(),
        Sequential::resnet(&[2, 8, 8], 1, 4),
    ];
    for (k, spec) in models.into_iter().enumerate() {
        let mut m = spec
            .compile(Loss::SparseCategoricalCrossentropy, sgd, gpu(), 3)
            .unwrap();
        m.fit(&data, &FitConfig::new(2, 16)).unwrap();
        let folded = m.fold_batch_norm().unwrap();
        let names: Vec<String> = folded.weights().unwrap().into_iter().map(|w| w.0).collect();
        assert!(
            names
                .iter()
                .all(|n| !n.contains("batch_norm") && !n.contains("bn")),
            "{names:?}"
        );
        assert!(!folded.network().summary().contains("BatchNorm"));
        let mut folded = folded;
        let x = data.head(40);
        let (a, b) = (m.predict(&x).unwrap(), folded.predict(&x).unwrap());
        for (j, (p, q)) in a.outputs.iter().zip(&b.outputs).enumerate() {
            assert!(
                (p - q).abs() <= 1e-4 + 1e-3 * p.abs(),
                "model {k}, value {j}: {p} vs folded {q}"
            );
        }
        assert_eq!(a.classes, b.classes, "model {k}");
    }
}

#[test]
fn folding_needs_a_foldable_pair_and_set_weights_checks_its_input() {
    let mut plain = Sequential::new(&[2, 8, 8])
        .flatten()
        .dense(Dense::new(4).activation(Activation::Relu))
        .batch_norm()
        .dense(Dense::new(4))
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Sgd(SgdConfig::new(0.1)),
            Device::Cpu,
            0,
        )
        .unwrap();
    // The activation sits between the dense layer and batch normalization.
    let err = plain.fold_batch_norm().map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("no batch normalization directly follows"),
        "{err}"
    );

    let before = plain.weights().unwrap();
    let err = plain
        .set_weights(&[("dense_9.weight".into(), vec![1], vec![0.0])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no weight named `dense_9.weight`"), "{err}");
    let err = plain
        .set_weights(&[
            ("dense_1.bias".into(), vec![4], vec![1.0; 4]),
            ("dense_0.bias".into(), vec![3], vec![0.0; 3]),
        ])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`dense_0.bias` has shape [4]"), "{err}");
    let err = plain
        .set_weights(&[(
            "dense_1.bias".into(),
            vec![4],
            vec![0.0, f32::NAN, 0.0, 0.0],
        )])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`dense_1.bias`[1] is NaN"), "{err}");
    let err = plain
        .set_weights(&[("batch_norm_0.running_var".into(), vec![4], vec![-1.0; 4])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("negative variance"), "{err}");
    assert_eq!(
        plain.weights().unwrap(),
        before,
        "a refused set_weights changes nothing"
    );
    plain
        .set_weights(&[("dense_1.bias".into(), vec![4], vec![0.5; 4])])
        .unwrap();
    let after = plain.weights().unwrap();
    assert_eq!(
        after.iter().find(|w| w.0 == "dense_1.bias").unwrap().2,
        vec![0.5; 4]
    );
}

/// The CPU reference's batch statistics and backward sums over 50,176 values per channel
/// (64 images of 28x28, as in a residual network's first block) are the f64 ones rounded
/// once to f32: a serial f32 fold drifts by many ulps over such sums (on values around 3,
/// as here), which the f32 trajectory then carries.
#[test]
fn long_batch_norm_sums_round_once() {
    use ndarray::Array3;
    use wgtrain::unstable::cpu;
    let (b, c, p) = (64, 2, 28 * 28);
    let x32 = Array3::from_shape_vec((b, c, p), common::uniform(21, b * c * p, 2.0, 4.0)).unwrap();
    let dy32 =
        Array3::from_shape_vec((b, c, p), common::uniform(22, b * c * p, -1.0, 1.0)).unwrap();
    let (x64, dy64) = (x32.mapv(f64::from), dy32.mapv(f64::from));
    let (m32, v32) = cpu::batch_norm_stats(x32.view());
    let (m64, v64) = cpu::batch_norm_stats(x64.view());
    for ch in 0..c {
        assert_eq!(m32[ch], m64[ch] as f32, "mean of channel {ch}");
        assert_eq!(v32[ch], v64[ch] as f32, "variance of channel {ch}");
    }
    let g32 = cpu::batch_norm_gamma_grad(x32.view(), dy32.view(), 1e-5).unwrap();
    let g64 = cpu::batch_norm_gamma_grad(x64.view(), dy64.view(), 1e-5).unwrap();
    for ch in 0..c {
        let err = (g32[ch] as f64 - g64[ch]).abs();
        // The terms differ by the f32 rounding of xhat only: well under 1e-6 of the sum's scale.
        assert!(
            err <= 1e-6 * (p * b) as f64 / 100.0,
            "gamma grad of channel {ch}: {err}"
        );
    }
}
