//! wgtrain as a library, without the Keras-style layers: build a graph by hand, let the
//! engine differentiate it, and train it on the GPU (or on the CPU reference with `--cpu`).
//!
//! `cargo run --release --example custom_graph [-- --cpu]`
//! Learns the two-spirals problem (a classic test of a network's ability to bend space).

use std::sync::Arc;

use wgtrain::gpu::GpuContext;
use wgtrain::graph::{CpuExecutor, Dim, Executor, Feed, GpuExecutor, Graph, Init};
use wgtrain::prelude::*;

fn spirals(n: usize) -> (Vec<f32>, Vec<u32>) {
    let pi = std::f32::consts::PI;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = (i % 2) as u32;
        let t = (i / 2) as f32 / (n / 2) as f32 * 3.0 * pi;
        let (r, a) = (0.2 + t / (3.0 * pi), t + class as f32 * pi);
        x.extend([r * a.cos(), r * a.sin()]);
        y.push(class);
    }
    (x, y)
}

fn main() -> wgtrain::Result<()> {
    // The model: 2 -> 32 -> 32 -> 2 with tanh, written as ops.
    let mut g = Graph::new();
    let x = g.input("points", &[Dim::Batch, Dim::Fixed(2)]);
    let labels = g.labels("class");
    let mut h = x;
    for (i, (fan_in, fan_out)) in [(2, 32), (32, 32), (32, 2)].into_iter().enumerate() {
        let w = g.param(&format!("w{i}"), &[fan_in, fan_out], Init::GlorotUniform);
        let b = g.param(&format!("b{i}"), &[fan_out], Init::Zeros);
        let z = g.matmul(h, w)?;
        h = g.bias_add(z, b)?;
        if i < 2 {
            h = g.activation(h, Activation::Tanh)?;
        }
    }
    let loss = g.softmax_xent(h, labels)?;

    let (points, classes) = spirals(256);
    let feeds = [(x, Feed::F32(&points)), (labels, Feed::U32(&classes))];
    let optimizer = Optimizer::Adam(AdamConfig::adam(0.02));
    // Both executors keep one training-step contract (`Executor`).
    let mut exec: Box<dyn Executor> = if std::env::args().any(|a| a == "--cpu") {
        println!("device: CPU reference");
        Box::new(CpuExecutor::new(g, loss, optimizer, 1)?)
    } else {
        let ctx = Arc::new(GpuContext::new()?);
        println!("device: {}", ctx.adapter_name());
        Box::new(GpuExecutor::new(&ctx, g, loss, optimizer, 1)?)
    };
    for _ in 0..600 {
        exec.step(256, &feeds)?; // on a GPU: one submission per step, nothing read back
    }
    exec.reset_metrics()?;
    exec.evaluate_batch(256, &feeds)?;
    let metrics = exec.metrics()?;
    println!(
        "after 600 steps: loss {:.4}, accuracy {:.1}% on {} points",
        metrics.mean_loss,
        100.0 * metrics.accuracy,
        metrics.samples
    );
    Ok(())
}
