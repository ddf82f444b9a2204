//! Keras programs translated line for line fall into no silent trap: data in Keras' image
//! layout is refused with the fix, and the same data transposed trains.

use ndarray::Array4;
use rand::{Rng, SeedableRng};
use wgtrain::prelude::*;

/// `n` 8x8 images of 3 channels in Keras' layout, (n, height, width, channels): class 1 has
/// a bright red top half, class 0 a bright blue bottom half, on noise.
fn channels_last(n: usize) -> (Array4<f32>, Vec<u32>) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let x = Array4::from_shape_fn((n, 8, 8, 3), |(i, y, _, c)| {
        let lit = if labels[i] == 1 {
            y < 4 && c == 0
        } else {
            y >= 4 && c == 2
        };
        rng.random_range(0.0..0.3) + if lit { 0.7 } else { 0.0 }
    });
    (x, labels)
}

fn cnn() -> Sequential {
    Sequential::new(&[3, 8, 8])
        .conv2d(Conv2d::new(4, 3).activation(Activation::Relu))
        .flatten()
        .dense(Dense::new(2))
}

fn compile(net: Sequential) -> Result<Model> {
    net.compile(
        Loss::SparseCategoricalCrossentropy,
        Optimizer::Adam(AdamConfig::adam(1e-2)),
        Device::Cpu,
        0,
    )
}

#[test]
fn channels_last_images_are_refused_with_the_fix_and_train_once_transposed() {
    let (x, labels) = channels_last(64);
    let keras_layout = ArrayDataset::classification(&x, &labels, 2).unwrap();
    let mut model = compile(cnn()).unwrap();
    let quiet = FitConfig {
        verbose: 0,
        ..FitConfig::new(5, 16)
    };
    // The element count matches, so only the shape can tell: it is checked, and named.
    let err = model.fit(&keras_layout, &quiet).unwrap_err().to_string();
    assert!(
        err.contains("[3, 8, 8]")
            && err.contains("[8, 8, 3]")
            && err.contains("channels last")
            && err.contains("permuted_axes([0, 3, 1, 2])"),
        "{err}"
    );
    assert!(model.evaluate(&keras_layout, 32).is_err());
    let err = model.predict_array(&x).unwrap_err().to_string();
    assert!(err.contains("channels last"), "{err}");

    // The fix the message names trains the model.
    let nchw = x
        .view()
        .permuted_axes([0, 3, 1, 2])
        .as_standard_layout()
        .to_owned();
    let data = ArrayDataset::classification(&nchw, &labels, 2).unwrap();
    model.fit(&data, &quiet).unwrap();
    assert_eq!(model.evaluate(&data, 32).unwrap().accuracy, 1.0);

    // A flat model takes the same values in any shape; axes of size 1 do not count.
    let flat = Sequential::new(&[192]).dense(Dense::new(2));
    compile(flat).unwrap().fit(&keras_layout, &quiet).unwrap();
    let gray = Array4::from_shape_fn((4, 1, 8, 8), |(i, _, y, x)| (i + y + x) as f32 / 20.0);
    let gray = ArrayDataset::classification(&gray, &[0, 1, 0, 1], 2).unwrap();
    let unit_axis = Sequential::new(&[8, 8]).flatten().dense(Dense::new(2));
    compile(unit_axis).unwrap().fit(&gray, &quiet).unwrap();
}

