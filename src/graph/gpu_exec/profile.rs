//! Where a training step's time goes, launch by launch (`mlp_bench --profile`).

use std::sync::Arc;

use super::{submit, GpuExecutor};
use crate::error::Result;

impl GpuExecutor {
    /// Where a training step's time goes, for `batch` (which must have been prepared or run):
    /// the step's launches are submitted one at a time, in order, `reps` times, and each
    /// row is (label, grid, median seconds). The first rows are an empty submission (the
    /// baseline each row includes) and the copies of weights into their textures that
    /// precede each pass. Running in order keeps each launch's caches as a real step leaves
    /// them. The step's effect on the parameters is repeated too, so profile a copy of a
    /// model, not one being trained.
    pub fn profile(&mut self, batch: usize, reps: usize) -> Result<Vec<(String, [u32; 3], f64)>> {
        let ctx = Arc::clone(&self.ctx);
        let ctx = ctx.as_ref();
        self.prepare(batch)?;
        let plan = &self.plans[&batch];
        let clip = self.clip.as_ref().map(|c| &c.1);
        let launches: Vec<&crate::gpu::Launch> = plan
            .kernels
            .iter()
            .chain(clip)
            .chain([&self.optimizer_kernel])
            .flat_map(|k| k.launches())
            .collect();
        let timed = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
            let start = std::time::Instant::now();
            f()?;
            ctx.synchronize()?;
            Ok(start.elapsed().as_secs_f64())
        };
        let mut times = vec![Vec::with_capacity(reps.max(1)); launches.len() + 2];
        for _ in 0..reps.max(1) {
            times[0].push(timed(&|| crate::gpu::run(ctx, &[]))?);
            times[1].push(timed(&|| {
                let copies = (&self.arenas.params, &plan.prepacked);
                submit(
                    ctx,
                    "profile",
                    std::time::Instant::now(),
                    Some(copies),
                    [].into_iter(),
                )
                .map(|_| ())
            })?);
            for (k, l) in launches.iter().enumerate() {
                times[k + 2].push(timed(&|| crate::gpu::run(ctx, &[l]))?);
            }
        }
        let labels = [
            ("(empty submission)".to_string(), [0, 0, 0]),
            ("(weights into textures)".to_string(), [0, 0, 0]),
        ]
        .into_iter()
        .chain(launches.iter().map(|l| (l.label().to_string(), l.grid())));
        Ok(labels
            .zip(times)
            .map(|((label, grid), mut t)| {
                t.sort_by(f64::total_cmp);
                (label, grid, t[t.len() / 2])
            })
            .collect())
    }
}
