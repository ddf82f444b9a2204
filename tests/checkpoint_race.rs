//! Two processes saving different checkpoints into one directory at the same time never
//! corrupt either (each save has its own temporary file). The test binary runs itself twice
//! as the writers.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wgtrain::nn::{Dense, Device, Model, Sequential};
use wgtrain::optim::{AdamConfig, Optimizer};

const CHILD: &str = "WGTRAIN_RACE_CHECKPOINT";
const SAVES: usize = 40;

fn model(seed: u64) -> Model {
    Sequential::new(&[64])
        .dense(Dense::new(32))
        .dense(Dense::new(10))
        .compile(
            wgtrain::nn::Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::Cpu,
            seed,
        )
        .unwrap()
}

/// One writer: saves its checkpoint over and over, loading each back.
fn writer(path: &Path, seed: u64) {
    let mut m = model(seed);
    for _ in 0..SAVES {
        m.save(path).unwrap();
        m.load(path).unwrap();
    }
}

#[test]
fn concurrent_saves_in_one_directory_never_corrupt_each_other() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (path, seed) = spec.rsplit_once('|').unwrap();
        writer(Path::new(path), seed.parse().unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Names that differ only in their extension shared one temporary file before.
    let paths = [dir.path().join("m.a"), dir.path().join("m.b")];
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(k, p)| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "concurrent_saves_in_one_directory_never_corrupt_each_other",
                ])
                .env(CHILD, format!("{}|{k}", p.display()))
                // Their own test summaries would interleave with this runner's output.
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    for child in &mut children {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                assert!(status.success(), "a writer failed: {status}\n{err}");
                break;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("a writer hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for (k, p) in paths.iter().enumerate() {
        let mut fresh = model(99);
        fresh
            .load(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // It holds writer k's model, not the other's.
        // (Its weights: the files differ in the seed each model was compiled with.)
        let want = model(k as u64);
        assert_eq!(fresh.weights().unwrap(), want.weights().unwrap());
    }
    assert_eq!(
        common::part_files(dir.path()),
        Vec::<String>::new(),
        "no temporary file is left"
    );
}
