//! Convolution throughput and CNN training speed: the GPU kernels against the CPU reference
//! (the CPU executor's convolution) in the same run.
//!
//! `cargo run --release --example conv_bench [-- --reps N]`
//! Part 1: forward, grad-input and grad-weight of three convolutions (batch 32), and the
//! forward as a direct kernel (one invocation per output, no im2col), GFLOP/s
//! (2 * n * oh * ow * out * c * kh * kw per pass), median of N runs (default 5) after a
//! warm-up; the CPU reference runs once per figure (it is slow).
//! Part 2: training images/s of the small Fashion-MNIST CNN (batch 64), the Keras CIFAR-10
//! CNN (batch 32), the residual Fashion-MNIST CNN with batch normalization (batch 64) and
//! ResNet-20 (batch 32) on both executors (Adam; median of N runs of 5 GPU steps, one run of
//! 2 CPU steps). `WGTRAIN_PLAN=gpu` measures the real-GPU plan on any adapter.
//! `-- --bn-inference R` instead times `evaluate` (256 images, batch 128) of ResNet-20 and of
//! its copy with batch normalization folded into the convolutions (`fold_batch_norm`): R
//! rounds in alternating order, median images/s of each and their ratio.

use std::time::Instant;

use clap::Parser;
use ndarray::{Array1, Array2, Array4};
use wgtrain::gpu::{GpuBuffer, GpuContext};
use wgtrain::graph::{CpuExecutor, Executor, Feed, GpuExecutor};
use wgtrain::ops::Window;
use wgtrain::prelude::*;
use wgtrain::unstable::cpu;
use wgtrain::unstable::kernels::{self, ConvGeom};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn conv_part(ctx: &GpuContext, reps: usize) -> wgtrain::Result<()> {
    println!(
        "{:<30} {:>6} {:>12} {:>12} {:>8}",
        "convolution (batch 32)", "pass", "gpu GFLOP/s", "cpu GFLOP/s", "ratio"
    );
    for (name, c, hw, out, k, pad) in [
        ("fashion conv1 1->16 28x28 k3", 1, 28, 16, 3, 0),
        ("cifar conv2 32->32 32x32 k3", 32, 32, 32, 3, 0),
        ("cifar conv3 32->64 15x15 k3", 32, 15, 64, 3, 1),
    ] {
        let n = 32;
        let win = Window::square(k, 1, pad);
        let g = ConvGeom {
            n,
            c,
            h: hw,
            w: hw,
            out,
            win,
        };
        let (oh, ow) = g.output()?;
        let flops = 2.0 * (n * oh * ow * out * c * k * k) as f64;
        let x = values(n * c * hw * hw, 1);
        let w = values(out * c * k * k, 2);
        let b = values(out, 3);
        let dy = values(n * out * oh * ow, 4);
        let gx = GpuBuffer::from_slice(ctx, "x", &x)?;
        let gw = GpuBuffer::from_slice(ctx, "w", &w)?;
        let gb = GpuBuffer::from_slice(ctx, "b", &b)?;
        let gdy = GpuBuffer::from_slice(ctx, "dy", &dy)?;
        let gy = GpuBuffer::zeros(ctx, "y", dy.len())?;
        let gdx = GpuBuffer::zeros(ctx, "dx", x.len())?;
        let gdw = GpuBuffer::zeros(ctx, "dw", w.len())?;
        let passes = [
            (
                "fwd",
                kernels::conv2d(ctx, &g, gx.full(), gw.full(), gb.full(), gy.full())?,
            ),
            (
                "dx",
                kernels::conv2d_grad_input(ctx, &g, gdy.full(), gw.full(), gdx.full())?,
            ),
            (
                "dw",
                kernels::conv2d_grad_weight(ctx, &g, gx.full(), gdy.full(), gdw.full())?,
            ),
        ];
        let xa = Array4::from_shape_vec((n, c, hw, hw), x.clone()).expect("shape");
        let wa = Array4::from_shape_vec((out, c, k, k), w.clone()).expect("shape");
        let dya = Array4::from_shape_vec((n, out, oh, ow), dy.clone()).expect("shape");
        let ba = Array1::from(b.clone());
        // The direct kernel, for the choice of im2col + GEMM.
        let direct: wgtrain::gpu::Kernel =
            kernels::conv2d_direct(ctx, &g, gx.full(), gw.full(), gb.full(), gy.full())?.into();
        direct.run(ctx)?;
        ctx.synchronize()?;
        let direct_s = median(
            (0..reps.min(3))
                .map(|_| {
                    let t = Instant::now();
                    direct
                        .run(ctx)
                        .and_then(|()| ctx.synchronize())
                        .expect("gpu run");
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        println!(
            "{name:<30} {:>6} {:>12.2} {:>12} {:>8}",
            "direct",
            flops / direct_s / 1e9,
            "",
            ""
        );
        for (pass, kernel) in &passes {
            kernel.run(ctx)?;
            ctx.synchronize()?;
            let gpu = median(
                (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        kernel
                            .run(ctx)
                            .and_then(|()| ctx.synchronize())
                            .expect("gpu run");
                        t.elapsed().as_secs_f64()
                    })
                    .collect(),
            );
            let t = Instant::now();
            match *pass {
                "fwd" => drop(cpu::conv2d(xa.view(), wa.view(), ba.view(), win)),
                "dx" => drop(cpu::conv2d_grad_input(dya.view(), wa.view(), win, (hw, hw))),
                _ => drop(cpu::conv2d_grad_weight(xa.view(), dya.view(), win)),
            }
            let cpu_s = t.elapsed().as_secs_f64();
            println!(
                "{name:<30} {pass:>6} {:>12.2} {:>12.2} {:>8.1}",
                flops / gpu / 1e9,
                flops / cpu_s / 1e9,
                cpu_s / gpu
            );
        }
    }
    Ok(())
}

fn train_part(ctx: &std::sync::Arc<GpuContext>, reps: usize) -> wgtrain::Result<()> {
    let relu = Activation::Relu;
    let fashion = Sequential::new(&[1, 28, 28])
        .conv2d(Conv2d::new(16, 3).activation(relu))
        .max_pool2d(2)
        .conv2d(Conv2d::new(32, 3).activation(relu))
        .max_pool2d(2)
        .flatten()
        .dense(Dense::new(10));
    let cifar = Sequential::new(&[3, 32, 32])
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
        .dense(Dense::new(10));
    // The residual Fashion-MNIST CNN of tests/residual.rs and ResNet-20 (batch norm).
    let residual = Sequential::new(&[1, 28, 28])
        .conv2d(Conv2d::new(16, 3).same())
        .batch_norm()
        .push(Layer::Activation(relu))
        .max_pool2d(2)
        .residual(Residual::new(16))
        .residual(Residual::new(32).stride(2))
        .flatten()
        .dense(Dense::new(10));
    let resnet20 = Sequential::resnet(&[3, 32, 32], 3, 10);
    println!(
        "\n{:<26} {:>6} {:>14} {:>14} {:>8}",
        "CNN training (Adam)", "batch", "gpu images/s", "cpu images/s", "ratio"
    );
    for (name, model, batch, features) in [
        ("fashion small CNN", fashion, 64, 784),
        ("keras cifar-10 CNN", cifar, 32, 3072),
        ("fashion residual CNN (BN)", residual, 64, 784),
        ("ResNet-20 cifar-10", resnet20, 32, 3072),
    ] {
        let built = model.build(true, 0)?;
        let mut g = built.graph.clone();
        let y = g.labels("y");
        let loss = g.softmax_xent(built.logits, y)?;
        let opt = Optimizer::Adam(AdamConfig::adam(1e-3));
        let xs = values(batch * features, 5);
        let ys: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
        let feeds = [(built.input, Feed::F32(&xs)), (y, Feed::U32(&ys))];
        let mut gpu = GpuExecutor::new(ctx, g.clone(), loss, opt, 0)?;
        gpu.step(batch, &feeds)?;
        ctx.synchronize()?;
        let steps = 5;
        let gpu_s = median(
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..steps {
                        gpu.step(batch, &feeds).expect("gpu step");
                    }
                    ctx.synchronize().expect("sync");
                    t.elapsed().as_secs_f64() / steps as f64
                })
                .collect(),
        );
        let mut cpu = CpuExecutor::new(g, loss, opt, 0)?;
        let t = Instant::now();
        for _ in 0..2 {
            cpu.step(batch, &feeds)?;
        }
        let cpu_s = t.elapsed().as_secs_f64() / 2.0;
        println!(
            "{name:<26} {batch:>6} {:>14.0} {:>14.1} {:>8.1}",
            batch as f64 / gpu_s,
            batch as f64 / cpu_s,
            cpu_s / gpu_s
        );
    }
    Ok(())
}

