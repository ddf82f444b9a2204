//! A functional model on scikit-learn's breast cancer table (Debian's `python3-sklearn`):
//!
//! ```sh
//! cargo run --release --example functional [-- --device cpu --epochs 60]
//! ```
//!
//! The 30 features are ten measurements of cell nuclei, each as a mean, a standard error and
//! a worst (largest) value, in that order. The model reads them as three inputs. One encoder
//! (a shared `LayerRef`) reads both the mean and the worst values, since after
//! standardization they describe the same measurements. The standard errors get their own
//! encoder. The encoded mean and worst values are gated by each other (`multiply`), and the
//! result is concatenated with the errors' encoding before a classifier. A seeded 20% of the
//! rows is the test set.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wgtrain::data::tabular::sklearn;
use wgtrain::nn;
use wgtrain::prelude::*;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dev {
    Gpu,
    Cpu,
}

#[derive(Parser, Debug)]
#[command(about = "A three-input functional model on the breast cancer table")]
struct Args {
    /// Where scikit-learn's data files are.
    #[arg(long, default_value = sklearn::SKLEARN_DATA_DIR)]
    sklearn_dir: PathBuf,
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Dev::Gpu)]
    device: Dev,
}

fn main() -> wgtrain::Result<()> {
    let args = Args::parse();
    let data = sklearn::breast_cancer(&args.sklearn_dir)?;
    let (train, test) = data.split_seeded(0.2, args.seed)?;

    let mean = Input::named("mean", &[10]);
    let error = Input::named("error", &[10]);
    let worst = Input::named("worst", &[10]);
    let encoder = LayerRef::named("measurements", Dense::new(16).activation(Activation::Relu));
    let (m, w) = (encoder.call(&mean), encoder.call(&worst));
    let e = Dense::new(8).activation(Activation::Relu).on(&error);
    let joined = nn::concatenate(&[&nn::multiply(&[&m, &w]), &e]);
    let h = Dense::new(16).activation(Activation::Relu).on(&joined);
    let logit = Dense::new(1).on(&h);
    let net = Functional::new(&[&mean, &error, &worst], &[&logit])?;
    println!("{}", net.summary());

    let device = match args.device {
        Dev::Gpu => Device::gpu()?,
        Dev::Cpu => Device::Cpu,
    };
    println!(
        "breast cancer: {} train and {} test rows on {}",
        train.len(),
        test.len(),
        device.name()
    );
    let mut model = net.compile(
        Loss::BinaryCrossentropy { from_logits: true },
        Optimizer::Adam(AdamConfig::adam(args.lr)),
        device,
        args.seed,
    )?;
    let cfg = FitConfig {
        seed: args.seed,
        scale_features: Some(Scaling::Standard),
        ..FitConfig::new(args.epochs, args.batch_size)
    };
    model.fit(&train, &cfg)?;
    let m = model.evaluate(&test, 256)?;
    println!(
        "test: loss {:.4}, accuracy {:.4} on {} rows",
        m.mean_loss,
        m.accuracy,
        test.len()
    );
    Ok(())
}
