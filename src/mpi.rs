//! Data parallelism across processes and machines over MPI (ARCHITECTURE.md, "Data
//! parallelism"), behind the `mpi` cargo feature.
//!
//! Every rank holds the whole model. Rank 0's parameters are broadcast when a model is
//! compiled; each rank's loader streams its own rows of every global batch
//! ([`crate::data::Shard`]); at the step's seam the ranks' gradients, weighted by their
//! shares of the batch, are summed by an MPI all-reduce; every rank applies the same update.
//! The summation runs in MPI (Open MPI, through `ferrompi`), not in a protocol of ours.
//!
//! Before each collective the ranks exchange a small header (what each is about to do, how
//! many rows it holds, whether it failed), with a deadline. A rank whose work failed still
//! joins it, so the others stop with [`Error::Rank`] naming it instead of waiting forever;
//! ranks that disagree (different data, a missed step) stop the same way. A rank that dies is
//! reported by `mpirun`, which ends the job; a rank that hangs trips the deadline
//! ([`TIMEOUT_ENV`]), and the rank that waited aborts the job with a message.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ferrompi::{Communicator, ReduceOp, ThreadLevel};

use crate::data::Shard;
use crate::error::{Error, Result};
use crate::graph::{Executor, Feed, Graph, NodeId};
use crate::ops::{ErrorSums, MetricTotals};

/// Environment variable: seconds a rank waits for the others at a collective before it
/// aborts the job (default 300). It bounds how long a hung rank can hold the others.
pub const TIMEOUT_ENV: &str = "WGTRAIN_MPI_TIMEOUT";

/// Exit code of a job aborted because a rank did not answer in time.
pub const TIMEOUT_EXIT: i32 = 75;

/// This process's MPI session: `MPI_Init` when made, `MPI_Finalize` when the last clone is
/// dropped (models compiled for it hold clones, so it outlives them).
#[derive(Clone)]
pub struct Mpi {
    session: Rc<Session>,
}

struct Session {
    // Fields drop in order: the communicator before MPI is finalized.
    world: Communicator,
    /// A duplicate of the world for the models' collectives (duplicating is itself a
    /// collective, without a deadline: it is done here, once, at start-up).
    comm: Communicator,
    local_rank: usize,
    /// The step times of this rank's models, summed.
    times: std::cell::Cell<StepTimes>,
    _mpi: ferrompi::Mpi,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank(), self.size())
    }
}

fn mpi_error(op: &str, e: ferrompi::Error) -> Error {
    Error::invalid("mpi", format!("{op}: {e}"))
}

impl Mpi {
    /// Initializes MPI (once per process; a second call is an error). Without `mpirun` the
    /// process is a job of one rank.
    pub fn init() -> Result<Self> {
        if ferrompi::Mpi::is_initialized() {
            return Err(Error::invalid(
                "Mpi::init",
                "MPI is already initialized in this process; clone the first Mpi instead",
            ));
        }
        // Serialized: MPI is called from whichever thread drives training, one at a time.
        let mpi = ferrompi::Mpi::init_thread(ThreadLevel::Serialized)
            .map_err(|e| mpi_error("MPI_Init_thread", e))?;
        let world = mpi.world();
        let local_rank = world
            .split_shared()
            .map_err(|e| mpi_error("MPI_Comm_split_type", e))?
            .rank() as usize;
        let comm = world
            .duplicate()
            .map_err(|e| mpi_error("MPI_Comm_dup", e))?;
        Ok(Mpi {
            session: Rc::new(Session {
                world,
                comm,
                local_rank,
                times: Default::default(),
                _mpi: mpi,
            }),
        })
    }

    /// Whether this process was started by an MPI launcher (`mpirun`, `srun`), judged from
    /// the environment the launchers set.
    pub fn launched() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }

    /// This process's rank in the job.
    pub fn rank(&self) -> usize {
        self.session.world.rank() as usize
    }

    /// Number of ranks in the job.
    pub fn size(&self) -> usize {
        self.session.world.size() as usize
    }

    /// This process's rank among the ranks on its machine (which GPU it takes).
    pub fn local_rank(&self) -> usize {
        self.session.local_rank
    }

    /// Whether this is rank 0, the one that prints and writes files.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Where this rank's distributed training steps spent their time so far.
    pub fn step_times(&self) -> StepTimes {
        self.session.times.get()
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<()> {
        self.session
            .world
            .barrier()
            .map_err(|e| mpi_error("MPI_Barrier", e))
    }
}

