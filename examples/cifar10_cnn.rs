//! Train the classic Keras CIFAR-10 CNN (Conv32-Conv32-Pool-Conv64-Conv64-Pool-Dense512-
//! Dense10, ReLU, dropout, Adam) with crop-and-flip augmentation.
//!
//! `cargo run --release --example cifar10_cnn -- --epochs 10`
//! Data: `--data DIR` (the six binary batch files, or their `cifar-10-batches-bin` folder),
//! else ./data/cifar10, else `--download` fetches it there (163 MB, checksummed), else an
//! error that says how to get it.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wgtrain::data::picture;
use wgtrain::prelude::*;

#[derive(Clone, Copy, ValueEnum)]
enum Opt {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Dev {
    Gpu,
    Cpu,
}

#[derive(Parser)]
#[command(about = "Train a CNN on CIFAR-10")]
struct Cli {
    /// Directory with the CIFAR-10 binary batches.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Download CIFAR-10 into ./data/cifar10 when it is not there.
    #[arg(long)]
    download: bool,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, value_enum, default_value_t = Opt::Adam)]
    optimizer: Opt,
    #[arg(long, value_enum, default_value_t = Dev::Gpu)]
    device: Dev,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hold out this fraction of the training data for validation.
    #[arg(long, default_value_t = 0.0)]
    validation_split: f64,
    /// Save a checkpoint here after every epoch; if the file exists, resume from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Where to write curves.png and predictions.png.
    #[arg(long, default_value = "out/cifar10_cnn")]
    out: PathBuf,
    /// Use only the first N training and N/5 test images (quick runs, CI).
    #[arg(long)]
    limit: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// The network of the Keras CIFAR-10 example.
fn network() -> Sequential {
    let relu = Activation::Relu;
    Sequential::new(&[3, 32, 32])
        .conv2d(Conv2d::new(32, 3).same().activation(relu))
        .conv2d(Conv2d::new(32, 3).activation(relu))
        .max_pool2d(2)
        .dropout(0.25)
        .conv2d(Conv2d::new(64, 3).same().activation(relu))
        .conv2d(Conv2d::new(64, 3).activation(relu))
        .max_pool2d(2)
        .dropout(0.25)
        .flatten()
        .dense(Dense::new(512).activation(relu))
        .dropout(0.5)
        .dense(Dense::new(10))
}

fn run(cli: Cli) -> wgtrain::Result<()> {
    let splits = cifar10::locate(cli.data.as_deref(), cli.download, !cli.quiet)?;
    let (train, test) = match cli.limit {
        Some(n) => (splits.train.head(n), splits.test.head(n.div_ceil(5))),
        None => (splits.train, splits.test),
    };
    println!("data: {} train, {} test images", train.len(), test.len());
    let model = network();
    print!("{}", model.summary());
    let device = match cli.device {
        Dev::Gpu => Device::gpu()?,
        Dev::Cpu => Device::Cpu,
    };
    println!("device: {}", device.name());
    let optimizer = match cli.optimizer {
        Opt::Adam => Optimizer::Adam(AdamConfig::adam(cli.lr)),
        Opt::Sgd => Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(cli.lr)
        }),
    };
    let mut model = model.compile(
        Loss::SparseCategoricalCrossentropy,
        optimizer,
        device,
        cli.seed,
    )?;
    if let Some(path) = cli.checkpoint.as_ref().filter(|p| p.exists()) {
        model.load(path)?;
        println!(
            "resuming from {} after epoch {}",
            path.display(),
            model.epoch()
        );
    }
    let cfg = FitConfig {
        seed: cli.seed,
        verbose: if cli.quiet { 2 } else { 1 },
        validation_split: cli.validation_split,
        checkpoint: cli.checkpoint.clone(),
        initial_epoch: model.epoch(),
        normalize: Normalize::MeanStd {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        },
        augment: Some(Augment::cifar()),
        ..FitConfig::new(cli.epochs, cli.batch_size)
    };
    let history = model.fit(&train, &cfg)?;
    let result = model.evaluate(&test, 256)?;
    println!(
        "test: loss {:.4}, accuracy {:.4} on {} images",
        result.mean_loss, result.accuracy, result.samples
    );
    if let Some(speed) = history.samples_per_sec() {
        println!(
            "training speed: {speed:.0} images/s on {}",
            model.device().name()
        );
    }
    std::fs::create_dir_all(&cli.out).map_err(|e| wgtrain::Error::io(&cli.out, e))?;
    if !history.epochs.is_empty() {
        let curves = cli.out.join("curves.png");
        history.save_plot(&curves)?;
        println!("wrote {}", curves.display());
    }
    let shown: Vec<usize> = (0..test.len().min(40)).collect();
    let predicted = model.predict(&test.head(shown.len()))?;
    let grid = cli.out.join("predictions.png");
    picture::save_grid(&grid, &test, &shown, 10, Some(&predicted.classes))?;
    println!("wrote {} (green: right, red: wrong)", grid.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
