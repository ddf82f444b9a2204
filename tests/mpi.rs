//! Data parallelism over MPI (feature `mpi`): jobs of two ranks started by `mpirun`, each rank
//! a run of this test binary's `mpi_rank` entry. Two ranks train like one process on the
//! whole batch (within the gradient tolerances) and bit-identically to two in-process
//! replicas; runs repeat bit for bit; a checkpoint taken by two ranks resumes in one process;
//! a rank that fails, disagrees, dies or hangs stops the job with a message naming it, within
//! a bounded time.
#![cfg(feature = "mpi")]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{parallel_data as data, parallel_model as model};
use ndarray::Array2;
use wgtrain::data::ArrayDataset;
use wgtrain::gpu::GpuContext;
use wgtrain::nn::{Device, FitConfig, Model};

const MODE: &str = "WGTRAIN_TEST_MPI_MODE";
const OUT: &str = "WGTRAIN_TEST_MPI_OUT";
const ROWS: &str = "WGTRAIN_TEST_MPI_ROWS";

/// Two epochs of global batch 32, shuffled (the same seeded order on every rank).
fn fit_config(epochs: usize) -> FitConfig {
    FitConfig {
        seed: 11,
        ..FitConfig::new(epochs, 32)
    }
}

fn outputs(m: &mut Model, d: &ArrayDataset) -> Vec<f32> {
    let x = Array2::from_shape_vec((d.len(), 6), d.features.clone()).unwrap();
    m.predict_array(&x).unwrap().outputs.into_iter().collect()
}

/// Bytes of the final outputs on the data, then the last epoch's loss.
fn encode(outputs: &[f32], loss: f32) -> Vec<u8> {
    outputs
        .iter()
        .chain([&loss])
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn decode(bytes: &[u8]) -> (Vec<f32>, f32) {
    let mut v: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let loss = v.pop().unwrap();
    (v, loss)
}

/// One rank of the jobs below (run by `mpirun`, never directly: without the mode it does
/// nothing).
#[test]
#[ignore = "a rank of the MPI jobs the other tests start"]
fn mpi_rank() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let mpi = wgtrain::mpi::Mpi::init().unwrap();
    let rank = mpi.rank();
    let rows: usize = std::env::var(ROWS).map_or(320, |v| v.parse().unwrap());
    let mut d = data(rows);
    let mut epochs = 2;
    let mut cfg_extra = None;
    match mode.as_str() {
        "train" => {}
        // Rank 1 holds a corrupt sample: its `fit` fails before any step.
        "nan" if rank == 1 => d.features[5 * 6 + 3] = f32::NAN,
        // Rank 1 holds more data than the others.
        "mismatch" if rank == 1 => d = data(rows + 10),
        // Rank 1 stops answering before training.
        "hang" if rank == 1 => std::thread::sleep(Duration::from_secs(3600)),
        // Long enough for rank 1 to be killed during training.
        "kill" => epochs = 1_000_000,
        "checkpoint" => {
            epochs = 1;
            cfg_extra = Some(PathBuf::from(std::env::var(OUT).unwrap()).with_extension("ckpt"));
        }
        _ => {}
    }
    let mut m = model(Device::mpi(&mpi).unwrap());
    let cfg = FitConfig {
        checkpoint: cfg_extra,
        ..fit_config(epochs)
    };
    match m.fit(&d, &cfg) {
        Ok(h) => {
            let out = outputs(&mut m, &d);
            if rank == 0 {
                let bytes = encode(&out, h.epochs.last().unwrap().loss);
                std::fs::write(std::env::var(OUT).unwrap(), bytes).unwrap();
            }
        }
        Err(e) => {
            // Each rank's message also goes to its own file: the ranks' stderr streams
            // interleave in `mpirun`'s output, even within a line.
            let message = format!("rank {rank} stopped: {e}\n");
            eprint!("{message}");
            let out = PathBuf::from(std::env::var(OUT).unwrap());
            std::fs::write(out.with_extension(format!("rank{rank}.err")), message).unwrap();
            drop(m);
            drop(mpi);
            std::process::exit(3);
        }
    }
}

struct Job {
    output: Output,
    seconds: f64,
    out_file: PathBuf,
}

impl Job {
    /// The job's output, then each rank's own error message, whole.
    fn text(&self) -> String {
        let mut text = format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        );
        for rank in 0..8 {
            let file = self.out_file.with_extension(format!("rank{rank}.err"));
            if let Ok(message) = std::fs::read_to_string(file) {
                text += &format!("\n[rank {rank}'s error file] {message}");
            }
        }
        text
    }

    fn result(&self) -> (Vec<f32>, f32) {
        assert!(
            self.output.status.success(),
            "the job failed:\n{}",
            self.text()
        );
        decode(&std::fs::read(&self.out_file).unwrap())
    }
}