/// What a rank is about to do at a collective (compared across ranks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Init = 1,
    Step = 2,
    Sync = 3,
    Metrics = 4,
    Agree = 5,
    Fail = 6,
}

impl Stage {
    fn name(code: f64) -> &'static str {
        match code as i64 {
            1 => "compiling the model",
            2 => "a training step",
            3 => "copying rank 0's update",
            4 => "summing the metrics",
            5 => "checking the data",
            6 => "stopping",
            _ => "something unknown",
        }
    }
}

/// Where the time of the distributed steps went, summed over steps (rank-local).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    pub steps: u64,
    /// Forward and backward pass until the gradients are complete (with the previous step's
    /// update, which runs asynchronously until then).
    pub compute: Duration,
    /// Copying the gradients to the host.
    pub read_back: Duration,
    /// The header exchange and the all-reduce, including waiting for slower ranks.
    pub all_reduce: Duration,
    /// Writing the summed gradients back to the device.
    pub write: Duration,
}

/// One rank's executor in a data-parallel job: another executor, with the gradients summed
/// over the ranks at the seam (see the module documentation).
pub struct MpiExecutor {
    inner: Box<dyn Executor + Send>,
    mpi: Mpi,
    timeout: Duration,
    /// Set once a failure was shared: later collectives fail at once with it.
    failed: RefCell<Option<Error>>,
    /// The pending step: `true` when it ran on rank 0 alone (a batch with fewer rows than
    /// ranks), whose update the others then copy.
    single: Option<bool>,
    /// Per-step scratch: the weighted gradients summed in f64, then their f32 mean.
    sum: Vec<f64>,
    mean: Vec<f32>,
    /// The pending step's times, added to the session's when it completes.
    times: StepTimes,
}

