//! Shared helpers for the GPU tests: one context per test binary, seeded data, tolerances.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use wgtrain::gpu::{GpuBuffer, GpuContext};

/// The test GPU. Panics with the reason when there is no adapter: GPU tests never skip.
pub fn gpu() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(ctx) => {
            eprintln!("GPU tests run on: {:?}", ctx.adapter_info());
            ctx
        }
        Err(e) => panic!("GPU tests need a GPU adapter and none could be opened: {e}"),
    })
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
