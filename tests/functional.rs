//! Functional models through the model API: a Sequential is the same chain of functional
//! calls (bit for bit), a model with two inputs, a shared layer, a diamond and every merge
//! trains alike on the GPU and the CPU executor, two outputs train as one row of values,
//! checkpoints resume bit for bit and refuse another architecture, and bad graphs are errors
//! naming the layers.

use std::sync::Arc;

use ndarray::Array2;
use wgtrain::data::ArrayDataset;
use wgtrain::gpu::GpuContext;
use wgtrain::nn::{
    self, Conv2d, Dense, Device, FitConfig, Functional, Input, Layer, LayerRef, Loss, Model,
    Sequential, Tensor,
};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer, SgdConfig};

fn gpu() -> Device {
    Device::Gpu(Arc::new(
        GpuContext::new().expect("GPU tests need an adapter (install mesa-vulkan-drivers)"),
    ))
}

fn adam() -> Optimizer {
    Optimizer::Adam(AdamConfig::adam(1e-2))
}

/// `n` rows of `width` values in [-1, 1) from a fixed linear congruential sequence.
fn table(n: usize, width: usize, seed: u64) -> Array2<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Array2::from_shape_fn((n, width), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// Two inputs of 6 values (laid side by side in a row of 12), three classes: which input's
/// first value is larger, or neither by much.
fn two_input_data(n: usize) -> ArrayDataset {
    let x = table(n, 12, 3);
    let labels: Vec<u32> = x
        .rows()
        .into_iter()
        .map(|r| {
            let d = r[0] - r[6];
            if d > 0.3 {
                0
            } else if d < -0.3 {
                1
            } else {
                2
            }
        })
        .collect();
    ArrayDataset::classification(&x, &labels, 3).unwrap()
}

/// A shared dense layer called on both inputs, a diamond (one tensor read by two branches
/// merged by product, then summed with it; by sum, then multiplied with it when `swapped`),
/// a concatenation and a classifier.
fn two_input_net_wired(swapped: bool) -> Functional {
    let x1 = Input::named("left", &[6]);
    let x2 = Input::named("right", &[6]);
    let shared = LayerRef::new(Dense::new(8).activation(Activation::Tanh));
    let (a, b) = (shared.call(&x1), shared.call(&x2));
    let h = Dense::new(8).activation(Activation::Relu).on(&a);
    let left = Dense::new(8).on(&h);
    let right = Dense::new(8).activation(Activation::Sigmoid).on(&h);
    let diamond = if swapped {
        nn::multiply(&[&nn::add(&[&left, &right]), &h])
    } else {
        nn::add(&[&nn::multiply(&[&left, &right]), &h])
    };
    let out = Dense::new(3).on(&nn::concatenate(&[&diamond, &b]));
    Functional::new(&[&x1, &x2], &[&out]).unwrap()
}

fn two_input_net() -> Functional {
    two_input_net_wired(false)
}

fn weights(m: &Model) -> Vec<(String, Vec<f32>)> {
    m.weights()
        .unwrap()
        .into_iter()
        .map(|(name, _, values)| (name, values))
        .collect()
}

#[test]
fn a_sequential_is_a_chain_of_functional_calls() {
    let seq = Sequential::new(&[1, 6, 6])
        .conv2d(Conv2d::new(3, 3).same().activation(Activation::Relu))
        .batch_norm()
        .max_pool2d(2)
        .flatten()
        .dropout(0.2)
        .dense(Dense::new(4));
    let x = Input::new(&[1, 6, 6]);
    let mut h: Tensor = x.clone();
    for layer in seq.layers() {
        h = layer.on(&h);
    }
    let f = Functional::new(&[&x], &[&h]).unwrap();
    let data = {
        let x = table(40, 36, 9);
        let labels: Vec<u32> = (0..40).map(|i| (i % 4) as u32).collect();
        ArrayDataset::classification(&x, &labels, 4).unwrap()
    };
    let cfg = FitConfig::new(2, 8);
    let loss = Loss::SparseCategoricalCrossentropy;
    let mut a = seq.compile(loss, adam(), Device::Cpu, 7).unwrap();
    let mut b = f.compile(loss, adam(), Device::Cpu, 7).unwrap();
    a.fit(&data, &cfg).unwrap();
    b.fit(&data, &cfg).unwrap();
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(
        wa.iter().map(|w| &w.0).collect::<Vec<_>>(),
        wb.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        assert!(
            x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "`{name}` differs"
        );
    }
}

#[test]
fn shared_layer_diamond_and_two_inputs_train_alike_on_gpu_and_cpu() {
    let data = two_input_data(96);
    let cfg = FitConfig {
        shuffle: false,
        ..FitConfig::new(3, 16)
    };
    let loss = Loss::SparseCategoricalCrossentropy;
    let mut on_gpu = two_input_net().compile(loss, adam(), gpu(), 3).unwrap();
    let mut on_cpu = two_input_net()
        .compile(loss, adam(), Device::Cpu, 3)
        .unwrap();
    assert_eq!(on_gpu.input_widths(), [6, 6]);
    let hg = on_gpu.fit(&data, &cfg).unwrap();
    let hc = on_cpu.fit(&data, &cfg).unwrap();
    // 18 steps: Adam's first steps move every weight by about the learning rate, so the
    // executors' rounding differences stay far below it.
    for ((name, g), (_, c)) in weights(&on_gpu).iter().zip(&weights(&on_cpu)) {
        for (j, (u, v)) in g.iter().zip(c).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 + 1e-3 * v.abs(),
                "`{name}`[{j}]: {u} vs {v}"
            );
        }
    }
    let (lg, lc) = (hg.epochs[2].loss, hc.epochs[2].loss);
    assert!((lg - lc).abs() < 1e-3 * lc, "{lg} vs {lc}");
    assert!(lc < hc.epochs[0].loss, "training lowers the loss");
    // The shared layer has one set of weights.
    let names: Vec<String> = weights(&on_cpu).into_iter().map(|w| w.0).collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("dense_0.")).count(),
        2,
        "{names:?}"
    );
    assert_eq!(names.iter().filter(|n| n.ends_with(".weight")).count(), 5);
}