impl MpiExecutor {
    /// Wraps this rank's executor: checks that every rank compiled the same parameter layout,
    /// then copies rank 0's parameters, optimizer state, buffers and step count to all.
    pub fn new(inner: Box<dyn Executor + Send>, mpi: &Mpi) -> Result<Self> {
        let timeout = match std::env::var(TIMEOUT_ENV) {
            Err(_) => Duration::from_secs(300),
            Ok(v) => match v.trim().parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => Duration::from_secs_f64(s),
                _ => {
                    return Err(Error::invalid(
                        "MpiExecutor",
                        format!("{TIMEOUT_ENV}={v}: give the seconds to wait, a positive number"),
                    ))
                }
            },
        };
        let mut exec = MpiExecutor {
            inner,
            mpi: mpi.clone(),
            timeout,
            failed: RefCell::new(None),
            single: None,
            sum: Vec::new(),
            mean: Vec::new(),
            times: StepTimes::default(),
        };
        let (_, len) = exec.inner.graph().param_layout();
        exec.check_same(Stage::Init, "parameters (after alignment)", len as u64)?;
        exec.broadcast_state()?;
        Ok(exec)
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.mpi.rank()
    }

    /// Ranks in the job.
    pub fn ranks(&self) -> usize {
        self.mpi.size()
    }

    fn comm(&self) -> &Communicator {
        &self.mpi.session.comm
    }

    fn rank_error(&self, rank: usize, detail: String) -> Error {
        Error::Rank {
            rank,
            ranks: self.ranks(),
            detail,
        }
    }

    /// The header exchange every collective starts with: each rank's stage, a value (rows,
    /// a count) and whether it failed, with `failure` as this rank's message. Returns each
    /// rank's value; an error when any rank failed (naming the first) or when the ranks are
    /// at different stages.
    fn exchange(&self, stage: Stage, value: u64, failure: Option<&str>) -> Result<Vec<u64>> {
        if let Some(e) = self.failed.borrow().as_ref() {
            return Err(e.clone_error());
        }
        let (n, me) = (self.ranks(), self.rank());
        // Max-reduced: every other rank puts -1 (0 for the flags) where this one writes.
        let mut h = vec![-1.0f64; 3 * n];
        h[2 * n..].fill(0.0);
        h[me] = stage as i64 as f64;
        h[n + me] = value as f64;
        h[2 * n + me] = f64::from(u8::from(failure.is_some()));
        self.wait_for_all(stage, &mut h)?;
        if let Some(root) = (0..n).find(|&r| h[2 * n + r] > 0.0) {
            let mut text = [0u8; 2048];
            if root == me {
                let msg = failure.unwrap_or("failed").as_bytes();
                let len = msg.len().min(text.len());
                text[..len].copy_from_slice(&msg[..len]);
            }
            self.comm()
                .broadcast(&mut text, root as i32)
                .map_err(|e| mpi_error("MPI_Bcast", e))?;
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let detail = String::from_utf8_lossy(&text[..end]).into_owned();
            let error = self.rank_error(root, format!("{detail} (every rank stopped)"));
            *self.failed.borrow_mut() = Some(error.clone_error());
            return Err(error);
        }
        if let Some(other) = (1..n).find(|&r| h[r] != h[0]) {
            let error = self.rank_error(
                other,
                format!(
                    "the ranks are out of step: rank {other} is at {} while rank 0 is at {}; \
                     every rank must run the same model on data of the same size",
                    Stage::name(h[other]),
                    Stage::name(h[0])
                ),
            );
            *self.failed.borrow_mut() = Some(error.clone_error());
            return Err(error);
        }
        Ok(h[n..2 * n].iter().map(|&v| v as u64).collect())
    }

    /// The header's all-reduce, polled against the deadline. MPI has no timeout on a
    /// collective and cannot cancel one, so a rank that waited too long aborts the job.
    fn wait_for_all(&self, stage: Stage, h: &mut [f64]) -> Result<()> {
        let start = Instant::now();
        let (comm, timeout) = (self.comm(), self.timeout);
        ferrompi::scope(|s| {
            let mut req = comm.iallreduce_inplace(s, h, ReduceOp::Max)?;
            let mut polls = 0u32;
            while req.test()?.is_none() {
                if start.elapsed() > timeout {
                    // One write, so that other ranks' output cannot split the line.
                    let message = format!(
                        "wgtrain: rank {} of {}: waited {:.0} s at {} for the other ranks: one \
                         of them stopped or hangs, or does not call the same method (every rank \
                         calls fit and evaluate); aborting the job ({TIMEOUT_ENV} sets the \
                         wait)\n",
                        comm.rank(),
                        comm.size(),
                        timeout.as_secs_f64(),
                        Stage::name(stage as i64 as f64),
                    );
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
                    comm.abort(TIMEOUT_EXIT);
                }
                polls += 1;
                if polls < 2000 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            Ok(())
        })
        .map_err(|e| mpi_error("MPI_Iallreduce", e))
    }

    /// An exchange in which every rank must bring the same value.
    fn check_same(&mut self, stage: Stage, what: &str, value: u64) -> Result<()> {
        let values = self.exchange(stage, value, None)?;
        if let Some(r) = (1..values.len()).find(|&r| values[r] != values[0]) {
            let error = self.rank_error(
                r,
                format!(
                    "rank {r} has {} {what}, rank 0 has {}; every rank must hold the same \
                     model and data",
                    values[r], values[0]
                ),
            );
            *self.failed.borrow_mut() = Some(error.clone_error());
            return Err(error);
        }
        Ok(())
    }

    /// Joins the next exchange as a failed rank, so that the others stop (once).
    fn share_failure(&self, error: &Error) {
        if self.failed.borrow().is_none() {
            let _ = self.exchange(Stage::Fail, 0, Some(&error.to_string()));
        }
    }

    /// Copies rank 0's parameters, optimizer state, buffers and step count to every rank.
    fn broadcast_state(&mut self) -> Result<()> {
        let graph = self.inner.graph();
        let (params, buffers) = (graph.params(), graph.buffers());
        let root = self.rank() == 0;
        let mut flat = Vec::new();
        let mut sizes = Vec::new();
        for &p in &params {
            let values = self.inner.read_param(p)?;
            let state = self.inner.read_state(p)?;
            sizes.push((values.len(), state.len()));
            if root {
                flat.extend_from_slice(&values);
                state.iter().for_each(|s| flat.extend_from_slice(s));
            }
        }
        let mut buffer_sizes = Vec::new();
        for &b in &buffers {
            let values = self.inner.read_buffer(b)?;
            buffer_sizes.push(values.len());
            if root {
                flat.extend_from_slice(&values);
            }
        }
        // Every slot is as long as its parameter.
        let total: usize = sizes
            .iter()
            .map(|(n, slots)| n * (1 + slots))
            .sum::<usize>()
            + buffer_sizes.iter().sum::<usize>();
        flat.resize(total, 0.0);
        let mut steps = [self.inner.steps()];
        self.comm()
            .broadcast(&mut flat, 0)
            .and_then(|_| self.comm().broadcast(&mut steps, 0))
            .map_err(|e| mpi_error("MPI_Bcast", e))?;
        if root {
            return Ok(());
        }
        let mut at = 0;
        let mut take = |n: usize| {
            at += n;
            &flat[at - n..at]
        };
        for (&p, &(n, slots)) in params.iter().zip(&sizes) {
            self.inner.write_param(p, take(n))?;
            let state: Vec<Vec<f32>> = (0..slots).map(|_| take(n).to_vec()).collect();
            self.inner.write_state(p, &state)?;
        }
        for (&b, &n) in buffers.iter().zip(&buffer_sizes) {
            self.inner.write_buffer(b, take(n))?;
        }
        self.inner.set_steps(steps[0])
    }

    /// This rank's part of a step until the gradients are on the host: (compute, read-back).
    fn local_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<Vec<f32>> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let t = Instant::now();
        self.inner.compute_gradients(batch, feeds)?;
        self.inner.finish()?;
        self.times.compute += t.elapsed();
        let t = Instant::now();
        let grads = self.inner.read_gradients()?;
        self.times.read_back += t.elapsed();
        Ok(grads)
    }
}

