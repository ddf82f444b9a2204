//! Shared helpers for the GPU tests: one context per test binary, seeded data, tolerances.
#![allow(dead_code)]

pub mod mlp;

use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use wgtrain::gpu::{GpuBuffer, GpuContext};

/// The test GPU. Panics with the reason when there is no adapter: GPU tests never skip.
pub fn gpu() -> &'static Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(ctx) => {
            eprintln!("GPU tests run on: {:?}", ctx.adapter_info());
            Arc::new(ctx)
        }
        Err(e) => panic!("GPU tests need a GPU adapter and none could be opened: {e}"),
    })
}

/// One context per kernel plan this adapter runs (ARCHITECTURE.md, "GEMM adapts to the
/// adapter"): the CPU-adapter plan where the adapter has subgroups of 8 (lavapipe; a note on
/// stderr where it has not), then the real-GPU plan, which every adapter runs. A check that
/// loops over them covers both plans in one test run; each context's [`GpuContext::plan`]
/// names it, and `for_each_plan` prints it before each pass so a failure says which.
pub fn each_plan() -> &'static [Arc<GpuContext>] {
    use wgtrain::gpu::{AdapterKind, GpuOptions};
    static PLANS: OnceLock<Vec<Arc<GpuContext>>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let open = |plan| {
            GpuContext::with_options(GpuOptions {
                plan: Some(plan),
                ..Default::default()
            })
        };
        let mut plans = Vec::new();
        match open(AdapterKind::Cpu) {
            Ok(ctx) => plans.push(Arc::new(ctx)),
            Err(e) => eprintln!("the CPU-adapter plan does not run on this adapter: {e}"),
        }
        match open(AdapterKind::Gpu) {
            Ok(ctx) => plans.push(Arc::new(ctx)),
            Err(e) => panic!("GPU tests need a GPU adapter and none could be opened: {e}"),
        }
        plans
    })
}

/// Runs `check` once per kernel plan (see [`each_plan`]).
pub fn for_each_plan(mut check: impl FnMut(&Arc<GpuContext>)) {
    for ctx in each_plan() {
        eprintln!("kernel plan: {:?}", ctx.plan());
        check(ctx);
    }
}

/// Uniform values in [lo, hi) from a fixed seed.
pub fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn upload(label: &str, data: &[f32]) -> GpuBuffer {
    GpuBuffer::from_slice(gpu(), label, data).expect("upload")
}

pub fn upload_u32(label: &str, data: &[u32]) -> GpuBuffer {
    GpuBuffer::from_slice(gpu(), label, data).expect("upload")
}

pub fn zeros(label: &str, n: usize) -> GpuBuffer {
    GpuBuffer::zeros(gpu(), label, n).expect("allocate")
}

pub fn download(buf: &GpuBuffer) -> Vec<f32> {
    buf.read::<f32>(gpu()).expect("read back")
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise, with NaN matching NaN and
/// infinities matching exactly; reports the worst element.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        if w.is_nan() || g.is_nan() {
            assert!(w.is_nan() && g.is_nan(), "{what}[{i}]: got {g}, want {w}");
            continue;
        }
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} got {} want {} (atol {atol}, rtol {rtol}, {} elements)",
            got[i],
            want[i],
            got.len()
        );
    }
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Rewrites a checkpoint's tensors (renamed, added) with a valid SHA-256, as an earlier
/// version (or a careless tool) would have written them.
pub fn rewrite_checkpoint(
    bytes: &[u8],
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> Vec<u8> {
    rewrite_checkpoint_step(bytes, None, edit)
}

/// [`rewrite_checkpoint`], also setting the step count when `step` is given.
pub fn rewrite_checkpoint_step(
    bytes: &[u8],
    step: Option<u64>,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> Vec<u8> {
    use sha2::Digest;
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let entry = meta.metadata().as_ref().unwrap()["wgtrain"].clone();
    let counters: Vec<&str> = entry
        .split(';')
        .filter(|kv| kv.starts_with("step=") || kv.starts_with("epoch="))
        .collect();
    let counters = match step {
        Some(step) => counters
            .iter()
            .map(|kv| match kv.starts_with("step=") {
                true => format!("step={step}"),
                false => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(";"),
        None => counters.join(";"),
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .names()
        .iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            (n.to_string(), t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    edit(&mut tensors);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut digest = sha2::Sha256::new();
    digest.update(counters.as_bytes());
    for (n, _, d) in &tensors {
        digest.update(n.as_bytes());
        digest.update(d);
    }
    let digest: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, d)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d);
            (n.clone(), view.unwrap())
        })
        .collect();
    let meta = std::collections::HashMap::from([(
        "wgtrain".to_string(),
        format!("format=wgtrain-checkpoint-1;{counters};sha256={digest}"),
    )]);
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// The temporary `.part` files left in `dir` (an atomic write must leave none).
pub fn part_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

/// An example binary: cargo test builds the examples next to the test binaries
/// (target/<profile>/examples).
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run through `cargo test`",
        path.display()
    );
    path
}

/// Seeded regression data for the data-parallel tests: 6 features, 2 targets.
pub fn parallel_data(n: usize) -> wgtrain::data::ArrayDataset {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(4);
    let x = ndarray::Array2::from_shape_fn((n, 6), |_| rng.random_range(-1.0f32..1.0));
    let y = ndarray::Array2::from_shape_fn((n, 2), |(i, j)| (x[[i, j]] * 2.0 - x[[i, 5]]).tanh());
    wgtrain::data::ArrayDataset::regression(&x, &y).unwrap()
}

/// The data-parallel tests' model: 6-16-2, tanh, trained with SGD with momentum, whose step
/// is proportional to the gradient, so a wrongly weighted sum shows (Adam would normalize it
/// away).
pub fn parallel_model(device: wgtrain::nn::Device) -> wgtrain::nn::Model {
    use wgtrain::nn::{Dense, Loss, Sequential};
    use wgtrain::optim::{Optimizer, SgdConfig};
    Sequential::new(&[6])
        .dense(Dense::new(16).activation(wgtrain::ops::Activation::Tanh))
        .dense(Dense::new(2))
        .compile(
            Loss::MeanSquaredError,
            Optimizer::Sgd(SgdConfig {
                momentum: 0.9,
                ..SgdConfig::new(0.1)
            }),
            device,
            5,
        )
        .unwrap()
}
