//! Trains fixed models for 50 steps on a GPU (seed 0) and saves their checkpoints, to compare
//! two builds bit for bit after a refactor: `cargo run --release --example bitcheck -- OUT_DIR`
//! in each, then `cmp` the files (needs Fashion-MNIST from dataset-fashion-mnist).
use std::path::Path;
use std::sync::Arc;
use wgtrain::prelude::*;

fn main() {
    let out = std::env::args().nth(1).expect("out dir");
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR)).unwrap();
    let train = data.train.head(50 * 64);
    let ctx = Arc::new(wgtrain::gpu::GpuContext::new().unwrap());
    let momentum = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    });
    let models: Vec<(&str, Sequential, Optimizer)> = vec![
        (
            "mlp_adam",
            Sequential::new(&[28, 28])
                .flatten()
                .dense(Dense::new(128).activation(Activation::Relu))
                .dense(Dense::new(10)),
            Optimizer::Adam(AdamConfig::adam(1e-3)),
        ),
        (
            "mlp512_sgd",
            Sequential::new(&[28, 28])
                .flatten()
                .dense(Dense::new(512).activation(Activation::Relu))
                .dense(Dense::new(512).activation(Activation::Relu))
                .dense(Dense::new(10)),
            momentum,
        ),
        (
            "cnn_adam",
            Sequential::new(&[1, 28, 28])
                .conv2d(Conv2d::new(8, 3).activation(Activation::Relu))
                .max_pool2d(2)
                .flatten()
                .dense(Dense::new(10)),
            Optimizer::Adam(AdamConfig::adam(1e-3)),
        ),
    ];
    for (name, seq, opt) in models {
        let mut model = seq
            .compile(
                Loss::SparseCategoricalCrossentropy,
                opt,
                Device::Gpu(ctx.clone()),
                0,
            )
            .unwrap();
        let h = model
            .fit(
                &train,
                &FitConfig {
                    verbose: 0,
                    ..FitConfig::new(1, 64)
                },
            )
            .unwrap();
        model
            .save(&Path::new(&out).join(format!("{name}.safetensors")))
            .unwrap();
        println!("{name}: loss {}", h.epochs[0].loss);
    }
}