/// `Error` is not `Clone` (it holds I/O errors); a shared failure is kept as its text.
trait CloneError {
    fn clone_error(&self) -> Error;
}

impl CloneError for Error {
    fn clone_error(&self) -> Error {
        match self {
            Error::Rank {
                rank,
                ranks,
                detail,
            } => Error::Rank {
                rank: *rank,
                ranks: *ranks,
                detail: detail.clone(),
            },
            other => Error::invalid("mpi", other.to_string()),
        }
    }
}

impl Executor for MpiExecutor {
    fn graph(&self) -> &Graph {
        self.inner.graph()
    }

    /// This rank's rows' gradients, then the mean over the global batch, `sum_r (rows_r /
    /// rows) g_r`, all-reduced in f64; every rank's gradients are replaced by it. A batch
    /// with fewer rows than ranks runs on rank 0 alone (see [`Shard`]). A job of one rank
    /// passes the step through untouched.
    fn compute_gradients(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        if self.single.is_some() {
            return Err(Error::invalid(
                "compute_gradients",
                "the gradients of the last batch were computed but not applied; call \
                 apply_gradients first",
            ));
        }
        if self.ranks() == 1 {
            // Nothing to sum: the step stays one submission, with no read-back.
            self.inner.compute_gradients(batch, feeds)?;
            self.single = Some(false);
            return Ok(());
        }
        let local = self.local_gradients(batch, feeds);
        let t = Instant::now();
        let failure = local.as_ref().err().map(|e| e.to_string());
        let rows = self.exchange(Stage::Step, batch as u64, failure.as_deref());
        let (grads, rows) = match (local, rows) {
            (Err(e), _) => return Err(e),
            (_, Err(e)) => return Err(e),
            (Ok(g), Ok(r)) => (g, r),
        };
        if rows.contains(&0) {
            self.single = Some(true);
            self.times.all_reduce += t.elapsed();
            return Ok(());
        }
        let total: u64 = rows.iter().sum();
        let w = batch as f64 / total as f64;
        self.sum.clear();
        self.sum.extend(grads.iter().map(|&g| w * g as f64));
        self.mpi
            .session
            .comm
            .allreduce_inplace(&mut self.sum, ReduceOp::Sum)
            .map_err(|e| mpi_error("MPI_Allreduce", e))?;
        self.times.all_reduce += t.elapsed();
        let t = Instant::now();
        self.mean.clear();
        self.mean.extend(self.sum.iter().map(|&v| v as f32));
        self.inner.write_gradients(&self.mean)?;
        self.times.write += t.elapsed();
        self.single = Some(false);
        let mut shared = self.mpi.session.times.get();
        shared.steps += 1;
        shared.compute += self.times.compute;
        shared.read_back += self.times.read_back;
        shared.all_reduce += self.times.all_reduce;
        shared.write += self.times.write;
        self.mpi.session.times.set(shared);
        self.times = StepTimes::default();
        Ok(())
    }

    fn read_gradients(&mut self) -> Result<Vec<f32>> {
        self.inner.read_gradients()
    }

