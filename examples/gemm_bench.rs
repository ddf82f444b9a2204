//! GEMM benchmark: GFLOP/s of wgtrain's GEMM on the GPU adapter against the CPU reference's
//! ndarray `dot` on the same machine, in the same run.
//!
//! `cargo run --release --example gemm_bench [-- --reps N]`
//! Each figure is the median of N timed runs (default 7) after one warm-up. One GPU run is one
//! submission of 10 back-to-back GEMMs (packing included on CPU adapters) and its completion,
//! divided by 10: the per-GEMM cost inside a training step, where one submission carries all
//! launches. `--single` times one GEMM per submission instead (adds the submit/fence latency);
//! `--tiled` forces the shared-memory path on every adapter; `--only PREFIX` runs the cases
//! whose name starts with PREFIX; `--max N` sets the largest square size (default 2048).

use std::time::Instant;

use clap::Parser;
use ndarray::Array2;
use wgtrain::gpu::{GpuBuffer, GpuContext};
use wgtrain::unstable::kernels::{self, GemmSpec};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PathArg {
    /// Shared-memory tiles, scalar loads.
    Tiled,
    /// Shared-memory tiles staged from vec4 loads (real GPUs' default).
    Vec4,
    /// Packed textures (CPU adapters' default).
    Texture,
}

/// GFLOP/s of wgtrain's GEMM against ndarray's on the same machine, in the same run.
#[derive(Parser)]
struct Cli {
    /// Timed runs per figure (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// One GEMM per submission instead of 10 (adds the submit/fence latency).
    #[arg(long)]
    single: bool,
    /// Force a GEMM path on every adapter (by default the plan chooses; a path a shape
    /// cannot take falls back to `tiled`, and the table says which ran).
    #[arg(long, value_enum)]
    path: Option<PathArg>,
    /// Same as `--path tiled`.
    #[arg(long)]
    tiled: bool,
    /// Only the cases whose name starts with PREFIX.
    #[arg(long, value_name = "PREFIX")]
    only: Option<String>,
    /// The largest square size (powers of two from 128 up to it).
    #[arg(long, default_value_t = 2048)]
    max: usize,
}

fn main() -> wgtrain::Result<()> {
    let cli = Cli::parse();
    let reps = cli.reps as usize;
    let per_submit = if cli.single { 1 } else { 10 };
    let forced = match (cli.tiled, cli.path) {
        (true, _) | (_, Some(PathArg::Tiled)) => Some(kernels::GemmPath::Tiled),
        (_, Some(PathArg::Vec4)) => Some(kernels::GemmPath::TiledVec4),
        (_, Some(PathArg::Texture)) => Some(kernels::GemmPath::Texture),
        (false, None) => None,
    };
    let ctx = GpuContext::new()?;
    let info = ctx.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!(
        "{:<26} {:>8} {:>12} {:>12} {:>8}",
        "m x n x k (op)", "path", "gpu GFLOP/s", "cpu GFLOP/s", "ratio"
    );
    let mut cases: Vec<(String, GemmSpec)> = std::iter::successors(Some(128usize), |s| Some(s * 2))
        .take_while(|&s| s <= cli.max)
        .map(|s| (format!("{s}^3"), GemmSpec::new(s, s, s)))
        .collect();
    cases.push(("128x128x784 fwd".into(), GemmSpec::new(128, 128, 784)));
    cases.push((
        "784x128x128 A^T dW".into(),
        GemmSpec::new(784, 128, 128).trans_a(true),
    ));
    cases.push((
        "128x784x128 B^T dX".into(),
        GemmSpec::new(128, 784, 128).trans_b(true),
    ));
    cases.push(("128x10x128 fwd".into(), GemmSpec::new(128, 10, 128)));
    cases.push((
        "128x10x128 A^T dW".into(),
        GemmSpec::new(128, 10, 128).trans_a(true),
    ));
    cases.push((
        "128x128x10 B^T dX".into(),
        GemmSpec::new(128, 128, 10).trans_b(true),
    ));
    for (name, mut spec) in cases {
        if cli
            .only
            .as_ref()
            .is_some_and(|o| !name.starts_with(o.as_str()))
        {
            continue;
        }
        spec.path = forced;
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let (ga, gb) = (
            GpuBuffer::from_slice(&ctx, "a", &a)?,
            GpuBuffer::from_slice(&ctx, "b", &b)?,
        );
        let gc = GpuBuffer::zeros(&ctx, "c", m * n)?;
        let kernel = kernels::gemm(&ctx, &spec, ga.full(), gb.full(), None, gc.full())?;
        let mut failure = None;
        let batch: Vec<&wgtrain::gpu::Kernel> = (0..per_submit).map(|_| &kernel).collect();
        let gpu_s = time(reps, || {
            if let Err(e) = wgtrain::gpu::run_kernels(&ctx, &batch).and_then(|_| ctx.synchronize())
            {
                failure = Some(e);
            }
        }) / per_submit as f64;
        if let Some(e) = failure {
            return Err(e);
        }
        let (ar, ac) = if spec.trans_a { (k, m) } else { (m, k) };
        let (br, bc) = if spec.trans_b { (n, k) } else { (k, n) };
        let aa = Array2::from_shape_vec((ar, ac), a).expect("shape");
        let bb = Array2::from_shape_vec((br, bc), b).expect("shape");
        let cpu_s = time(reps, || {
            let x = if spec.trans_a { aa.t() } else { aa.view() };
            let y = if spec.trans_b { bb.t() } else { bb.view() };
            std::hint::black_box(x.dot(&y));
        });
        let (g, c) = (spec.flops() / gpu_s / 1e9, spec.flops() / cpu_s / 1e9);
        println!(
            "{name:<26} {:>8} {g:>12.1} {c:>12.1} {:>8.2}",
            format!("{:?}", kernels::gemm_path(&ctx, &spec)).to_lowercase(),
            g / c
        );
    }
    Ok(())
}
