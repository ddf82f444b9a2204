//! Data parallelism in one process: two replicas (two devices on the test adapter) sharing
//! each batch train the same model as one replica on the whole batch, within the gradient
//! tolerances (the sum of two half-batch means is rounded differently from one mean), and
//! bit-identically from run to run.

use std::sync::Arc;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use wgtrain::data::ArrayDataset;
use wgtrain::gpu::GpuContext;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Model, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{Optimizer, SgdConfig};

fn data(n: usize) -> ArrayDataset {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(4);
    let x = Array2::from_shape_fn((n, 6), |_| rng.random_range(-1.0f32..1.0));
    let y = Array2::from_shape_fn((n, 2), |(i, j)| (x[[i, j]] * 2.0 - x[[i, 5]]).tanh());
    ArrayDataset::regression(&x, &y).unwrap()
}

fn model(device: Device) -> Model {
    Sequential::new(&[6])
        .dense(Dense::new(16).activation(Activation::Tanh))
        .dense(Dense::new(2))
        .compile(
            Loss::MeanSquaredError,
            // SGD: its step is proportional to the gradient, so a wrongly scaled sum shows
            // (Adam would normalize it away).
            Optimizer::Sgd(SgdConfig {
                momentum: 0.9,
                ..SgdConfig::new(0.1)
            }),
            device,
            5,
        )
        .unwrap()
}

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
    (m.predict_array(&x).unwrap(), h.epochs[1].loss)
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
    assert_eq!(one.predict_array(&x).unwrap(), m.predict_array(&x).unwrap());
    let mut again = model(Device::Replicas(contexts(3)));
    again.load(&path).unwrap();
    assert_eq!(
        again.predict_array(&x).unwrap(),
        m.predict_array(&x).unwrap()
    );
    assert!(Device::gpus(0).is_err());
}
