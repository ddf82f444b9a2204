use std::time::Instant;
use wgtrain::gpu::{kernels, run, GpuBuffer, GpuContext};
fn main() -> wgtrain::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.adapter_name());
    for &(m, n, k) in &[(1024usize, 1024usize, 1024usize), (128, 128, 784), (512,512,512)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let ab = GpuBuffer::from_slice(&ctx, "a", &a)?;
        let bb = GpuBuffer::from_slice(&ctx, "b", &b)?;
        let cb = GpuBuffer::zeros(&ctx, "c", m * n)?;
        let spec = kernels::GemmSpec::new(m, n, k);
        let l = kernels::gemm(&ctx, &spec, ab.full(), bb.full(), None, cb.full())?;
        run(&ctx, &[&l])?; ctx.synchronize()?;
        let reps = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
        let mut times = vec![];
        for _ in 0..reps { let t = Instant::now(); run(&ctx, &[&l])?; ctx.synchronize()?; times.push(t.elapsed().as_secs_f64()); }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{m}x{n}x{k}: {:.1} GFLOP/s", spec.flops() / times[reps / 2] / 1e9);
    }
    Ok(())
}
