//! Data parallelism in one process (ARCHITECTURE.md, "The training step"): several executors
//! holding the same graph, parameters and optimizer state, each computing the gradients of
//! its shard of every batch on its own thread. At the seam the shards' gradients are summed on
//! the host in a fixed order, weighted by shard size, and every replica applies the same
//! update, so the replicas stay identical and a run is bit-reproducible.

use super::{Executor, Feed, Graph, NodeId};
use crate::error::{Error, Result};
use crate::ops::MetricTotals;

/// Executors in lockstep that share each batch. Evaluation and prediction run on the first
/// replica; reads come from it, writes go to all.
pub struct Replicated {
    replicas: Vec<Box<dyn Executor + Send>>,
    /// The pending step: `true` when it ran on the first replica alone (a batch smaller than
    /// the replica count), whose update the others then copy.
    single: Option<bool>,
}

impl Replicated {
    /// Replicas built identically (same graph, seed and optimizer): their parameters must
    /// agree, which is checked here.
    pub fn new(replicas: Vec<Box<dyn Executor + Send>>) -> Result<Self> {
        let Some(first) = replicas.first() else {
            return Err(Error::invalid("replicas", "no replica given"));
        };
        let params = first.graph().params();
        for (k, r) in replicas.iter().enumerate().skip(1) {
            if r.graph().params().len() != params.len() {
                return Err(Error::invalid(
                    "replicas",
                    format!("replica {k} holds another graph than replica 0"),
                ));
            }
            for &p in &params {
                if r.read_param(p)? != first.read_param(p)? {
                    return Err(Error::invalid(
                        "replicas",
                        format!(
                            "replica {k} starts from other values of `{}` than replica 0; build \
                             every replica from the same seed",
                            first.graph().node(p).name
                        ),
                    ));
                }
            }
        }
        Ok(Replicated {
            replicas,
            single: None,
        })
    }

    /// How many replicas share each batch.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Always false: there is at least one replica.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies the first replica's parameters, optimizer state, buffers and step count to the
    /// others.
    fn sync_from_first(&mut self) -> Result<()> {
        let (first, rest) = self
            .replicas
            .split_first_mut()
            .expect("at least one replica");
        let graph = first.graph();
        let params = graph.params();
        let buffers = graph.buffers();
        for r in rest {
            for &p in &params {
                r.write_param(p, &first.read_param(p)?)?;
                r.write_state(p, &first.read_state(p)?)?;
            }
            for &b in &buffers {
                r.write_buffer(b, &first.read_buffer(b)?)?;
            }
            r.set_steps(first.steps())?;
        }
        Ok(())
    }
}

