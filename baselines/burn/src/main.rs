//! Burn's wgpu backend on the workload of wgtrain's `epoch_bench`: Fashion-MNIST, an MLP
//! with ReLU hidden layers, Adam 1e-3, batch 128, a shuffled epoch, with the batches gathered
//! on the training thread. Prints samples/s of each epoch after the first (which includes
//! Burn's kernel compilation and autotuning).
//!
//! `cargo run --release --manifest-path baselines/burn/Cargo.toml -- [--epochs N] [--only 784-128-10]`

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{activation::relu, Device, DeviceKind, Int, Tensor, TensorData};
use clap::Parser;

const DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Module, Debug)]
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(sizes: &[usize], device: &Device) -> Self {
        let layers = sizes
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Self { layers }
    }

    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// An IDX file's payload after its header (the magic's last byte gives the dimensions).
fn idx(name: &str) -> Vec<u8> {
    let path = Path::new(DIR).join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (apt-get install -y dataset-fashion-mnist)",
            path.display()
        )
    });
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .expect("a gzip IDX file");
    let dims = bytes[3] as usize;
    bytes.split_off(4 + 4 * dims)
}

/// Burn's wgpu backend on wgtrain's epoch_bench workload.
#[derive(Parser)]
struct Cli {
    /// Epochs per model; the first includes Burn's compilation and autotuning.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Only this model.
    #[arg(long, value_name = "MODEL", value_parser = ["784-128-10", "784-512-512-10"])]
    only: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    let (epochs, only) = (cli.epochs as usize, cli.only);
    let images = idx("train-images-idx3-ubyte.gz");
    let labels = idx("train-labels-idx1-ubyte.gz");
    let n = labels.len();
    assert_eq!(images.len(), n * 784, "images and labels disagree");
    let device = Device::wgpu(DeviceKind::Cpu).autodiff();
    println!("{:<16} {:>10} {:>12}", "model", "epoch", "samples/s");
    for sizes in [vec![784, 128, 10], vec![784, 512, 512, 10]] {
        let name = sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("-");
        if only.as_ref().is_some_and(|o| *o != name) {
            continue;
        }
        let mut model = Mlp::new(&sizes, &device);
        let mut optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let mut order: Vec<usize> = (0..n).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for epoch in 1..=epochs {
            // Fisher-Yates with a xorshift generator: a fresh order each epoch.
            for i in (1..n).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let start = Instant::now();
            let mut last = None;
            for batch in order.chunks(128) {
                let mut x = Vec::with_capacity(batch.len() * 784);
                for &i in batch {
                    x.extend(
                        images[i * 784..(i + 1) * 784]
                            .iter()
                            .map(|&p| p as f32 / 255.0),
                    );
                }
                let y: Vec<i32> = batch.iter().map(|&i| labels[i] as i32).collect();
                let x = Tensor::<2>::from_data(TensorData::new(x, [batch.len(), 784]), &device);
                let y = Tensor::<1, Int>::from_data(TensorData::new(y, [batch.len()]), &device);
                let loss = loss_fn.forward(model.forward(x), y);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(1e-3, model, grads);
                last = Some(loss);
            }
            // Reading the last loss waits for the epoch's work to finish.
            let loss: f32 = last.expect("batches ran").into_scalar();
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "{name:<16} {epoch:>10} {:>12.0}   (last loss {loss:.4})",
                n as f64 / seconds
            );
        }
    }
}
