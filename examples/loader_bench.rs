//! Loader throughput, to compare with training speed (the loader must never be the
//! bottleneck): batches/s and samples/s over full epochs of Fashion-MNIST (batch 128,
//! shuffled, normalized) and of CIFAR-10-sized data (50,000 3x32x32 images, batch 128, random
//! crops and flips). CIFAR-10 itself is used when `--cifar DIR` points at it; otherwise
//! synthetic images of the same size stand in (the work per image is the same).
//!
//! `cargo run --release --example loader_bench [-- --cifar DIR] [--epochs N]`
//! Each figure is the median over N epochs (default 5) after one warm-up epoch; the consumer
//! recycles every batch, as a trainer does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use std::time::Instant;

use wgtrain::data::{Loader, LoaderConfig};
use wgtrain::prelude::*;

fn bench(name: &str, data: Arc<Dataset>, cfg: LoaderConfig, epochs: usize) -> wgtrain::Result<()> {
    let mut times = Vec::new();
    let mut batches = 0;
    for run in 0..=epochs {
        let mut loader = Loader::new(
            data.clone(),
            None,
            LoaderConfig {
                seed: run as u64,
                ..cfg.clone()
            },
        )?;
        batches = loader.batches_per_epoch();
        let start = Instant::now();
        while let Some(batch) = loader.next_batch() {
            loader.recycle(batch?);
        }
        if run > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    println!(
        "{name:<44} {:>10.0} {:>12.0} {:>9.3}",
        batches as f64 / t,
        data.len() as f64 / t,
        t
    );
    Ok(())
}

/// Loader throughput over full epochs of Fashion-MNIST and CIFAR-10-sized data.
#[derive(Parser)]
struct Cli {
    /// A CIFAR-10 binary directory; without it, synthetic images of the same size.
    #[arg(long, value_name = "DIR")]
    cifar: Option<PathBuf>,
    /// Timed epochs per figure (the median is reported), after one warm-up epoch.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
}

fn main() -> wgtrain::Result<()> {
    let cli = Cli::parse();
    let epochs = cli.epochs as usize;
    println!(
        "{:<44} {:>10} {:>12} {:>9}",
        "dataset (batch 128)", "batches/s", "samples/s", "epoch s"
    );

    let fashion = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))?;
    bench(
        "Fashion-MNIST train, shuffled, x/255",
        Arc::new(fashion.train),
        LoaderConfig::new(128),
        epochs,
    )?;

    let (data, name) = match &cli.cifar {
        Some(dir) => (
            cifar10::load(dir)?.train,
            "CIFAR-10 train, crop+flip, mean/std",
        ),
        None => {
            let n: usize = 50_000;
            let images = (0..n * 3072)
                .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            let labels = (0..n).map(|i| (i % 10) as u8).collect();
            let ds = Dataset {
                images,
                labels,
                channels: 3,
                height: 32,
                width: 32,
                num_classes: 10,
                class_names: cifar10::CLASSES.iter().map(|s| s.to_string()).collect(),
            };
            (ds, "CIFAR-10-sized synthetic, crop+flip, mean/std")
        }
    };
    let cfg = LoaderConfig {
        augment: Some(Augment::cifar()),
        normalize: Normalize::MeanStd {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        },
        ..LoaderConfig::new(128)
    };
    bench(name, Arc::new(data), cfg, epochs)
}