/// Two regression heads on one trunk: predictions are rows of both heads' values in turn,
/// and the loss is the mean squared error over the whole row.
#[test]
fn two_outputs_train_as_one_row_of_values() {
    let x = table(256, 4, 5);
    let y = Array2::from_shape_fn((256, 3), |(i, j)| {
        let r = x.row(i);
        match j {
            0 => r.sum(),
            1 => r[0] * r[1],
            _ => r[2] - r[3],
        }
    });
    let data = ArrayDataset::regression(&x, &y).unwrap();
    let input = Input::new(&[4]);
    let trunk = Dense::new(32).activation(Activation::Tanh).on(&input);
    let sum = Dense::new(1).on(&trunk);
    let pair = Dense::new(2).on(&trunk);
    for device in [gpu(), Device::Cpu] {
        let net = Functional::new(&[&input], &[&sum, &pair]).unwrap();
        let mut m = net
            .compile(Loss::MeanSquaredError, adam(), device, 1)
            .unwrap();
        assert_eq!(m.output_widths(), [1, 2]);
        let h = m.fit(&data, &FitConfig::new(30, 32)).unwrap();
        assert!(
            h.epochs[29].loss < 0.1 * h.epochs[0].loss,
            "{} -> {}",
            h.epochs[0].loss,
            h.epochs[29].loss
        );
        let pred = m.predict_array(&x).unwrap();
        assert!(pred.classes.is_empty(), "no single class for two heads");
        // The dataset path and the array path are one path.
        assert_eq!(m.predict(&data).unwrap().outputs, pred.outputs);
        let p = pred.outputs;
        assert_eq!(p.dim(), (256, 3));
        let mse = (&p - &y).mapv(|d| (d * d) as f64).mean().unwrap();
        let eval = m.evaluate(&data, 64).unwrap();
        assert!(
            (eval.mean_loss as f64 - mse).abs() < 1e-3 * mse + 1e-6,
            "evaluate {} vs the mean over the rows of predict_array {mse}",
            eval.mean_loss
        );
    }
}

#[test]
fn summary_names_the_connections() {
    let s = two_input_net().summary();
    assert!(s.contains("Connected to"), "{s}");
    assert!(s.contains("left (InputLayer)"), "{s}");
    // The shared layer: one row, called on both inputs, 6 * 8 + 8 parameters.
    let row = s.lines().find(|l| l.starts_with("dense_0 ")).unwrap();
    assert!(row.contains("(Dense, tanh)") && row.contains("56"), "{row}");
    assert!(row.ends_with("left, right"), "{row}");
    let add = s.lines().find(|l| l.starts_with("add_0 ")).unwrap();
    assert!(add.ends_with("multiply_0, dense_1"), "{add}");
    let concat = s.lines().find(|l| l.starts_with("concatenate_0 ")).unwrap();
    assert!(
        concat.contains("(None, 16)") && concat.ends_with("add_0, dense_0[1]"),
        "{concat}"
    );
    // 56 + (8*8+8) * 3 + 16*3 + 3
    assert!(s.contains("Total params: 323"), "{s}");
}

