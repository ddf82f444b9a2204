//! Get datasets and look at them.
//!
//! ```text
//! cargo run --release --example data -- download mnist --dir data/mnist
//! cargo run --release --example data -- download cifar10 --dir data/cifar10
//! cargo run --release --example data -- grid --dir /usr/share/datasets/fashion-mnist --out grid.png
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use wgtrain::data::{download, picture};
use wgtrain::prelude::*;

#[derive(Parser)]
#[command(about = "Download datasets and save pictures of their samples")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Mnist,
    Cifar10,
}

#[derive(Subcommand)]
enum Command {
    /// Download a dataset (SHA-256 verified, written atomically) into a directory.
    Download {
        which: Which,
        #[arg(long, default_value = "data/mnist")]
        dir: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Save a PNG grid of the first test samples of an MNIST-format or CIFAR-10 directory.
    Grid {
        #[arg(long, default_value = mnist::FASHION_MNIST_SYSTEM_DIR)]
        dir: PathBuf,
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
        #[arg(long, default_value_t = 32)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        cols: usize,
    },
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

fn run(cli: Cli) -> wgtrain::Result<()> {
    match cli.command {
        Command::Download { which, dir, quiet } => {
            let files = match which {
                Which::Mnist => download::fetch(&download::MNIST, &dir, !quiet)?,
                Which::Cifar10 => vec![cifar10::download(&dir, !quiet)?],
            };
            for f in files {
                println!("ready: {}", f.display());
            }
        }
        Command::Grid {
            dir,
            out,
            count,
            cols,
        } => {
            let test = if cifar10::batches_dir(&dir)
                .join(cifar10::TEST_FILE)
                .is_file()
            {
                cifar10::load(&dir)?.test
            } else {
                mnist::load_dir(&dir, 10, wgtrain::data::digit_names())?.test
            };
            let indices: Vec<usize> = (0..count.min(test.len())).collect();
            picture::save_grid(&out, &test, &indices, cols, None)?;
            println!("saved {} samples to {}", indices.len(), out.display());
        }
    }
    Ok(())
}
