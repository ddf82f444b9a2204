//! Training-step throughput of MLPs: the GPU plan against the CPU executor in the same run,
//! and the host's share of a GPU step (writing the batch and encoding the prebuilt launches)
//! separated from the wall time. `queue.submit` is not host time here: on lavapipe it runs
//! the submitted work before returning.
//!
//! `cargo run --release --example mlp_bench [-- --reps N]`
//! `cargo run --release --example mlp_bench -- --profile 784,128,10 --batch 128`: each launch
//! of one step timed alone (median of N, at least 5); with `--steps-only`, just N whole steps
//! (for `perf stat`).
//! Models 784-128-10 and 784-512-512-10 (ReLU, softmax cross-entropy, Adam), batches 32, 128
//! and 512, random data. Each figure is the median of N runs (default 3) after warm-up steps;
//! a GPU run is 40 steps and a synchronize, a CPU run 5 steps.

use std::time::Instant;

use clap::{CommandFactory, Parser};
use std::sync::Arc;

use wgtrain::gpu::GpuContext;
use wgtrain::graph::{CpuExecutor, Dim, Executor, Feed, GpuExecutor, Graph, Init, NodeId};
use wgtrain::prelude::*;

fn mlp(sizes: &[usize]) -> wgtrain::Result<(Graph, NodeId, NodeId, NodeId)> {
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(sizes[0])]);
    let y = g.labels("y");
    let mut h = x;
    for (i, pair) in sizes.windows(2).enumerate() {
        let w = g.param(
            &format!("dense_{i}.weight"),
            &[pair[0], pair[1]],
            Init::HeUniform,
        );
        let b = g.param(&format!("dense_{i}.bias"), &[pair[1]], Init::Zeros);
        let z = g.matmul(h, w)?;
        h = g.bias_add(z, b)?;
        if i + 2 < sizes.len() {
            h = g.activation(h, Activation::Relu)?;
        }
    }
    let loss = g.softmax_xent(h, y)?;
    Ok((g, x, y, loss))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn profile(
    ctx: &Arc<GpuContext>,
    sizes: &[usize],
    batch: usize,
    reps: usize,
    whole_only: bool,
) -> wgtrain::Result<()> {
    let (g, x, y, loss) = mlp(sizes)?;
    let xs = vec![0.5f32; batch * sizes[0]];
    let ys: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
    let opt = Optimizer::Adam(AdamConfig::adam(1e-3));
    let mut gpu = GpuExecutor::new(ctx, g, loss, opt, 0)?;
    gpu.step(batch, &[(x, Feed::F32(&xs)), (y, Feed::U32(&ys))])?;
    let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];
    let whole = median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                gpu.step(batch, &feeds)?;
                ctx.synchronize()?;
                Ok(start.elapsed().as_secs_f64())
            })
            .collect::<wgtrain::Result<Vec<f64>>>()?,
    );
    if whole_only {
        println!("whole step, one submission: {:.3} ms", whole * 1e3);
        return Ok(());
    }
    let rows = gpu.profile(batch, reps)?;
    let base = rows[0].2;
    let mut total = 0.0;
    println!("{:<34} {:>16} {:>10}", "launch", "grid", "ms");
    for (label, grid, t) in &rows {
        println!("{label:<34} {:>16} {:>10.3}", format!("{grid:?}"), t * 1e3);
        total += t - base;
    }
    println!(
        "{} launches; sum less the empty-submission baseline {:.3} ms",
        rows.len() - 1,
        total * 1e3
    );
    println!("whole step, one submission: {:.3} ms", whole * 1e3);
    Ok(())
}

/// Training-step throughput of MLPs, GPU plan against the CPU executor.
#[derive(Parser)]
#[command(name = "mlp_bench")]
struct Cli {
    /// Runs per figure (the median is reported), after warm-up steps.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Time each launch of one step of this MLP alone instead (layer widths, e.g. 784,128,10;
    /// at least 5 runs per launch).
    #[arg(long, value_name = "WIDTHS", value_delimiter = ',', num_args = 1)]
    profile: Option<Vec<usize>>,
    /// The batch of `--profile`.
    #[arg(long, default_value_t = 128, requires = "profile")]
    batch: usize,
    /// With `--profile`: only time whole steps (for `perf stat`).
    #[arg(long, requires = "profile")]
    steps_only: bool,
}

fn main() -> wgtrain::Result<()> {
    let cli = Cli::parse();
    let reps = cli.reps as usize;
    if let Some(sizes) = &cli.profile {
        if sizes.len() < 2 || sizes.contains(&0) || cli.batch == 0 {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ValueValidation,
                    "--profile needs at least two nonzero widths, --batch a nonzero batch",
                )
                .exit();
        }
    }
    let ctx = Arc::new(GpuContext::new()?);
    println!("adapter: {}", ctx.adapter_name());
    if let Some(sizes) = &cli.profile {
        return profile(&ctx, sizes, cli.batch, reps.max(5), cli.steps_only);
    }
    println!(
        "{:<16} {:>6} {:>12} {:>12} {:>14} {:>12} {:>8}",
        "model", "batch", "gpu steps/s", "gpu samples/s", "host ms/step", "cpu samples/s", "ratio"
    );
    let opt = Optimizer::Adam(AdamConfig::adam(1e-3));
    for sizes in [vec![784, 128, 10], vec![784, 512, 512, 10]] {
        for batch in [32usize, 128, 512] {
            let (g, x, y, loss) = mlp(&sizes)?;
            let xs: Vec<f32> = (0..batch * 784)
                .map(|i| ((i * 37) % 255) as f32 / 255.0)
                .collect();
            let ys: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
            let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];

            let mut gpu = GpuExecutor::new(&ctx, g.clone(), loss, opt, 0)?;
            for _ in 0..5 {
                gpu.step(batch, &feeds)?;
            }
            ctx.synchronize()?;
            let (mut walls, mut hosts) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let steps = 40;
                let mut host = 0.0;
                let start = Instant::now();
                for _ in 0..steps {
                    gpu.step(batch, &feeds)?;
                    host += gpu.last_step_host_time().as_secs_f64();
                }
                ctx.synchronize()?;
                walls.push(start.elapsed().as_secs_f64() / steps as f64);
                hosts.push(host / steps as f64);
            }
            let (wall, host) = (median(walls), median(hosts));

            let mut cpu = CpuExecutor::new(g, loss, opt, 0)?;
            cpu.step(batch, &feeds)?;
            let cpu_step = median(
                (0..reps)
                    .map(|_| {
                        let start = Instant::now();
                        for _ in 0..5 {
                            cpu.step(batch, &feeds).expect("cpu step");
                        }
                        start.elapsed().as_secs_f64() / 5.0
                    })
                    .collect(),
            );
            let name = sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("-");
            println!(
                "{name:<16} {batch:>6} {:>12.0} {:>12.0} {:>14.3} {:>12.0} {:>8.2}",
                1.0 / wall,
                batch as f64 / wall,
                host * 1e3,
                batch as f64 / cpu_step,
                cpu_step / wall
            );
        }
    }
    Ok(())
}
