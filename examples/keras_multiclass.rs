//! Keras' multi-class MLP on one-hot targets, line for line:
//!
//! ```python
//! model = Sequential([Dense(64, activation='relu', input_dim=64),
//!                     Dense(10, activation='softmax')])
//! model.compile(loss='categorical_crossentropy', optimizer='sgd', metrics=['accuracy'])
//! model.fit(x_train, y_train, epochs=20, batch_size=32)
//! ```
//!
//! on scikit-learn's handwritten digits (1,797 8x8 images as 64 features, Debian's
//! `python3-sklearn`), with `y` one-hot as `keras.utils.to_categorical` makes it and the
//! pixels scaled to [0, 1]. The tutorial's `input_dim=100` is the digits' 64 here.
//! `cargo run --release --example keras_multiclass`

use std::path::Path;

use wgtrain::data::tabular::{read_csv_matrix, sklearn, CsvOptions};
use wgtrain::prelude::*;

fn main() -> wgtrain::Result<()> {
    let file = Path::new(sklearn::SKLEARN_DATA_DIR).join("digits.csv.gz");
    let table = read_csv_matrix(
        &file,
        &CsvOptions {
            has_header: false,
            ..CsvOptions::new()
        },
    )?;
    let x = table.slice(ndarray::s![.., ..64]).mapv(|v| v / 16.0);
    let labels: Vec<u32> = table.column(64).iter().map(|&v| v as u32).collect();
    let y = to_categorical(&labels, 10)?; // Keras: y = to_categorical(y, 10)
    let (train, test) = ArrayDataset::classification_one_hot(&x, &y)?.split_seeded(0.2, 0)?;

    let mut model = Sequential::new(&[64])
        .dense(Dense::new(64).activation(Activation::Relu))
        .dense(Dense::new(10))
        .push(Layer::Softmax)
        .compile(
            Loss::CategoricalCrossentropy {
                label_smoothing: 0.0,
            },
            Optimizer::Sgd(SgdConfig::new(0.01)),
            Device::gpu()?,
            0,
        )?
        .with_metrics(&[Metric::Accuracy])?;
    model.fit(&train, &FitConfig::new(20, 32))?;
    let m = model.evaluate(&test, 32)?;

    println!("test: loss {:.4}, accuracy {:.4}", m.mean_loss, m.accuracy);
    Ok(())
}