#[test]
fn checkpoints_resume_bit_for_bit_and_refuse_another_graph() {
    let dir = std::env::temp_dir().join(format!("wgtrain-functional-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("two_inputs.safetensors");
    let data = two_input_data(64);
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.05)
    });
    let loss = Loss::SparseCategoricalCrossentropy;
    let cfg = |epochs, initial_epoch| FitConfig {
        initial_epoch,
        ..FitConfig::new(epochs, 16)
    };
    let mut straight = two_input_net().compile(loss, sgd, gpu(), 2).unwrap();
    straight.fit(&data, &cfg(4, 0)).unwrap();
    let mut first = two_input_net().compile(loss, sgd, gpu(), 2).unwrap();
    first.fit(&data, &cfg(2, 0)).unwrap();
    first.save(&path).unwrap();
    let mut resumed = two_input_net().compile(loss, sgd, gpu(), 99).unwrap();
    resumed.load(&path).unwrap();
    resumed.fit(&data, &cfg(4, resumed.epoch())).unwrap();
    for ((name, a), (_, b)) in weights(&straight).iter().zip(&weights(&resumed)) {
        assert!(
            a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits()),
            "`{name}` differs after resuming"
        );
    }
    // The same weights wired differently: the product and the sum swapped.
    let other = two_input_net_wired(true);
    let mut other = other.compile(loss, sgd, Device::Cpu, 2).unwrap();
    let before = weights(&other);
    let err = other.load(&path).unwrap_err().to_string();
    assert!(err.contains("another architecture"), "{err}");
    assert_eq!(weights(&other), before, "a refused load changes nothing");
    std::fs::remove_dir_all(&dir).ok();
}

fn err_of(r: wgtrain::Result<Functional>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn bad_graphs_are_errors_naming_the_layers() {
    let x = Input::new(&[6]);
    let a = Dense::new(3).on(&x);
    let b = Dense::new(4).on(&x);
    let err = err_of(Functional::new(&[&x], &[&nn::add(&[&a, &b])]));
    assert!(
        err.contains("add_0 (Add)")
            && err.contains("dense_0 (batch, 3)")
            && err.contains("dense_1 (batch, 4)"),
        "{err}"
    );
    let err = err_of(Functional::new(&[&x], &[&nn::multiply(&[&a, &b])]));
    assert!(
        err.contains("cannot multiply") && err.contains("must agree or one must be 1"),
        "{err}"
    );
    // An image and per-channel gates of the wrong count.
    let img = Input::new(&[2, 4, 4]);
    let gates = Dense::new(3).on(&Layer::GlobalAvgPool.on(&img));
    let err = err_of(Functional::new(&[&img], &[&nn::multiply(&[&img, &gates])]));
    assert!(
        err.contains("cannot multiply input (batch, 2, 4, 4) and dense_0 (batch, 3)"),
        "{err}"
    );

    let img = Input::new(&[2, 4, 4]);
    let c = Conv2d::new(3, 3).on(&img);
    let err = err_of(Functional::new(&[&img], &[&nn::concatenate(&[&img, &c])]));
    assert!(
        err.contains("cannot concatenate input (batch, 2, 4, 4) and conv_0 (batch, 3, 2, 2)"),
        "{err}"
    );
    let err = err_of(Functional::new(&[&x], &[&nn::add(&[&a])]));
    assert!(err.contains("merges at least 2 tensors"), "{err}");

    let other = Input::named("other", &[6]);
    let err = err_of(Functional::new(
        &[&x],
        &[&nn::add(&[&a, &Dense::new(3).on(&other)])],
    ));
    assert!(
        err.contains("`other`") && err.contains("not among the model's inputs"),
        "{err}"
    );
    let err = err_of(Functional::new(&[&x, &other], &[&a]));
    assert!(err.contains("input 1 (`other`) reaches no output"), "{err}");
    let err = err_of(Functional::new(&[&a], &[&b]));
    assert!(err.contains("not an Input"), "{err}");
    let err = err_of(Functional::new(&[&x], &[&a, &a]));
    assert!(err.contains("output 1 is listed twice"), "{err}");

    let shared = LayerRef::new(Dense::new(2));
    let err = err_of(Functional::new(
        &[&x],
        &[&shared.call(&a), &shared.call(&b)],
    ));
    assert!(
        err.contains("dense_1 (Dense) is shared") && err.contains("(batch, 4)"),
        "{err}"
    );

    let dup = Dense::new(2);
    let (p, q) = (
        LayerRef::named("head", dup).call(&a),
        LayerRef::named("head", dup).call(&b),
    );
    let err = err_of(Functional::new(&[&x], &[&p, &q]));
    assert!(err.contains("two layers are named `head`"), "{err}");

    let two = Functional::new(&[&x], &[&a, &b]).unwrap();
    let err = two
        .compile(Loss::SparseCategoricalCrossentropy, adam(), Device::Cpu, 0)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("this model has 2 outputs"), "{err}");

    let err = Sequential::new(&[6])
        .dense(Dense::new(3))
        .push(Layer::Add)
        .compile(Loss::MeanSquaredError, adam(), Device::Cpu, 0)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1 (Add) merges several tensors"),
        "{err}"
    );
}

