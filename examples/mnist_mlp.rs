//! Train a 784-128-10 MLP (or, with `--model cnn`, a small CNN) on MNIST (or Fashion-MNIST)
//! and report test accuracy and speed.
//!
//! `cargo run --release --example mnist_mlp -- --epochs 3`
//!
//! Built with `--features mpi` and started by `mpirun`, every rank trains on its share of
//! each batch (`--batch-size` is the global batch) and rank 0 reports, with where the
//! ranks' step time went:
//! `mpirun -np 2 cargo run --release --features mpi --example mnist_mlp -- --hidden 512,512`
//! Data: `--data DIR`, else ./data/mnist, else a download into ./data/mnist, else
//! Fashion-MNIST from /usr/share/datasets/fashion-mnist (with a notice), else an error that
//! says what to do.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use wgtrain::data::{download, picture};
use wgtrain::prelude::*;

#[derive(Clone, Copy, ValueEnum)]
enum Opt {
    Adam,
    /// Adam with decoupled weight decay (`--weight-decay`).
    Adamw,
    /// SGD with momentum 0.9.
    Sgd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Arch {
    /// 784-128-10, ReLU.
    Mlp,
    /// Conv16-Pool-Conv32-Pool-Dense10, ReLU.
    Cnn,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Dev {
    /// The GPU; the CPU executor when there is none, or when the only adapter is a software
    /// rasterizer and the model is dense (`Device::auto`).
    Auto,
    Gpu,
    Cpu,
}

#[derive(Parser)]
#[command(about = "Train an MLP on MNIST-format data")]
struct Cli {
    /// Directory with the four MNIST-format files (raw or .gz).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The network.
    #[arg(long, value_enum, default_value_t = Arch::Mlp)]
    model: Arch,
    /// The MLP's hidden layers (ReLU), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    hidden: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, value_enum, default_value_t = Opt::Adam)]
    optimizer: Opt,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f32,
    #[arg(long, value_enum, default_value_t = Dev::Auto)]
    device: Dev,
    /// Data-parallel replicas on the GPU (each its own device on the adapter), sharing every
    /// batch; 1 trains on one device.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training and N/6 test samples (quick runs, CI).
    #[arg(long)]
    limit: Option<usize>,
    /// Hold out this fraction of the training data for validation (Keras' validation_split).
    #[arg(long, default_value_t = 0.0)]
    validation_split: f64,
    /// Save a checkpoint here after every epoch; if the file exists, resume from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Where to write curves.png and predictions.png.
    #[arg(long, default_value = "out/mnist_mlp")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn find_data(cli: &Cli) -> wgtrain::Result<(mnist::Splits, String)> {
    if let Some(dir) = &cli.data {
        return Ok((mnist::load_mnist(dir)?, dir.display().to_string()));
    }
    let local = Path::new("data/mnist");
    if mnist::find_file(local, mnist::TRAIN_IMAGES).is_ok() {
        return Ok((mnist::load_mnist(local)?, local.display().to_string()));
    }
    match download::fetch(&download::MNIST, local, !cli.quiet) {
        Ok(_) => return Ok((mnist::load_mnist(local)?, local.display().to_string())),
        Err(e) => eprintln!("note: MNIST could not be downloaded ({e})"),
    }
    let fashion = Path::new(mnist::FASHION_MNIST_SYSTEM_DIR);
    if fashion.is_dir() {
        eprintln!(
            "note: using Fashion-MNIST from {} instead of MNIST",
            fashion.display()
        );
        return Ok((
            mnist::load_fashion_mnist(fashion)?,
            format!("{} (Fashion-MNIST)", fashion.display()),
        ));
    }
    Err(wgtrain::Error::Data {
        path: local.display().to_string(),
        detail: "no MNIST data: pass --data DIR, put the four MNIST files in ./data/mnist, or install Fashion-MNIST (apt-get install dataset-fashion-mnist)".into(),
    })
}

/// The MPI job this process is a rank of, when built with `--features mpi` and started by
/// `mpirun`.
#[cfg(feature = "mpi")]
type Job = Option<wgtrain::mpi::Mpi>;
#[cfg(not(feature = "mpi"))]
type Job = Option<std::convert::Infallible>;

fn job() -> wgtrain::Result<Job> {
    #[cfg(feature = "mpi")]
    if wgtrain::mpi::Mpi::launched() {
        return wgtrain::mpi::Mpi::init().map(Some);
    }
    Ok(None)
}

fn run(mut cli: Cli) -> wgtrain::Result<()> {
    let job = job()?;
    #[cfg(feature = "mpi")]
    let root = job.as_ref().is_none_or(|m| m.is_root());
    #[cfg(not(feature = "mpi"))]
    let root = job.is_none();
    // Only rank 0 prints (and writes files).
    cli.quiet |= !root;
    macro_rules! say {
        ($($t:tt)*) => { if root { println!($($t)*) } };
    }
    let (splits, source) = find_data(&cli)?;
    let (train, test) = match cli.limit {
        Some(n) => (splits.train.head(n), splits.test.head(n.div_ceil(6))),
        None => (splits.train, splits.test),
    };
    say!(
        "data: {source}: {} train, {} test samples",
        train.len(),
        test.len()
    );
    let relu = Activation::Relu;
    let model = match cli.model {
        Arch::Mlp => cli
            .hidden
            .iter()
            .fold(Sequential::new(&[28, 28]).flatten(), |m, &h| {
                m.dense(Dense::new(h).activation(relu))
            })
            .dense(Dense::new(10)),
        Arch::Cnn => Sequential::new(&[1, 28, 28])
            .conv2d(Conv2d::new(16, 3).activation(relu))
            .max_pool2d(2)
            .conv2d(Conv2d::new(32, 3).activation(relu))
            .max_pool2d(2)
            .flatten()
            .dense(Dense::new(10)),
    };
    if root {
        print!("{}", model.summary());
    }
    let device = match cli.device {
        #[cfg(feature = "mpi")]
        Dev::Gpu | Dev::Auto if job.is_some() => Device::mpi(job.as_ref().expect("checked"))?,
        Dev::Gpu | Dev::Auto if cli.replicas > 1 => Device::gpus(cli.replicas)?,
        Dev::Auto => Device::auto(cli.model == Arch::Cnn)?,
        Dev::Gpu => Device::gpu()?,
        Dev::Cpu => Device::Cpu,
    };
    say!("device: {}", device.name());
    let optimizer = match cli.optimizer {
        Opt::Adam => Optimizer::Adam(AdamConfig::adam(cli.lr)),
        Opt::Adamw => Optimizer::Adam(AdamConfig::adamw(cli.lr, cli.weight_decay)),
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
        say!(
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
        ..FitConfig::new(cli.epochs, cli.batch_size)
    };
    let history = model.fit(&train, &cfg)?;
    let result = model.evaluate(&test, 512)?;
    say!(
        "test: loss {:.4}, accuracy {:.4} on {} samples",
        result.mean_loss,
        result.accuracy,
        result.samples
    );
    if let Some(mean) = history.samples_per_sec() {
        say!(
            "training speed: {mean:.0} samples/s on {}",
            model.device().name()
        );
    }
    // (A job of one rank passes steps through and times nothing.)
    #[cfg(feature = "mpi")]
    if let Some(mpi) = job.as_ref().filter(|m| m.size() > 1) {
        let t = mpi.step_times();
        let ms = |d: std::time::Duration| 1e3 * d.as_secs_f64() / t.steps.max(1) as f64;
        say!(
            "rank 0, per step ({} steps): compute {:.2} ms, read-back {:.2} ms, all-reduce {:.2} \
             ms, write {:.2} ms",
            t.steps,
            ms(t.compute),
            ms(t.read_back),
            ms(t.all_reduce),
            ms(t.write)
        );
    }
    if !root {
        return Ok(());
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