/// Keras' layout taken as it is: `Sequential::new(&[8, 8, 3]).channels_last()` trains on
/// (n, 8, 8, 3) arrays exactly as the channels-first model trains on the transposed array
/// (the device permutes each batch; same seed, same bits), on both executors.
#[test]
fn channels_last_models_train_on_keras_layout_bit_for_bit() {
    let (x, labels) = channels_last(64);
    let nhwc = ArrayDataset::classification(&x, &labels, 2).unwrap();
    let nchw = x
        .view()
        .permuted_axes([0, 3, 1, 2])
        .as_standard_layout()
        .to_owned();
    let nchw = ArrayDataset::classification(&nchw, &labels, 2).unwrap();
    let layers = |net: Sequential| {
        net.conv2d(Conv2d::new(4, 3).activation(Activation::Relu))
            .flatten()
            .dense(Dense::new(2))
    };
    let quiet = FitConfig {
        verbose: 0,
        ..FitConfig::new(3, 16)
    };
    let gpu = Device::gpu().expect("GPU tests need an adapter (install mesa-vulkan-drivers)");
    for device in [Device::Cpu, gpu] {
        let name = device.name();
        let run = |net: Sequential, data: &ArrayDataset| {
            let mut m = net
                .compile(
                    Loss::SparseCategoricalCrossentropy,
                    Optimizer::Adam(AdamConfig::adam(1e-2)),
                    device.clone(),
                    0,
                )
                .unwrap();
            let h = m.fit(data, &quiet).unwrap();
            let losses: Vec<f32> = h.epochs.iter().map(|e| e.loss).collect();
            (losses, m.predict(data).unwrap().outputs)
        };
        let keras = run(layers(Sequential::new(&[8, 8, 3]).channels_last()), &nhwc);
        let ours = run(layers(Sequential::new(&[3, 8, 8])), &nchw);
        assert_eq!(keras, ours, "{name}");
    }
    // Channels-first data into the channels-last model is named the other way round.
    let mut m = compile(layers(Sequential::new(&[8, 8, 3]).channels_last())).unwrap();
    let err = m.fit(&nchw, &quiet).unwrap_err().to_string();
    assert!(err.contains("takes channels-last images"), "{err}");
    let summary = layers(Sequential::new(&[8, 8, 3]).channels_last()).summary();
    assert!(
        summary.contains("Permute") && summary.contains("(None, 3, 8, 8)"),
        "{summary}"
    );
    // Keras' Permute checks its order.
    let err = compile(
        Sequential::new(&[8, 8, 3])
            .push(Layer::permute(&[3, 3, 1]))
            .flatten()
            .dense(Dense::new(2)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("must order the 3 sample axes"), "{err}");
}

#[test]
fn a_keras_input_shape_names_the_channels_first_layout() {
    // Keras' `input_shape=(28, 28, 1)` with a 3x3 convolution.
    let err = compile(
        Sequential::new(&[28, 28, 1])
            .conv2d(Conv2d::new(8, 3))
            .flatten()
            .dense(Dense::new(10)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("channels first")
            && err.contains("channels-last layout")
            && err.contains("write (1, 28, 28)"),
        "{err}"
    );
}

/// Trains `build`'s model 4 epochs straight, and 2 epochs, saved, opened with `load_model_on`
/// (no model compiled by hand), then 2 more: the opened model predicts what the saved one
/// did, bit for bit, and its final checkpoint is byte-identical to the straight run's.
fn load_model_round_trip(
    what: &str,
    build: &dyn Fn(Device) -> Model,
    data: &ArrayDataset,
    cfg: &dyn Fn(usize, usize) -> FitConfig,
) {
    let dir = tempfile::tempdir().unwrap();
    let gpu = Device::gpu().expect("GPU tests need an adapter (install mesa-vulkan-drivers)");
    for device in [Device::Cpu, gpu] {
        let name = format!("{what} on {}", device.name());
        let (straight, split, resumed) = (
            dir.path().join("straight"),
            dir.path().join("split"),
            dir.path().join("resumed"),
        );
        let mut a = build(device.clone());
        a.fit(data, &cfg(4, 0)).unwrap();
        a.save(&straight).unwrap();
        let mut b = build(device.clone());
        b.fit(data, &cfg(2, 0)).unwrap();
        b.save(&split).unwrap();
        let mut c = load_model_on(&split, device.clone()).unwrap();
        assert_eq!(c.predict(data).unwrap(), b.predict(data).unwrap(), "{name}");
        assert_eq!(c.epoch(), 2, "{name}");
        c.fit(data, &cfg(4, c.epoch())).unwrap();
        c.save(&resumed).unwrap();
        assert!(
            std::fs::read(&straight).unwrap() == std::fs::read(&resumed).unwrap(),
            "{name}: the resumed checkpoint differs from the straight run's"
        );
    }
}

#[test]
fn load_model_opens_a_checkpoint_in_one_call() {
    let quiet = |epochs: usize, initial: usize| FitConfig {
        verbose: 0,
        initial_epoch: initial,
        seed: 5,
        ..FitConfig::new(epochs, 16)
    };
    // A Sequential CNN in Keras' layout with dropout (its masks follow the saved seed).
    let (x, labels) = channels_last(48);
    let images = ArrayDataset::classification(&x, &labels, 2).unwrap();
    let cnn = |device| {
        Sequential::new(&[8, 8, 3])
            .channels_last()
            .conv2d(Conv2d::new(4, 3).activation(Activation::Relu))
            .dropout(0.25)
            .flatten()
            .dense(Dense::new(2))
            .compile(
                Loss::SparseCategoricalCrossentropy,
                Optimizer::Adam(AdamConfig::adam(1e-2)),
                device,
                7,
            )
            .unwrap()
            .with_metrics(&[Metric::Accuracy])
            .unwrap()
    };
    load_model_round_trip("sequential CNN", &cnn, &images, &quiet);

    // A functional graph with two branches, batch normalization and a merge, on a scaled
    // table with named classes.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
    let table = ndarray::Array2::from_shape_fn((60, 5), |_| rng.random_range(-50.0f32..50.0));
    let classes: Vec<u32> = (0..60)
        .map(|i| (table[[i, 0]] > table[[i, 1]]) as u32 + (i % 2) as u32)
        .collect();
    let mut tabular = ArrayDataset::classification(&table, &classes, 3).unwrap();
    tabular.class_names = vec!["low".into(), "mid".into(), "high".into()];
    let functional = |device| {
        let x = Input::new(&[5]);
        let a = Dense::new(8).on(&x);
        let a = Layer::BatchNorm {
            eps: 1e-3,
            momentum: 0.2,
        }
        .on(&a);
        let a = Layer::Activation(Activation::Relu).on(&a);
        let b = Dense::new(4).activation(Activation::Tanh).on(&x);
        let h = concatenate(&[&a, &b]);
        let y = Dense::new(3).on(&h);
        Functional::new(&[&x], &[&y])
            .unwrap()
            .compile(
                Loss::SparseCategoricalCrossentropy,
                Optimizer::Sgd(SgdConfig {
                    momentum: 0.9,
                    ..SgdConfig::new(0.05)
                }),
                device,
                3,
            )
            .unwrap()
    };
    let scaled = |epochs: usize, initial: usize| FitConfig {
        scale_features: Some(Scaling::Standard),
        ..quiet(epochs, initial)
    };
    load_model_round_trip(
        "functional BN on a scaled table",
        &functional,
        &tabular,
        &scaled,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut m = functional(Device::Cpu);
    m.fit(&tabular, &scaled(1, 0)).unwrap();
    m.save(&path).unwrap();
    let mut opened = load_model(&path).unwrap();
    let p = opened.predict(&tabular).unwrap();
    assert_eq!(p.class_names, ["low", "mid", "high"]);
    assert_eq!(p, m.predict(&tabular).unwrap());
    assert_eq!(opened.network().summary(), m.network().summary());
    assert_eq!(opened.architecture(), m.architecture());

    // A file that describes no model, or a damaged description, is an error naming it.
    let mut bytes = std::fs::read(&path).unwrap();
    // Same length, so the file stays well-formed: only the description is damaged.
    let at = bytes
        .windows(9)
        .position(|w| w == b"\\\"calls\\\"")
        .unwrap();
    bytes[at + 6] = b'z';
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    let err = load_model(&bad).err().unwrap().to_string();
    assert!(
        err.contains("bad.safetensors") && err.contains("model description"),
        "{err}"
    );
    let err = load_model(&dir.path().join("absent"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("absent"), "{err}");
}

/// The summary as Keras prints it: an input row, and every layer under its own name (two
/// dropout layers are two rows with two names).
#[test]
fn the_summary_has_an_input_row_and_unique_names() {
    let s = Sequential::new(&[28, 28])
        .flatten()
        .dense(Dense::new(128).activation(Activation::Relu))
        .dropout(0.2)
        .dense(Dense::new(64))
        .dropout(0.2)
        .dense(Dense::new(10))
        .summary();
    assert!(
        s.contains("input (InputLayer)") && s.contains("(None, 28, 28)"),
        "{s}"
    );
    for name in [
        "flatten_0",
        "dense_0",
        "dropout_0",
        "dense_1",
        "dropout_1",
        "dense_2",
    ] {
        assert_eq!(s.matches(&format!("{name} (")).count(), 1, "{name}: {s}");
    }
}

/// A model too large to hold is an error naming its size before anything is allocated
/// (it was an allocation abort), and so is an input shape whose size cannot be counted.
#[test]
fn a_model_too_large_to_allocate_is_an_error() {
    let sgd = || Optimizer::Sgd(SgdConfig::new(0.1));
    let err = Sequential::new(&[1 << 40])
        .dense(Dense::new(1 << 30))
        .compile(Loss::MeanSquaredError, sgd(), Device::Cpu, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("more than this machine can allocate"), "{err}");
    let err = Sequential::new(&[usize::MAX / 2, 4])
        .flatten()
        .dense(Dense::new(2))
        .compile(Loss::MeanSquaredError, sgd(), Device::Cpu, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("more values per sample than can be counted"),
        "{err}"
    );
}
