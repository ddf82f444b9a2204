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