/// Runs `mpi_rank` in a job of `ranks` ranks; `wrap` prefixes rank 1's command (a shell
/// snippet that ends in `exec "$@"`).
fn job(ranks: usize, mode: &str, rows: usize, env: &[(&str, &str)], wrap: Option<&str>) -> Job {
    static JOBS: AtomicUsize = AtomicUsize::new(0);
    let n = JOBS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("wgtrain-mpi-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join(format!("{rows}.out"));
    let _ = std::fs::remove_file(&out_file);
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string());
    for (k, v) in env {
        cmd.args(["-x", &format!("{k}={v}")]);
    }
    if let Some(w) = wrap {
        cmd.args(["sh", "-c", w, "sh"]);
    }
    cmd.arg(&exe)
        .args([
            "mpi_rank",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(MODE, mode)
        .env(OUT, &out_file)
        .env(ROWS, rows.to_string());
    let start = Instant::now();
    let output = cmd
        .output()
        .expect("running mpirun (install openmpi-bin and libopenmpi-dev)");
    Job {
        output,
        seconds: start.elapsed().as_secs_f64(),
        out_file,
    }
}

fn in_process(device: Device, d: &ArrayDataset, epochs: usize) -> (Vec<f32>, f32) {
    let mut m = model(device);
    let h = m.fit(d, &fit_config(epochs)).unwrap();
    (outputs(&mut m, d), h.epochs.last().unwrap().loss)
}

fn gpu() -> Arc<GpuContext> {
    Arc::new(GpuContext::new().expect("the tests need a GPU adapter"))
}

fn worst_relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1e-3 + x.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn two_ranks_train_like_one_process_on_the_whole_batch() {
    // 320 rows: 20 steps of 32 (16 rows per rank); 321: each epoch ends with a batch of one
    // row, fewer than the ranks, which rank 0 trains alone and broadcasts.
    for rows in [320, 321] {
        let d = data(rows);
        let (two, loss_two) = job(2, "train", rows, &[], None).result();
        let (one, loss_one) = in_process(Device::Gpu(gpu()), &d, 2);
        let worst = worst_relative(&one, &two);
        assert!(
            worst < 1e-3,
            "{rows} rows: outputs differ by {worst} (relative)"
        );
        assert!(
            (loss_one - loss_two).abs() <= 1e-4 * loss_one.abs().max(1e-3),
            "{rows} rows: loss {loss_one} in one process, {loss_two} on two ranks"
        );
        // Two in-process replicas split the batch and sum in the same order: the same bits.
        let (replicas, loss_replicas) = in_process(Device::Replicas(vec![gpu(), gpu()]), &d, 2);
        assert_eq!(
            two, replicas,
            "{rows} rows: two ranks and two replicas differ"
        );
        assert_eq!(loss_two, loss_replicas);
    }
}

#[test]
fn two_ranks_repeat_bit_for_bit() {
    let a = job(2, "train", 320, &[], None).result();
    let b = job(2, "train", 320, &[], None).result();
    assert_eq!(a, b);
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_in_one_process() {
    let two = job(2, "checkpoint", 320, &[], None);
    two.result();
    let ckpt = two.out_file.with_extension("ckpt");
    let d = data(320);
    let mut resumed = model(Device::Gpu(gpu()));
    resumed.load(&ckpt).unwrap();
    let cfg = FitConfig {
        initial_epoch: 1,
        ..fit_config(2)
    };
    resumed.fit(&d, &cfg).unwrap();
    let (whole, _) = in_process(Device::Gpu(gpu()), &d, 2);
    let worst = worst_relative(&whole, &outputs(&mut resumed, &d));
    assert!(worst < 1e-3, "resumed outputs differ by {worst} (relative)");
}

fn assert_stopped(job: &Job, within: f64, needles: &[&str]) {
    let text = job.text();
    assert!(!job.output.status.success(), "the job succeeded:\n{text}");
    assert!(
        job.seconds < within,
        "the job took {:.0} s to stop (bound {within} s):\n{text}",
        job.seconds
    );
    for n in needles {
        assert!(text.contains(n), "no `{n}` in the job's output:\n{text}");
    }
}

#[test]
fn a_failing_rank_stops_every_rank_with_its_name() {
    let j = job(2, "nan", 320, &[], None);
    assert_stopped(
        &j,
        120.0,
        &["rank 0 stopped: rank 1 of 2:", "NaN", "rank 1 stopped:"],
    );
}

#[test]
fn ranks_with_different_data_stop_naming_the_odd_one() {
    let j = job(2, "mismatch", 320, &[], None);
    assert_stopped(
        &j,
        120.0,
        &["rank 0 stopped: rank 1 of 2: rank 1 has 330 training samples, rank 0 has 320"],
    );
}

#[test]
fn a_killed_rank_ends_the_job_naming_it() {
    // Rank 1 is killed (SIGKILL) 5 s after it starts, in the middle of training.
    let wrap = r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then (sleep 5; kill -9 $$) & fi; exec "$@""#;
    let j = job(2, "kill", 320, &[], Some(wrap));
    assert_stopped(&j, 90.0, &["process rank 1", "signal 9"]);
}

#[test]
fn a_hung_rank_trips_the_deadline() {
    let j = job(2, "hang", 320, &[(wgtrain::mpi::TIMEOUT_ENV, "5")], None);
    assert_stopped(
        &j,
        90.0,
        &["rank 0 of 2: waited 5 s at compiling the model for the other ranks"],
    );
}