/// Row `start..start + rows` of every feed of a `batch`-row batch.
fn shard<'a>(
    feeds: &[(NodeId, Feed<'a>)],
    batch: usize,
    start: usize,
    rows: usize,
) -> Result<Vec<(NodeId, Feed<'a>)>> {
    feeds
        .iter()
        .map(|&(id, feed)| {
            let len = match feed {
                Feed::F32(v) => v.len(),
                Feed::U32(v) => v.len(),
            };
            if batch == 0 || len % batch != 0 {
                return Err(Error::invalid(
                    "replicas",
                    format!("a feed of {len} values does not split into {batch} rows"),
                ));
            }
            let per = len / batch;
            let range = start * per..(start + rows) * per;
            Ok((
                id,
                match feed {
                    Feed::F32(v) => Feed::F32(&v[range]),
                    Feed::U32(v) => Feed::U32(&v[range]),
                },
            ))
        })
        .collect()
}

impl Executor for Replicated {
    fn graph(&self) -> &Graph {
        self.replicas[0].graph()
    }

    /// Each replica computes its shard's gradients on its own thread (shards differ by at
    /// most one row); then the mean gradient of the whole batch, `sum_i (rows_i / batch)
    /// g_i` accumulated in f64 in replica order, replaces every replica's. A batch with fewer
    /// rows than replicas runs on the first replica alone.
    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        if self.single.is_some() {
            return Err(Error::invalid(
                "compute_gradients",
                "the gradients of the last batch were computed but not applied; call \
                 apply_gradients first",
            ));
        }
        let n = self.replicas.len();
        if batch < n {
            self.replicas[0].compute_gradients(batch, feeds)?;
            self.single = Some(true);
            return Ok(());
        }
        let mut shards = Vec::with_capacity(n);
        let mut start = 0;
        for i in 0..n {
            let rows = batch / n + usize::from(i < batch % n);
            shards.push((rows, shard(feeds, batch, start, rows)?));
            start += rows;
        }
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(&shards)
                .map(|(r, (rows, feeds))| scope.spawn(move || r.compute_gradients(*rows, feeds)))
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::invalid(
                            "replicas",
                            format!("replica {i} panicked while computing its gradients"),
                        ))
                    })
                })
                .collect()
        });
        for (i, r) in results.into_iter().enumerate() {
            r.map_err(|e| Error::invalid("replicas", format!("replica {i}: {e}")))?;
        }
        let mut sum: Vec<f64> = Vec::new();
        for (r, (rows, _)) in self.replicas.iter_mut().zip(&shards) {
            let g = r.read_gradients()?;
            let w = *rows as f64 / batch as f64;
            if sum.is_empty() {
                sum = vec![0.0; g.len()];
            }
            for (s, &v) in sum.iter_mut().zip(&g) {
                *s += w * v as f64;
            }
        }
        let mean: Vec<f32> = sum.iter().map(|&v| v as f32).collect();
        for r in &mut self.replicas {
            r.write_gradients(&mean)?;
        }
        self.single = Some(false);
        Ok(())
    }

    fn read_gradients(&mut self) -> Result<Vec<f32>> {
        self.replicas[0].read_gradients()
    }

    fn write_gradients(&mut self, grads: &[f32]) -> Result<()> {
        match self.single {
            Some(true) => self.replicas[0].write_gradients(grads),
            _ => {
                for r in &mut self.replicas {
                    r.write_gradients(grads)?;
                }
                Ok(())
            }
        }
    }

    fn apply_gradients(&mut self) -> Result<()> {
        match self.single.take() {
            None => Err(Error::invalid(
                "apply_gradients",
                "no gradients are pending; call compute_gradients first",
            )),
            Some(true) => {
                self.replicas[0].apply_gradients()?;
                self.sync_from_first()
            }
            Some(false) => {
                for r in &mut self.replicas {
                    r.apply_gradients()?;
                }
                Ok(())
            }
        }
    }

    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        self.replicas[0].evaluate_batch(batch, feeds)
    }

    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>> {
        self.replicas[0].forward(batch, feeds, node)
    }

    fn metric_totals(&self) -> Result<MetricTotals> {
        let mut total = MetricTotals::default();
        for r in &self.replicas {
            total.merge(&r.metric_totals()?);
        }
        Ok(total)
    }

    fn reset_metrics(&mut self) -> Result<()> {
        self.replicas.iter_mut().try_for_each(|r| r.reset_metrics())
    }

    fn steps(&self) -> u64 {
        self.replicas[0].steps()
    }

    fn set_steps(&mut self, steps: u64) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.set_steps(steps))
    }

    fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.replicas.iter_mut().try_for_each(|r| r.set_lr(lr))
    }

    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.set_clip_global_norm(max_norm))
    }

    fn read_param(&self, p: NodeId) -> Result<Vec<f32>> {
        self.replicas[0].read_param(p)
    }

    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.write_param(p, values))
    }

    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>> {
        self.replicas[0].read_state(p)
    }

    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.write_state(p, state))
    }

    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>> {
        self.replicas[0].read_buffer(b)
    }

    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.write_buffer(b, values))
    }
}
