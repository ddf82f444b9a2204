//! Keras' tabular binary classifier, line for line:
//!
//! ```python
//! model = Sequential([Dense(10, activation='relu', input_shape=(n_features,)),
//!                     Dense(1, activation='sigmoid')])
//! model.compile(optimizer='adam', loss='binary_crossentropy', metrics=['accuracy'])
//! model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.2)
//! model.evaluate(x_test, y_test)
//! ```
//!
//! on scikit-learn's breast cancer table (569 rows, 30 features; Debian's `python3-sklearn`),
//! standardized as the tutorial's StandardScaler step does. `cargo run --release --example
//! keras_binary`

use std::path::Path;

use wgtrain::data::tabular::sklearn;
use wgtrain::prelude::*;

fn main() -> wgtrain::Result<()> {
    let data = sklearn::breast_cancer(Path::new(sklearn::SKLEARN_DATA_DIR))?;
    let (train, test) = data.split_seeded(0.2, 42)?;
    let n_features = data.sample_len();

    let mut model = Sequential::new(&[n_features])
        .dense(Dense::new(10).activation(Activation::Relu))
        .dense(Dense::new(1).activation(Activation::Sigmoid))
        .compile(
            Loss::BinaryCrossentropy { from_logits: false },
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::gpu()?,
            0,
        )?
        .with_metrics(&[Metric::Accuracy])?;
    let cfg = FitConfig {
        validation_split: 0.2,
        scale_features: Some(Scaling::Standard),
        ..FitConfig::new(10, 32)
    };
    model.fit(&train, &cfg)?;
    let m = model.evaluate(&test, 32)?;

    println!("test: loss {:.4}, accuracy {:.4}", m.mean_loss, m.accuracy);
    Ok(())
}
