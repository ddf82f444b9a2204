//! Train ResNet-20 (He et al. 2015, section 4.2, with 1x1 projection shortcuts: option B) on
//! CIFAR-10: SGD with Nesterov momentum 0.9, a linear warm-up then cosine decay, weight decay
//! 5e-4 on the convolution and dense weights only (not on biases or batch normalization's
//! gamma and beta: a parameter group), label smoothing 0.1, 4-pixel crops and horizontal
//! flips.
//!
//! `cargo run --release --example resnet -- --download --epochs 30`
//! Data: `--data DIR`, else ./data/cifar10, else `--download` fetches it there (163 MB,
//! checksummed). `--limit N` trains on the first N images (and tests on N/5) for quick runs;
//! `--depth-n 1` builds ResNet-8 instead of ResNet-20 (n = 3).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wgtrain::prelude::*;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Dev {
    Gpu,
    Cpu,
}

#[derive(Parser)]
#[command(about = "Train ResNet-20 on CIFAR-10")]
struct Cli {
    /// Directory with the CIFAR-10 binary batches.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Download CIFAR-10 into ./data/cifar10 when it is not there.
    #[arg(long)]
    download: bool,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate, reached after the warm-up.
    #[arg(long, default_value_t = 0.1)]
    lr: f32,
    /// Warm-up length in epochs.
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Label smoothing of the cross-entropy targets.
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f32,
    /// Residual blocks per stage: the network is ResNet-(6n+2).
    #[arg(long, default_value_t = 3)]
    depth_n: usize,
    #[arg(long, value_enum, default_value_t = Dev::Gpu)]
    device: Dev,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint here after every epoch; if the file exists, resume from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Use only the first N training and N/5 test images (quick runs, CI).
    #[arg(long)]
    limit: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn run(cli: Cli) -> wgtrain::Result<()> {
    if cli.depth_n == 0 || cli.epochs == 0 || cli.batch_size == 0 {
        return Err(wgtrain::Error::invalid(
            "resnet",
            "--depth-n, --epochs and --batch-size must be at least 1",
        ));
    }
    let splits = cifar10::locate(cli.data.as_deref(), cli.download, !cli.quiet)?;
    let (train, test) = match cli.limit {
        Some(n) => (splits.train.head(n), splits.test.head(n.div_ceil(5))),
        None => (splits.train, splits.test),
    };
    println!("data: {} train, {} test images", train.len(), test.len());
    let model = Sequential::resnet(&[3, 32, 32], cli.depth_n, 10)
        .exclude_from_weight_decay(&["bias", "gamma", "beta"]);
    print!("{}", model.summary());
    let device = match cli.device {
        Dev::Gpu => Device::gpu()?,
        Dev::Cpu => Device::Cpu,
    };
    println!("device: {}", device.name());
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: cli.weight_decay,
        ..SgdConfig::new(cli.lr)
    });
    let loss = Loss::CategoricalCrossentropy {
        label_smoothing: cli.label_smoothing,
    };
    let mut model = model.compile(loss, sgd, device, cli.seed)?;
    if let Some(path) = cli.checkpoint.as_ref().filter(|p| p.exists()) {
        model.load(path)?;
        println!(
            "resuming from {} after epoch {}",
            path.display(),
            model.epoch()
        );
    }
    let steps_per_epoch = train.len().div_ceil(cli.batch_size);
    let warmup_steps = ((cli.warmup_epochs * steps_per_epoch as f64) as u64).max(1);
    let total = (cli.epochs * steps_per_epoch) as u64;
    let cfg = FitConfig {
        seed: cli.seed,
        verbose: if cli.quiet { 2 } else { 1 },
        checkpoint: cli.checkpoint.clone(),
        initial_epoch: model.epoch(),
        normalize: Normalize::MeanStd {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        },
        augment: Some(Augment::cifar()),
        lr_schedule: LrSchedule::WarmupCosine {
            warmup_steps,
            decay_steps: total.saturating_sub(warmup_steps).max(1),
            alpha: 0.0,
        },
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
