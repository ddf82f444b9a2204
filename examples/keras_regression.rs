//! Keras' first regression tutorial, line for line:
//!
//! ```python
//! model = Sequential([Dense(10, input_dim=100, activation='relu'), Dense(1)])
//! model.compile(loss='mean_squared_error', optimizer=Adam())
//! model.fit(x, y, epochs=10, batch_size=32)
//! ```
//!
//! on 1,000 samples of 100 random features whose target is a fixed linear function of them.
//! `cargo run --release --example keras_regression`

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use wgtrain::prelude::*;

fn main() -> wgtrain::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Array2::from_shape_fn((1000, 100), |_| rng.random::<f32>());
    let w = Array2::from_shape_fn((100, 1), |(i, _)| if i % 2 == 0 { 0.1 } else { -0.05 });
    let y = x.dot(&w);

    let mut model = Sequential::new(&[100])
        .dense(Dense::new(10).activation(Activation::Relu))
        .dense(Dense::new(1))
        .compile(
            Loss::MeanSquaredError,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::gpu()?,
            0,
        )?;
    model.fit(&ArrayDataset::regression(&x, &y)?, &FitConfig::new(10, 32))?;

    Ok(())
}
