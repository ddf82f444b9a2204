//! Issue 5's benchmark: one full epoch of Fashion-MNIST (60,000 samples) at batch 128 with
//! Adam through the Keras-style API, loader thread running, for 784-128-10 and
//! 784-512-512-10, on the GPU and on the CPU executor in the same run.
//!
//! `cargo run --release --example epoch_bench [-- --epochs N]`
//! Each model trains N epochs (default 2) per device; the first epoch includes compiling the
//! plan, so the reported figure is the median of epochs 2..N (epoch 1 when N = 1).
//!
//! `-- --arrays R` instead compares, for 784-128-10 on the GPU, the u8 image path with the
//! same 60,000 samples as an f32 `ArrayDataset` (pixels / 255): R rounds, the two kinds in
//! alternating order (ABBA), each a fresh model trained 2 epochs whose second is timed;
//! it prints the medians and their ratio.

use std::path::Path;

use clap::Parser;
use wgtrain::prelude::*;

/// One full epoch of Fashion-MNIST through the Keras-style API, GPU and CPU executor.
#[derive(Parser)]
struct Cli {
    /// Epochs per model and device; the figure is the median of epochs 2..N.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Compare u8 images with f32 arrays over this many alternated rounds instead.
    #[arg(long)]
    arrays: Option<u32>,
}

/// Samples per second of the second epoch of a fresh 784-128-10 trained on `data`.
fn second_epoch<S: wgtrain::data::Samples>(
    data: &S,
    device: &Device,
) -> wgtrain::Result<(f64, f64)> {
    let mut model = Sequential::new(&[784])
        .dense(Dense::new(128).activation(Activation::Relu))
        .dense(Dense::new(10))
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            device.clone(),
            0,
        )?;
    let h = model.fit(
        data,
        &FitConfig {
            verbose: 0,
            ..FitConfig::new(2, 128)
        },
    )?;
    Ok((h.epochs[1].samples_per_sec, h.epochs[1].loader_wait_seconds))
}

fn compare_arrays(rounds: u32) -> wgtrain::Result<()> {
    let images = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))?.train;
    let x = ndarray::Array2::from_shape_vec(
        (images.len(), 784),
        images.images.iter().map(|&b| b as f32 / 255.0).collect(),
    )
    .expect("60,000 x 784");
    let labels: Vec<u32> = images.labels.iter().map(|&l| l as u32).collect();
    let arrays = wgtrain::data::ArrayDataset::classification(&x, &labels, 10)?;
    let gpu = Device::gpu()?;
    println!("adapter: {}", gpu.name());
    let (mut u8s, mut f32s) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // ABBA: the kind that goes first alternates.
        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let (s, w) = second_epoch(&images, &gpu)?;
                println!("round {round}: u8 images  {s:>8.0} samples/s, loader wait {w:.3} s");
                u8s.push(s);
            } else {
                let (s, w) = second_epoch(&arrays, &gpu)?;
                println!("round {round}: f32 arrays {s:>8.0} samples/s, loader wait {w:.3} s");
                f32s.push(s);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut u8s), median(&mut f32s));
    println!(
        "median: u8 images {a:.0}, f32 arrays {b:.0} samples/s; f32 / u8 = {:.3}",
        b / a
    );
    Ok(())
}

fn main() -> wgtrain::Result<()> {
    let cli = Cli::parse();
    if let Some(rounds) = cli.arrays {
        return compare_arrays(rounds);
    }
    let epochs = cli.epochs as usize;
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
            let history = model.fit(
                &data.train,
                &FitConfig {
                    verbose: 0,
                    ..FitConfig::new(epochs, 128)
                },
            )?;
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
