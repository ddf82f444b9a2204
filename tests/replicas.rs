//! Data parallelism in one process: two replicas (two devices on the test adapter) sharing
//! each batch train the same model as one replica on the whole batch, within the gradient
//! tolerances (the sum of two half-batch means is rounded differently from one mean), and
//! bit-identically from run to run.

mod common;

use std::sync::Arc;

use common::{parallel_data as data, parallel_model as model};
use ndarray::Array2;
use wgtrain::data::ArrayDataset;
use wgtrain::gpu::GpuContext;
use wgtrain::nn::{Device, FitConfig};

fn contexts(n: usize) -> Vec<Arc<GpuContext>> {
    (0..n)
        .map(|_| Arc::new(GpuContext::new().expect("the tests need a GPU adapter")))
        .collect()
}

/// Trains on `data` (two epochs of batch 32, unshuffled) and returns the final outputs on it
/// and the last epoch's loss.
fn train(device: Device, data: &ArrayDataset) -> (Array2<f32>, f32) {
    let mut m = model(device);
    let cfg = FitConfig {
        shuffle: false,
        ..FitConfig::new(2, 32)
    };
    let h = m.fit(data, &cfg).unwrap();
    let x = Array2::from_shape_vec((data.len(), 6), data.features.clone()).unwrap();
    (m.predict_array(&x).unwrap().outputs, h.epochs[1].loss)
}

#[test]
fn two_replicas_train_like_one_on_the_whole_batch() {
    // 320 rows: 20 steps of 32; 321: the last batch of each epoch has one row, fewer than the
    // replicas, and runs on the first replica alone (the other copies its update).
    for n in [320, 321] {
        let d = data(n);
        let ctx = contexts(1).remove(0);
        let (one, loss_one) = train(Device::Gpu(ctx), &d);
        let (two, loss_two) = train(Device::Replicas(contexts(2)), &d);
        let worst = one
            .iter()
            .zip(&two)
            .map(|(a, b)| (a - b).abs() / (1e-3 + a.abs()))
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{n} rows: outputs differ by {worst} (relative)"
        );
        assert!(
            (loss_one - loss_two).abs() <= 1e-4 * loss_one.abs().max(1e-3),
            "{n} rows: loss {loss_one} with one replica, {loss_two} with two"
        );
        // The same replicas twice: the same bits (a fixed reduction order).
        let (again, _) = train(Device::Replicas(contexts(2)), &d);
        assert!(two == again, "{n} rows: two runs of two replicas differ");
    }
}

#[test]
fn replicas_checkpoint_and_resume_like_one_model() {
    let d = data(128);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.safetensors");
    let mut m = model(Device::Replicas(contexts(2)));
    m.fit(&d, &FitConfig::new(1, 32)).unwrap();
    m.save(&path).unwrap();
    // A checkpoint of two replicas loads into one, and back.
    let mut one = model(Device::gpu().unwrap());
    one.load(&path).unwrap();
    let x = Array2::from_shape_vec((d.len(), 6), d.features.clone()).unwrap();
    assert_eq!(
        one.predict_array(&x).unwrap().outputs,
        m.predict_array(&x).unwrap().outputs
    );
    let mut again = model(Device::Replicas(contexts(3)));
    again.load(&path).unwrap();
    assert_eq!(
        again.predict_array(&x).unwrap().outputs,
        m.predict_array(&x).unwrap().outputs
    );
    assert!(Device::gpus(0).is_err());
}