/// Convolution throughput and CNN training speed, GPU against the CPU reference.
#[derive(Parser)]
struct Cli {
    /// GPU runs per figure (the median is reported), after a warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Compare ResNet-20's inference with and without batch normalization over this many
    /// alternated rounds instead.
    #[arg(long)]
    bn_inference: Option<u32>,
}

/// ResNet-20's `evaluate` (batch 128) and that of its copy with batch normalization folded
/// into the convolutions ([`wgtrain::nn::Model::fold_batch_norm`]).
fn bn_inference_part(rounds: usize) -> wgtrain::Result<()> {
    let ctx = std::sync::Arc::new(GpuContext::new()?);
    let opt = Optimizer::Adam(AdamConfig::adam(1e-3));
    let loss = Loss::SparseCategoricalCrossentropy;
    let mut model =
        Sequential::resnet(&[3, 32, 32], 3, 10).compile(loss, opt, Device::Gpu(ctx), 0)?;
    let mut folded = model.fold_batch_norm()?;
    let n = 256;
    let x = Array2::from_shape_vec((n, 3072), values(n * 3072, 7)).expect("n * 3072 values");
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let data = ArrayDataset::classification(&x, &labels, 10)?;
    let batch = 128;
    model.evaluate(&data, batch)?;
    folded.evaluate(&data, batch)?;
    let (mut with_bn, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for k in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (m, times) = if k == 0 {
                (&mut model, &mut with_bn)
            } else {
                (&mut folded, &mut without)
            };
            let t = Instant::now();
            m.evaluate(&data, batch)?;
            times.push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    let (a, b) = (median(with_bn), median(without));
    println!(
        "ResNet-20 evaluate, batch {batch}, {rounds} alternated rounds: {a:.1} images/s with \
         batch normalization, {b:.1} folded; ratio {:.3}",
        b / a
    );
    Ok(())
}

fn main() -> wgtrain::Result<()> {
    let cli = Cli::parse();
    let reps = cli.reps as usize;
    let ctx = std::sync::Arc::new(GpuContext::new()?);
    println!("adapter: {}", ctx.adapter_name());
    if let Some(rounds) = cli.bn_inference {
        return bn_inference_part(rounds as usize);
    }
    conv_part(&ctx, reps)?;
    train_part(&ctx, reps)
}
