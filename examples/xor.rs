//! The smallest wgtrain program: learn XOR with a 2-8-1 network and binary cross-entropy.
//! `cargo run --release --example xor` (add `-- --cpu` for the CPU reference).

use wgtrain::data::Dataset;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer};

fn main() -> wgtrain::Result<()> {
    // The four cases as 1x2 "images": pixel 255 is input 1 after the usual x / 255.
    let data = Dataset {
        images: vec![0, 0, 0, 255, 255, 0, 255, 255],
        labels: vec![0, 1, 1, 0],
        channels: 1,
        height: 1,
        width: 2,
        num_classes: 2,
        class_names: vec!["0".into(), "1".into()],
    };
    let device = if std::env::args().any(|a| a == "--cpu") {
        Device::Cpu
    } else {
        Device::gpu()?
    };
    let mut model = Sequential::new(&[2])
        .dense(Dense::new(8).activation(Activation::Tanh))
        .dense(Dense::new(1))
        .compile(
            Loss::BinaryCrossentropy { from_logits: true },
            Optimizer::Adam(AdamConfig::adam(0.05)),
            device,
            1,
        )?;
    let history = model.fit(&data, &FitConfig::new(300, 4))?;
    let last = history.epochs.last().expect("300 epochs ran");
    let p = model.predict(&[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], 4)?;
    println!(
        "loss {:.4}, binary accuracy {:.2}",
        last.loss, last.accuracy
    );
    println!(
        "p(1) for 00 01 10 11: {:.3?} -> {:?}",
        p.probabilities, p.classes
    );
    Ok(())
}
