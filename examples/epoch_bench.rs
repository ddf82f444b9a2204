//! Issue 5's benchmark: one full epoch of Fashion-MNIST (60,000 samples) at batch 128 with
//! Adam through the Keras-style API, loader thread running, for 784-128-10 and
//! 784-512-512-10, on the GPU and on the CPU executor in the same run.
//!
//! `cargo run --release --example epoch_bench [-- --epochs N]`
//! Each model trains N epochs (default 2) per device; the first epoch includes compiling the
//! plan, so the reported figure is the median of epochs 2..N (epoch 1 when N = 1).

use std::path::Path;

use clap::Parser;
use wgtrain::data::mnist;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer};

/// One full epoch of Fashion-MNIST through the Keras-style API, GPU and CPU executor.
#[derive(Parser)]
struct Cli {
    /// Epochs per model and device; the figure is the median of epochs 2..N.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
}

fn main() -> wgtrain::Result<()> {
    let epochs = Cli::parse().epochs as usize;
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))?;
    let gpu = Device::gpu()?;
    println!("adapter: {}", gpu.name());
    println!(
        "{:<16} {:<6} {:>12} {:>14} {:>12}",
        "model", "device", "samples/s", "loader wait s", "train acc"
    );
    for hidden in [vec![128], vec![512, 512]] {
        for device in [gpu.clone(), Device::Cpu] {
            let mut model = Sequential::new(&[28, 28]).flatten();
            for &h in &hidden {
                model = model.dense(Dense::new(h).activation(Activation::Relu));
            }
            let model = model.dense(Dense::new(10));
            let name = format!(
                "784-{}-10",
                hidden
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join("-")
            );
            let kind = if matches!(device, Device::Cpu) {
                "cpu"
            } else {
                "gpu"
            };
            let mut model = model.compile(
                Loss::SparseCategoricalCrossentropy,
                Optimizer::Adam(AdamConfig::adam(1e-3)),
                device,
                0,
            )?;
            let history = model.fit(&data.train, &FitConfig::new(epochs, 128))?;
            let timed = if epochs > 1 {
                &history.epochs[1..]
            } else {
                &history.epochs[..]
            };
            let mut speeds: Vec<f64> = timed.iter().map(|e| e.samples_per_sec).collect();
            speeds.sort_by(f64::total_cmp);
            let waits: Vec<String> = history
                .epochs
                .iter()
                .map(|e| format!("{:.3}", e.loader_wait_seconds))
                .collect();
            let last = history.epochs.last().expect("epochs ran");
            println!(
                "{name:<16} {kind:<6} {:>12.0} {:>14} {:>12.4}",
                speeds[speeds.len() / 2],
                waits.join("/"),
                last.accuracy().unwrap_or(f32::NAN)
            );
        }
    }
    Ok(())
}