    fn write_gradients(&mut self, grads: &[f32]) -> Result<()> {
        self.inner.write_gradients(grads)
    }

    fn apply_gradients(&mut self) -> Result<()> {
        match self.single.take() {
            None => Err(Error::invalid(
                "apply_gradients",
                "no gradients are pending; call compute_gradients first",
            )),
            Some(false) => self.inner.apply_gradients(),
            Some(true) => {
                let applied = if self.rank() == 0 {
                    self.inner.apply_gradients()
                } else {
                    Ok(())
                };
                let failure = applied.as_ref().err().map(|e| e.to_string());
                let shared = self.exchange(Stage::Sync, 0, failure.as_deref());
                applied?;
                shared?;
                self.broadcast_state()
            }
        }
    }

    fn evaluate_batch(&mut self, batch: usize, feeds: &[(NodeId, Feed<'_>)]) -> Result<()> {
        if batch == 0 {
            return Ok(());
        }
        self.inner.evaluate_batch(batch, feeds)
    }

    fn forward(
        &mut self,
        batch: usize,
        feeds: &[(NodeId, Feed<'_>)],
        node: NodeId,
    ) -> Result<Vec<f32>> {
        self.inner.forward(batch, feeds, node)
    }

    /// Every rank's totals, gathered and merged in rank order (the same figures on every
    /// rank).
    fn metric_totals(&self) -> Result<MetricTotals> {
        if self.ranks() == 1 {
            return self.inner.metric_totals();
        }
        let local = self.inner.metric_totals();
        let failure = local.as_ref().err().map(|e| e.to_string());
        let shared = self.exchange(Stage::Metrics, 0, failure.as_deref());
        let local = local?;
        shared?;
        let e = &local.errors;
        let send = [
            local.loss_sum,
            local.correct as f64,
            local.predictions as f64,
            local.samples as f64,
            local.steps as f64,
            local.first_non_finite as f64,
            e.abs,
            e.sq,
            e.t,
            e.t2,
            e.n as f64,
        ];
        let mut all = vec![0.0; send.len() * self.ranks()];
        self.comm()
            .allgather(&send, &mut all)
            .map_err(|e| mpi_error("MPI_Allgather", e))?;
        let mut total = MetricTotals::default();
        for w in all.chunks(send.len()) {
            total.merge(&MetricTotals {
                loss_sum: w[0],
                correct: w[1] as u64,
                predictions: w[2] as u64,
                samples: w[3] as u64,
                steps: w[4] as u64,
                first_non_finite: w[5] as u64,
                errors: ErrorSums {
                    abs: w[6],
                    sq: w[7],
                    t: w[8],
                    t2: w[9],
                    n: w[10] as u64,
                },
            });
        }
        Ok(total)
    }

    fn reset_metrics(&mut self) -> Result<()> {
        self.inner.reset_metrics()
    }

    fn steps(&self) -> u64 {
        self.inner.steps()
    }

    fn set_steps(&mut self, steps: u64) -> Result<()> {
        self.inner.set_steps(steps)
    }

    fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.inner.set_lr(lr)
    }

    fn set_clip_global_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        self.inner.set_clip_global_norm(max_norm)
    }

    fn read_param(&self, p: NodeId) -> Result<Vec<f32>> {
        self.inner.read_param(p)
    }

    fn write_param(&mut self, p: NodeId, values: &[f32]) -> Result<()> {
        self.inner.write_param(p, values)
    }

    fn read_state(&self, p: NodeId) -> Result<Vec<Vec<f32>>> {
        self.inner.read_state(p)
    }

    fn write_state(&mut self, p: NodeId, state: &[Vec<f32>]) -> Result<()> {
        self.inner.write_state(p, state)
    }

    fn read_buffer(&self, b: NodeId) -> Result<Vec<f32>> {
        self.inner.read_buffer(b)
    }

    fn write_buffer(&mut self, b: NodeId, values: &[f32]) -> Result<()> {
        self.inner.write_buffer(b, values)
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }

    fn shard(&self) -> Option<Shard> {
        Some(Shard {
            rank: self.rank(),
            ranks: self.ranks(),
        })
    }

    fn agree(&mut self, what: &'static str, value: u64) -> Result<()> {
        self.check_same(Stage::Agree, what, value)
    }

    fn abandon(&mut self, error: &Error) {
        self.share_failure(error);
    }
}
