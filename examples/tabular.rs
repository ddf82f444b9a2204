//! Tabular classification and regression from a CSV file, or by default from scikit-learn's
//! real datasets as Debian's `python3-sklearn` installs them:
//!
//! ```sh
//! cargo run --release --example tabular                      # breast cancer, binary
//! cargo run --release --example tabular -- --dataset iris    # three classes
//! cargo run --release --example tabular -- --dataset diabetes --task regress
//! cargo run --release --example tabular -- --csv houses.csv --target price --task regress
//! ```
//!
//! A seeded share of the rows is held out as the test set; features (and regression targets)
//! are standardized on the training split only. The test figures are printed, and the curves
//! and the history (CSV) are written to `out/tabular/`.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use wgtrain::data::tabular::{read_csv, sklearn, Column, CsvOptions, Delimiter, Task};
use wgtrain::data::{Samples, TargetKind};
use wgtrain::prelude::*;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Builtin {
    BreastCancer,
    Iris,
    Diabetes,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum TaskArg {
    Classify,
    Regress,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dev {
    Gpu,
    Cpu,
}

#[derive(Parser, Debug)]
#[command(about = "Train an MLP on a table of numbers")]
struct Args {
    /// A CSV file (header row, comma-separated unless --delimiter says otherwise).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The target column of --csv, by name or 0-based index (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// The cell separator of --csv: one character, or `whitespace`.
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Without --csv: one of scikit-learn's datasets.
    #[arg(long, value_enum, default_value_t = Builtin::BreastCancer)]
    dataset: Builtin,
    /// Where scikit-learn's data files are.
    #[arg(long, default_value = sklearn::SKLEARN_DATA_DIR)]
    sklearn_dir: PathBuf,
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// Hidden layer width (0: a linear model).
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Share of the rows held out as the test set.
    #[arg(long, default_value_t = 0.2)]
    test_split: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Dev::Gpu)]
    device: Dev,
    #[arg(long, default_value = "out/tabular")]
    out: PathBuf,
}

fn load(args: &Args) -> wgtrain::Result<(ArrayDataset, String)> {
    let Some(csv) = &args.csv else {
        let dir = &args.sklearn_dir;
        return Ok(match args.dataset {
            Builtin::BreastCancer => (sklearn::breast_cancer(dir)?, "breast cancer".into()),
            Builtin::Iris => (sklearn::iris(dir)?, "iris".into()),
            Builtin::Diabetes => (sklearn::diabetes(dir)?, "diabetes".into()),
        });
    };
    let target = match &args.target {
        None => Column::Index(-1),
        Some(t) => t
            .parse::<i64>()
            .map(Column::Index)
            .unwrap_or_else(|_| Column::Name(t.clone())),
    };
    let delimiter = match args.delimiter.as_str() {
        "whitespace" => Delimiter::Whitespace,
        d if d.len() == 1 => Delimiter::Byte(d.as_bytes()[0]),
        "\\t" => Delimiter::Byte(b'\t'),
        other => {
            return Err(wgtrain::Error::invalid(
                "--delimiter",
                format!("`{other}` is neither one character nor `whitespace`"),
            ))
        }
    };
    let task = match args.task {
        Some(TaskArg::Regress) => Task::Regress,
        _ => Task::Classify,
    };
    let opts = CsvOptions {
        delimiter,
        targets: vec![target],
        task,
        ..CsvOptions::new()
    };
    Ok((read_csv(csv, &opts)?, csv.display().to_string()))
}

fn main() -> wgtrain::Result<()> {
    let args = Args::parse();
    let (data, name) = load(&args)?;
    let regress = match (args.task, data.target_kind()) {
        (Some(TaskArg::Classify), TargetKind::Values(_)) => {
            return Err(wgtrain::Error::invalid(
                "--task",
                format!("{name} holds real-valued targets; use --task regress"),
            ))
        }
        (Some(TaskArg::Regress), TargetKind::Classes(_)) => {
            return Err(wgtrain::Error::invalid(
                "--task",
                format!("{name} holds class labels; use --task classify"),
            ))
        }
        (_, kind) => matches!(kind, TargetKind::Values(_)),
    };
    let (train, test) = data.split_seeded(args.test_split, args.seed)?;
    let features = data.sample_len();
    let (outputs, loss, metrics) = match data.target_kind() {
        TargetKind::Values(w) => (
            w,
            Loss::MeanSquaredError,
            vec![Metric::Mae, Metric::Rmse, Metric::R2],
        ),
        TargetKind::Classes(2) => (
            1,
            Loss::BinaryCrossentropy { from_logits: true },
            vec![Metric::Accuracy],
        ),
        TargetKind::Classes(c) => (
            c,
            Loss::SparseCategoricalCrossentropy,
            vec![Metric::Accuracy],
        ),
    };
    let mut net = Sequential::new(&[features]);
    if args.hidden > 0 {
        net = net.dense(Dense::new(args.hidden).activation(Activation::Relu));
    }
    let device = match args.device {
        Dev::Gpu => Device::gpu()?,
        Dev::Cpu => Device::Cpu,
    };
    println!(
        "{name}: {} rows of {features} features ({} train, {} test) on {}",
        data.len(),
        train.len(),
        test.len(),
        device.name()
    );
    let mut model = net
        .dense(Dense::new(outputs))
        .compile(
            loss,
            Optimizer::Adam(AdamConfig::adam(args.lr)),
            device,
            args.seed,
        )?
        .with_metrics(&metrics)?;
    let cfg = FitConfig {
        seed: args.seed,
        validation_split: 0.2,
        scale_features: Some(Scaling::Standard),
        scale_targets: (regress && outputs == 1).then_some(Scaling::Standard),
        ..FitConfig::new(args.epochs, args.batch_size)
    };
    let history = model.fit(&train, &cfg)?;
    let m = model.evaluate(&test, 256)?;
    match m.errors.filter(|_| regress) {
        Some(e) => println!(
            "test: loss {:.4}, mae {:.4}, rmse {:.4}, r2 {:.4} on {} rows",
            m.mean_loss,
            e.mae,
            e.rmse,
            e.r2.unwrap_or(f32::NAN),
            m.samples
        ),
        None => println!(
            "test: loss {:.4}, accuracy {:.4} on {} rows",
            m.mean_loss, m.accuracy, m.samples
        ),
    }
    std::fs::create_dir_all(&args.out).map_err(|e| wgtrain::Error::io(&args.out, e))?;
    let curves = args.out.join("curves.png");
    history.save_plot(&curves)?;
    history.save(&args.out.join("history.csv"))?;
    println!(
        "curves: {}, history: {}",
        curves.display(),
        Path::new(&args.out).join("history.csv").display()
    );
    Ok(())
}