/// A residual block written with the functional API has the built-in block's parameters:
/// the same shapes, in the same order.
#[test]
fn a_functional_residual_block_has_the_built_in_ones_parameters() {
    use wgtrain::nn::Residual;
    let input = Input::new(&[2, 6, 6]);
    let stem = Conv2d::new(4, 3).same().on(&input);
    let builtin = Residual::new(4).without_batch_norm().on(&stem);
    let by_hand = {
        let a = Conv2d::new(4, 3)
            .same()
            .activation(Activation::Relu)
            .on(&stem);
        let a = Conv2d::new(4, 3).same().on(&a);
        Layer::Activation(Activation::Relu).on(&nn::add(&[&a, &stem]))
    };
    let head = |t: &Tensor| Dense::new(3).on(&Layer::GlobalAvgPool.on(t));
    let shapes = |out: &Tensor| -> Vec<Vec<usize>> {
        let f = Functional::new(&[&input], &[&head(out)]).unwrap();
        let m = f
            .compile(Loss::SparseCategoricalCrossentropy, adam(), Device::Cpu, 4)
            .unwrap();
        m.weights()
            .unwrap()
            .into_iter()
            .map(|(_, shape, _)| shape)
            .collect()
    };
    let (a, b) = (shapes(&builtin), shapes(&by_hand));
    assert_eq!(a.len(), 8);
    let sorted = |mut v: Vec<Vec<usize>>| {
        v.sort();
        v
    };
    assert_eq!(sorted(a), sorted(b));
}

/// Where each input's values sit in a sample row, and each output's in a prediction row:
/// an output that passes the second input through unchanged returns exactly its columns.
#[test]
fn rows_hold_inputs_and_outputs_in_turn() {
    let x1 = Input::new(&[2]);
    let x2 = Input::new(&[3]);
    let passed = Layer::Activation(Activation::Identity).on(&x2);
    let head = Dense::new(1).on(&x1);
    let x = table(7, 5, 11);
    for device in [gpu(), Device::Cpu] {
        let f = Functional::new(&[&x1, &x2], &[&passed, &head]).unwrap();
        let mut m = f
            .compile(Loss::MeanSquaredError, adam(), device, 0)
            .unwrap();
        assert_eq!(
            (m.input_widths(), m.output_widths()),
            (&[2, 3][..], &[3, 1][..])
        );
        let p = m.predict_array(&x).unwrap().outputs;
        assert_eq!(p.dim(), (7, 4));
        for i in 0..7 {
            for j in 0..3 {
                assert_eq!(p[[i, j]], x[[i, 2 + j]], "row {i}, column {j}");
            }
        }
    }
}

/// Squeeze-and-excitation (Hu et al. 2018) with the functional API: per-channel gates from
/// pooled features multiply the feature maps, broadcast over height and width, and the
/// model trains alike on both executors.
#[test]
fn squeeze_and_excitation_broadcasts_gates_over_the_image() {
    let net = || {
        let image = Input::new(&[2, 6, 6]);
        let h = Conv2d::new(4, 3)
            .same()
            .activation(Activation::Relu)
            .on(&image);
        let squeeze = Layer::GlobalAvgPool.on(&h);
        let excite = Dense::new(2).activation(Activation::Relu).on(&squeeze);
        let gates = Dense::new(4).activation(Activation::Sigmoid).on(&excite);
        let scaled = nn::multiply(&[&h, &gates]);
        let out = Dense::new(3).on(&Layer::GlobalAvgPool.on(&scaled));
        Functional::new(&[&image], &[&out]).unwrap()
    };
    let summary = net().summary();
    let row = summary
        .lines()
        .find(|l| l.starts_with("multiply_0"))
        .unwrap();
    assert!(row.contains("(None, 4, 6, 6)"), "{row}");
    let x = table(48, 72, 21);
    let labels: Vec<u32> = (0..48).map(|i| (i % 3) as u32).collect();
    let data = ArrayDataset::classification(&x, &labels, 3).unwrap();
    let cfg = FitConfig {
        shuffle: false,
        ..FitConfig::new(2, 8)
    };
    let loss = Loss::SparseCategoricalCrossentropy;
    let mut on_gpu = net().compile(loss, adam(), gpu(), 5).unwrap();
    let mut on_cpu = net().compile(loss, adam(), Device::Cpu, 5).unwrap();
    on_gpu.fit(&data, &cfg).unwrap();
    on_cpu.fit(&data, &cfg).unwrap();
    for ((name, g), (_, c)) in weights(&on_gpu).iter().zip(&weights(&on_cpu)) {
        for (j, (u, v)) in g.iter().zip(c).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 + 1e-3 * v.abs(),
                "`{name}`[{j}]: {u} vs {v}"
            );
        }
    }
}
