//! What a Keras-style program uses, in one `use` line:
//!
//! ```no_run
//! use wgtrain::prelude::*;
//!
//! let data = mnist::load_fashion_mnist(mnist::FASHION_MNIST_SYSTEM_DIR.as_ref())?;
//! let mut model = Sequential::new(&[28, 28])
//!     .flatten()
//!     .dense(Dense::new(128).activation(Activation::Relu))
//!     .dense(Dense::new(10))
//!     .compile(
//!         Loss::SparseCategoricalCrossentropy,
//!         Optimizer::Adam(AdamConfig::adam(1e-3)),
//!         Device::gpu()?,
//!         0,
//!     )?;
//! let history = model.fit(&data.train, &FitConfig::new(3, 128))?;
//! let test = model.evaluate(&data.test, 512)?;
//! println!("test accuracy {:.3}", test.accuracy);
//! # Ok::<(), wgtrain::Error>(())
//! ```

pub use crate::data::{
    cifar10, mnist, tabular, to_categorical, ArrayDataset, Augment, Dataset, Normalize, Scaling,
    Targets,
};
pub use crate::error::{Error, Result};
pub use crate::nn::{
    add, concatenate, load_model, load_model_on, multiply, Conv2d, Dense, Device, EarlyStopping,
    FitConfig, Functional, History, Input, Layer, LayerRef, Loss, LrSchedule, Metric, Model,
    Monitor, Prediction, Residual, Sequential, Tensor,
};
pub use crate::ops::Activation;
pub use crate::optim::{AdamConfig, LionConfig, Optimizer, SgdConfig};
