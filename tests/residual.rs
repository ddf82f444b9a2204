//! Residual networks with batch normalization: a small residual CNN on a Fashion-MNIST subset
//! reaches 87% on the full test set and beats the same CNN without batch normalization within
//! the same steps; ResNet-20's shapes and parameter count; block errors name the layer.

mod common;

use std::path::Path;
use std::time::Instant;

use wgtrain::data::mnist;
use wgtrain::nn::{Conv2d, Dense, Device, FitConfig, Layer, Loss, Residual, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{Optimizer, SgdConfig};

/// A 3x3 convolution to 16 channels, pooling to 14x14, a residual block, a residual block
/// to 32 channels at 7x7, and a dense layer; with or without batch normalization.
fn residual_cnn(batch_norm: bool) -> Sequential {
    let mut s = Sequential::new(&[1, 28, 28]).conv2d(Conv2d::new(16, 3).same());
    if batch_norm {
        s = s.batch_norm();
    }
    let block = |r: Residual| {
        if batch_norm {
            r
        } else {
            r.without_batch_norm()
        }
    };
    s.push(Layer::Activation(Activation::Relu))
        .max_pool2d(2)
        .residual(block(Residual::new(16)))
        .residual(block(Residual::new(32).stride(2)))
        .flatten()
        .dense(Dense::new(10))
}

fn nesterov(lr: f32) -> Optimizer {
    Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..SgdConfig::new(lr)
    })
}

fn fashion() -> mnist::Splits {
    mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST must be installed (.ci/run installs dataset-fashion-mnist)")
}

/// The same network, seed, optimizer (Nesterov SGD at 0.1, the ResNet paper's rate) and
/// steps (47 of batch 64 on 3,000 images), with and without batch normalization: with it,
/// test accuracy is higher by more than 2 points.
#[test]
fn batch_norm_beats_the_same_residual_cnn_without_it() {
    let data = fashion();
    let train = data.train.head(3_000);
    let test = data.test.head(2_000);
    let mut accuracy = Vec::new();
    for batch_norm in [true, false] {
        let mut model = residual_cnn(batch_norm)
            .compile(
                Loss::SparseCategoricalCrossentropy,
                nesterov(0.1),
                Device::gpu().expect("GPU tests need an adapter"),
                0,
            )
            .unwrap();
        model.fit(&train, &FitConfig::new(1, 64)).unwrap();
        accuracy.push(model.evaluate(&test, 500).unwrap().accuracy);
    }
    eprintln!("accuracy with and without batch normalization: {accuracy:?}");
    assert!(
        accuracy[0] > accuracy[1] + 0.02,
        "with batch normalization {}, without {}",
        accuracy[0],
        accuracy[1]
    );
}

#[test]
fn residual_cnn_with_batch_norm_reaches_87_percent_on_a_fashion_mnist_subset() {
    let data = fashion();
    let train = data.train.head(10_000);
    let t = Instant::now();
    let mut model = residual_cnn(true)
        .exclude_from_weight_decay(&["bias", "gamma", "beta"])
        .compile(
            Loss::SparseCategoricalCrossentropy,
            nesterov(0.05),
            Device::gpu().expect("GPU tests need an adapter"),
            0,
        )
        .unwrap();
    let (epochs, batch) = (4, 64);
    let steps = (epochs * train.len().div_ceil(batch)) as u64;
    let cfg = FitConfig {
        augment: Some(wgtrain::data::Augment {
            crop_padding: 0,
            flip: true,
        }),
        lr_schedule: wgtrain::optim::LrSchedule::WarmupCosine {
            warmup_steps: 50,
            decay_steps: steps - 50,
            alpha: 0.0,
        },
        ..FitConfig::new(epochs, batch)
    };
    let history = model.fit(&train, &cfg).unwrap();
    let test = model.evaluate(&data.test, 500).unwrap();
    eprintln!(
        "residual CNN: {:.3} after {:.0} s ({history:?})",
        test.accuracy,
        t.elapsed().as_secs_f64()
    );
    assert!(test.accuracy >= 0.87, "test accuracy {}", test.accuracy);
}

/// ResNet-20 as `Sequential::resnet` builds it: He et al.'s 0.27M parameters (273,258
/// trainable with projection shortcuts and convolution biases) and 1,568 running statistics;
/// 64 channels of 8x8 before pooling.
#[test]
fn resnet20_shapes_and_parameter_count() {
    let net = Sequential::resnet(&[3, 32, 32], 3, 10);
    let s = net.summary();
    assert!(s.contains("Trainable params: 273258"), "{s}");
    assert!(s.contains("Non-trainable params: 1568"), "{s}");
    assert!(
        s.contains("residual_8 (Residual s1)") && s.contains("(None, 64, 8, 8)"),
        "{s}"
    );
    assert_eq!(s.matches("(Residual s2)").count(), 2, "{s}");
    let built = net.build(true, 0).unwrap();
    assert!(built
        .params
        .iter()
        .any(|(n, _)| n == "residual_3.shortcut.weight"));
    assert!(built
        .buffers
        .iter()
        .any(|(n, _)| n == "residual_6.shortcut_bn.running_var"));
}

#[test]
fn residual_block_errors_name_the_layer() {
    let err = Sequential::new(&[8])
        .residual(Residual::new(4))
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (Residual) needs (batch, channels, height, width)"),
        "{err}"
    );
    let err = Sequential::new(&[1, 4, 4])
        .residual(Residual::new(4).stride(0))
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (Residual): filters and stride must be at least 1"),
        "{err}"
    );
    let err = Sequential::new(&[1, 4, 4])
        .batch_norm()
        .flatten()
        .dense(Dense::new(3))
        .residual(Residual::new(4))
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 3 (Residual)"), "{err}");
}
