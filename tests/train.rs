//! Keras-style training: Fashion-MNIST accuracy on both devices, summaries, errors,
//! prediction, and the main example end to end on a subset.

mod common;

use std::path::Path;

use wgtrain::cpu::Activation;
use wgtrain::data::mnist;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Sequential};
use wgtrain::optim::{AdamConfig, Optimizer};

fn mlp() -> Sequential {
    Sequential::new(&[28, 28])
        .flatten()
        .dense(Dense::new(128).activation(Activation::Relu))
        .dense(Dense::new(10))
}

#[test]
fn fashion_mnist_mlp_reaches_85_percent_on_gpu_and_cpu() {
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST must be installed (.ci/run installs dataset-fashion-mnist)");
    let adam = Optimizer::Adam(AdamConfig::adam(1e-3));
    let ctx =
        std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter"));
    let mut accuracy = Vec::new();
    for device in [Device::Gpu(ctx), Device::Cpu] {
        let mut model = mlp()
            .compile(Loss::SparseCategoricalCrossentropy, adam, device, 0)
            .unwrap();
        let history = model.fit(&data.train, &FitConfig::new(3, 128)).unwrap();
        assert_eq!(history.epochs.len(), 3);
        assert!(
            history.epochs[2].loss < history.epochs[0].loss,
            "{history:?}"
        );
        let test = model.evaluate(&data.test, 512).unwrap();
        assert_eq!(test.samples, 10_000);
        accuracy.push(test.accuracy);
    }
    assert!(accuracy[0] >= 0.85, "GPU test accuracy {}", accuracy[0]);
    assert!(
        (accuracy[0] - accuracy[1]).abs() <= 0.005,
        "GPU {} vs CPU {}",
        accuracy[0],
        accuracy[1]
    );
}

#[test]
fn summary_errors_and_prediction() {
    let s = mlp().summary();
    assert!(
        s.contains("dense_0 (Dense, relu)")
            && s.contains("(None, 128)")
            && s.contains("100480")
            && s.contains("Total params: 101770"),
        "{s}"
    );
    // A Dense layer on unflattened images names the layer and the fix.
    let err = Sequential::new(&[28, 28])
        .dense(Dense::new(10))
        .build(true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (Dense)") && err.contains("Flatten"),
        "{err}"
    );

    let mut model = mlp()
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::Cpu,
            1,
        )
        .unwrap();
    let x = common::uniform(3, 5 * 784, 0.0, 1.0);
    let p = model.predict(&x, 5).unwrap();
    assert_eq!((p.probabilities.len(), p.classes.len()), (50, 5));
    for row in p.probabilities.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    assert!(model.predict(&x, 4).is_err());
    let small = wgtrain::data::Dataset {
        images: vec![0; 2 * 9],
        labels: vec![0, 1],
        channels: 1,
        height: 3,
        width: 3,
        num_classes: 10,
        class_names: vec![],
    };
    let err = model
        .fit(&small, &FitConfig::new(1, 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("784 inputs") && err.contains("has 9"), "{err}");
}

#[test]
fn mnist_mlp_example_runs_end_to_end() {
    // cargo test builds the examples next to the test binaries (target/<profile>/examples).
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("mnist_mlp");
    let out = std::process::Command::new(&example)
        .args([
            "--data",
            mnist::FASHION_MNIST_SYSTEM_DIR,
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--quiet",
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", example.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Total params: 101770")
            && stdout.contains("epoch 1/1")
            && stdout.contains("test: loss"),
        "{stdout}"
    );
}
