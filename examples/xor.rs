//! The smallest wgtrain program: learn XOR with a 2-8-1 network and binary cross-entropy,
//! fed from ndarray arrays. `cargo run --release --example xor` (add `-- --cpu` for the CPU
//! reference).

use ndarray::array;
use wgtrain::prelude::*;

fn main() -> wgtrain::Result<()> {
    let x = array![[0.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
    let y = array![0.0f32, 1.0, 1.0, 0.0];
    let data = ArrayDataset::regression(&x, &y)?;
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
    let history = model.fit(
        &data,
        &FitConfig {
            verbose: 0,
            ..FitConfig::new(300, 4)
        },
    )?;
    let last = history.epochs.last().expect("300 epochs ran");
    println!("epoch {}: {last}", last.epoch);
    let p = model.predict_array(&x)?;
    println!(
        "p(1) for 00 01 10 11: {:.3} -> {:?}",
        p.outputs.column(0),
        p.classes
    );
    Ok(())
}
