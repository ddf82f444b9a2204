//! Keras-style training: Fashion-MNIST accuracy on both devices, summaries, errors,
//! prediction, and the main example end to end on a subset.

mod common;

use std::path::Path;

use wgtrain::data::mnist;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer};

fn mlp() -> Sequential {
    Sequential::new(&[28, 28])
        .flatten()
        .dense(Dense::new(128).activation(Activation::Relu))
        .dense(Dense::new(10))
}

#[test]
fn fashion_mnist_mlp_reaches_85_percent_on_gpu_and_cpu() {
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST must be installed (.ci/run installs dataset-fashion-mnist)");
    let adam = Optimizer::Adam(AdamConfig::adam(1e-3));
    let ctx =
        std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter"));
    let mut accuracy = Vec::new();
    for device in [Device::Gpu(ctx), Device::Cpu] {
        let mut model = mlp()
            .compile(Loss::SparseCategoricalCrossentropy, adam, device, 0)
            .unwrap();
        let history = model.fit(&data.train, &FitConfig::new(3, 128)).unwrap();
        assert_eq!(history.epochs.len(), 3);
        assert!(
            history.epochs[2].loss < history.epochs[0].loss,
            "{history:?}"
        );
        let test = model.evaluate(&data.test, 512).unwrap();
        assert_eq!(test.samples, 10_000);
        accuracy.push(test.accuracy);
    }
    assert!(accuracy[0] >= 0.85, "GPU test accuracy {}", accuracy[0]);
    assert!(
        (accuracy[0] - accuracy[1]).abs() <= 0.005,
        "GPU {} vs CPU {}",
        accuracy[0],
        accuracy[1]
    );
}

#[test]
fn summary_errors_and_prediction() {
    let s = mlp().summary();
    assert!(
        s.contains("dense_0 (Dense, relu)")
            && s.contains("(None, 128)")
            && s.contains("100480")
            && s.contains("Total params: 101770"),
        "{s}"
    );
    // A Dense layer on unflattened images names the layer and the fix.
    let err = Sequential::new(&[28, 28])
        .dense(Dense::new(10))
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (Dense)") && err.contains("Flatten"),
        "{err}"
    );

    let mut model = mlp()
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::Cpu,
            1,
        )
        .unwrap();
    let x =
        ndarray::Array2::from_shape_vec((5, 784), common::uniform(3, 5 * 784, 0.0, 1.0)).unwrap();
    let p = model.predict_array(&x).unwrap();
    assert_eq!((p.outputs.dim(), p.classes.len()), ((5, 10), 5));
    for row in p.outputs.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
    assert!(model
        .predict_array(&x.slice(ndarray::s![.., ..783]))
        .is_err());
    let small = wgtrain::data::Dataset {
        images: vec![0; 2 * 9],
        labels: vec![0, 1],
        channels: 1,
        height: 3,
        width: 3,
        num_classes: 10,
        class_names: vec![],
    };
    let err = model
        .fit(&small, &FitConfig::new(1, 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("784 inputs") && err.contains("has 9"), "{err}");
}

/// The README's first command picks its device: with no adapter (here: a backend this
/// platform lacks) it trains on the CPU executor after a notice naming the driver package;
/// on a software rasterizer a dense model trains on the CPU executor and a CNN on the
/// rasterizer; `--device gpu` and `WGTRAIN_ADAPTER` force the adapter.
#[test]
fn mnist_mlp_example_chooses_its_device() {
    let example = common::example("mnist_mlp");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(&example)
            .args(["--data", mnist::FASHION_MNIST_SYSTEM_DIR, "--epochs", "1"])
            .args([
                "--limit",
                "600",
                "--quiet",
                "--out",
                dir.path().to_str().unwrap(),
            ])
            .args(args)
            // The forced-plan CI run sets WGTRAIN_PLAN, which would force the adapter here.
            .env_remove("WGTRAIN_PLAN")
            .env_remove("WGTRAIN_ADAPTER")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{args:?} {env:?}: {stdout}\n{stderr}");
        (stdout, stderr)
    };
    // No adapter at all: a notice, then the CPU executor.
    let (stdout, stderr) = run(&[], &[("WGPU_BACKEND", "metal")]);
    assert!(stdout.contains("device: CPU reference"), "{stdout}");
    assert!(
        stderr.contains("apt-get install mesa-vulkan-drivers"),
        "{stderr}"
    );
    let software = common::gpu().kind() == wgtrain::gpu::AdapterKind::Cpu;
    let (stdout, stderr) = run(&[], &[]);
    if software {
        assert!(stdout.contains("device: CPU reference"), "{stdout}");
        assert!(stderr.contains("software rasterizer"), "{stderr}");
    } else {
        assert!(!stdout.contains("device: CPU reference"), "{stdout}");
    }
    for (args, env) in [
        (&["--model", "cnn"][..], &[][..]),
        (&["--device", "gpu"][..], &[][..]),
        (
            &[][..],
            &[("WGTRAIN_ADAPTER", common::gpu().adapter_name())][..],
        ),
    ] {
        let (stdout, _) = run(args, env);
        assert!(
            stdout.contains(&format!("device: {}", common::gpu().adapter_name())),
            "{args:?} {env:?}: {stdout}"
        );
    }
}

#[test]
fn mnist_mlp_example_runs_end_to_end() {
    let example = common::example("mnist_mlp");
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("mlp.safetensors");
    let out = std::process::Command::new(&example)
        .args([
            "--data",
            mnist::FASHION_MNIST_SYSTEM_DIR,
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--validation-split",
            "0.1",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", example.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Total params: 101770")
            && stdout.contains("epoch 1/1")
            && stdout.contains("test: loss"),
        "{stdout}"
    );
    for png in ["curves.png", "predictions.png"] {
        let img = image::open(dir.path().join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() > 100 && img.height() > 100, "{png}");
    }
    assert!(ckpt.exists());
    // Run again with more epochs: it resumes from the checkpoint after epoch 1.
    let again = std::process::Command::new(&example)
        .args([
            "--data",
            mnist::FASHION_MNIST_SYSTEM_DIR,
            "--epochs",
            "2",
            "--limit",
            "3000",
        ])
        .args([
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
        ])
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains("resuming from")
            && stdout.contains("after epoch 1")
            && stdout.contains("epoch 2/2")
            && !stdout.contains("epoch 1/2"),
        "{stdout}"
    );
}

#[test]
fn checkpoints_resume_bit_exactly_and_reject_bad_files() {
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST installed");
    let train = data.train.head(2_000);
    let ctx =
        std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter"));
    let adam = Optimizer::Adam(AdamConfig::adam(1e-3));
    // Dropout, a cosine schedule and clipping all take part in resuming bit-exactly.
    let compile = || {
        Sequential::new(&[28, 28])
            .flatten()
            .dense(Dense::new(128).activation(Activation::Relu))
            .dropout(0.2)
            .dense(Dense::new(10))
            .compile(
                Loss::SparseCategoricalCrossentropy,
                adam,
                Device::Gpu(ctx.clone()),
                7,
            )
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();

    let cfg = |epochs: usize| FitConfig {
        seed: 3,
        lr_schedule: wgtrain::nn::LrSchedule::Cosine {
            decay_steps: 30,
            alpha: 0.1,
        },
        clip_global_norm: Some(1.0),
        ..FitConfig::new(epochs, 128)
    };
    // Two epochs straight...
    let mut straight = compile();
    straight.fit(&train, &cfg(2)).unwrap();
    straight
        .save(&dir.path().join("straight.safetensors"))
        .unwrap();
    // ...equal one epoch, a save, a load into a fresh model, and the second epoch.
    // (the checkpoint-every-epoch option writes it, into a directory it creates)
    let mut first = compile();
    let ckpt = dir.path().join("run").join("epoch1.safetensors");
    first
        .fit(
            &train,
            &FitConfig {
                checkpoint: Some(ckpt.clone()),
                ..cfg(1)
            },
        )
        .unwrap();
    assert_eq!(
        common::part_files(&dir.path().join("run")),
        Vec::<String>::new(),
        "no temporary file is left"
    );
    let mut resumed = compile();
    resumed.load(&ckpt).unwrap();
    assert_eq!(resumed.epoch(), 1);
    resumed
        .fit(
            &train,
            &FitConfig {
                initial_epoch: resumed.epoch(),
                ..cfg(2)
            },
        )
        .unwrap();
    assert_eq!(resumed.epoch(), 2);
    resumed
        .save(&dir.path().join("resumed.safetensors"))
        .unwrap();
    let a = std::fs::read(dir.path().join("straight.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("resumed.safetensors")).unwrap();
    // Compare tensors, not files: the metadata map's order is not fixed.
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    assert_eq!(sa.names().len(), sb.names().len());
    for name in sa.names() {
        assert!(
            sa.tensor(name).unwrap().data() == sb.tensor(name).unwrap().data(),
            "`{name}`: resumed training must be bit-identical to uninterrupted training"
        );
    }

    // Names are by layer, as Python's safetensors will see them.
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&a)
        .unwrap()
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(
        names.contains(&"dense_0.weight".to_string())
            && names.contains(&"dense_1.bias.m".to_string()),
        "{names:?}"
    );

    // Bad files are rejected and the model is left as it was.
    let bad = dir.path().join("bad.safetensors");
    let check = |bytes: &[u8], needle: &str, model: &mut wgtrain::nn::Model| {
        std::fs::write(&bad, bytes).unwrap();
        let before = dir.path().join("before.safetensors");
        model.save(&before).unwrap();
        let err = model.load(&bad).unwrap_err().to_string();
        assert!(err.contains(needle), "`{err}` lacks `{needle}`");
        let after = dir.path().join("after.safetensors");
        model.save(&after).unwrap();
        assert_eq!(
            std::fs::read(&before).unwrap(),
            std::fs::read(&after).unwrap(),
            "a failed load changed the model"
        );
    };
    check(&a[..a.len() / 2], "not a valid safetensors", &mut resumed);
    let mut tampered = a.clone();
    let n = tampered.len();
    tampered[n - 10] ^= 0x40;
    check(&tampered, "SHA-256", &mut resumed);
    let foreign = safetensors::serialize(
        [(
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    check(&foreign, "not a wgtrain checkpoint", &mut resumed);
    let mut other = Sequential::new(&[28, 28])
        .flatten()
        .dense(Dense::new(64).activation(Activation::Relu))
        .dense(Dense::new(10))
        .compile(Loss::SparseCategoricalCrossentropy, adam, Device::Cpu, 7)
        .unwrap();
    let err = other.load(&ckpt).unwrap_err().to_string();
    assert!(
        err.contains("does not match the model")
            && err.contains("dense_0.weight")
            && err.contains("[784, 128]"),
        "{err}"
    );
}

#[test]
fn early_stopping_restores_the_best_epoch_and_non_finite_loss_stops() {
    use wgtrain::nn::{EarlyStopping, Monitor};
    use wgtrain::optim::SgdConfig;
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST installed");
    // 600 training samples overfit quickly, so the validation loss turns upward.
    let small = data.train.head(1_200);
    let adam = Optimizer::Adam(AdamConfig::adam(1e-2));
    let mut model = mlp()
        .compile(Loss::SparseCategoricalCrossentropy, adam, Device::Cpu, 1)
        .unwrap();
    let cfg = FitConfig {
        validation_split: 0.5,
        early_stopping: Some(EarlyStopping::new(Monitor::ValLoss, 2).restore_best_weights()),
        ..FitConfig::new(40, 64)
    };
    let history = model.fit(&small, &cfg).unwrap();
    let stopped = history
        .stopped_early
        .expect("validation loss should stop improving within 40 epochs");
    let best = history.best_epoch.unwrap();
    assert_eq!(stopped, best + 2, "{history:?}");
    let best_val = history.epochs[best - 1].val_loss.unwrap();
    assert!(history
        .epochs
        .iter()
        .all(|e| e.val_loss.unwrap() >= best_val));
    // The restored model is the best epoch's: its validation loss is the best one recorded.
    let validation = wgtrain::data::Dataset {
        images: small.images[600 * 784..].to_vec(),
        labels: small.labels[600..].to_vec(),
        ..small.clone()
    };
    let now = model.evaluate(&validation, 256).unwrap();
    assert!(
        (now.mean_loss - best_val).abs() <= 1e-5 * best_val,
        "restored {} vs best {best_val}",
        now.mean_loss
    );
    // Keras' default keeps the last epoch's weights: the same run without restoring ends on
    // the last epoch's validation loss, worse than the best.
    let mut last_kept = mlp()
        .compile(Loss::SparseCategoricalCrossentropy, adam, Device::Cpu, 1)
        .unwrap();
    let keras = FitConfig {
        early_stopping: Some(EarlyStopping::new(Monitor::ValLoss, 2)),
        ..cfg.clone()
    };
    let again = last_kept.fit(&small, &keras).unwrap();
    assert_eq!(again.stopped_early, Some(stopped));
    let last_val = again.epochs.last().unwrap().val_loss.unwrap();
    let now = last_kept.evaluate(&validation, 256).unwrap();
    assert!(last_val > best_val, "{last_val} vs {best_val}");
    assert!(
        (now.mean_loss - last_val).abs() <= 1e-5 * last_val,
        "kept {} vs last {last_val}",
        now.mean_loss
    );
    // Keras' verbose: 0, 1 or 2, and 2 unless asked.
    assert_eq!(FitConfig::new(1, 1).verbose, 2);
    let err = last_kept
        .fit(
            &small,
            &FitConfig {
                verbose: 3,
                ..FitConfig::new(1, 64)
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("verbose is 3"), "{err}");

    // An absurd learning rate makes the loss non-finite: training stops with an error that
    // names the step, and the checkpoint of the last good epoch is left as it was.
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("good.safetensors");
    for device in [
        Device::Cpu,
        Device::gpu().expect("GPU tests need an adapter"),
    ] {
        let good = Optimizer::Sgd(SgdConfig::new(0.01));
        let mut model = mlp()
            .compile(Loss::SparseCategoricalCrossentropy, good, device.clone(), 1)
            .unwrap();
        let cfg = FitConfig {
            checkpoint: Some(ckpt.clone()),
            ..FitConfig::new(1, 64)
        };
        model.fit(&small, &cfg).unwrap();
        let saved = std::fs::read(&ckpt).unwrap();
        let huge = Optimizer::Sgd(SgdConfig::new(1e30));
        let mut model = mlp()
            .compile(Loss::SparseCategoricalCrossentropy, huge, device, 1)
            .unwrap();
        model.load(&ckpt).unwrap();
        let err = model
            .fit(
                &small,
                &FitConfig {
                    initial_epoch: model.epoch(),
                    ..FitConfig { epochs: 3, ..cfg }
                },
            )
            .unwrap_err()
            .to_string();
        // Epoch 1 is steps 1-19 (1,200 samples in batches of 64), so step 20 is the first
        // of epoch 2; after its update at lr 1e30 the next loss is no longer finite.
        assert!(
            err.contains("non-finite") && err.contains("at step 21 (epoch 2, batch 2)"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&ckpt).unwrap(),
            saved,
            "the good checkpoint changed"
        );
    }
}

/// The other losses (one-hot or 0/1 targets made from labels), explicit validation data,
/// and learning-rate schedules, on both devices.
#[test]
fn dense_losses_validation_data_and_schedules() {
    use wgtrain::nn::LrSchedule;
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST installed");
    let train = std::sync::Arc::new(data.train.head(3_000));
    let test = std::sync::Arc::new(data.test.head(1_000));
    let ctx =
        std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter"));
    for loss in [
        Loss::CategoricalCrossentropy {
            label_smoothing: 0.0,
        },
        Loss::MeanSquaredError,
        Loss::BinaryCrossentropy { from_logits: true },
    ] {
        let mut results = Vec::new();
        for device in [Device::Gpu(ctx.clone()), Device::Cpu] {
            let adam = Optimizer::Adam(AdamConfig::adam(2e-3));
            let mut model = mlp().compile(loss, adam, device, 0).unwrap();
            let cfg = FitConfig {
                validation_data: Some(test.clone()),
                lr_schedule: LrSchedule::Step {
                    every: 40,
                    gamma: 0.5,
                },
                ..FitConfig::new(2, 64)
            };
            let h = model.fit(&train, &cfg).unwrap();
            let last = &h.epochs[1];
            let val = last.val_accuracy().expect("validation data was given");
            let eval = model.evaluate(&test, 256).unwrap();
            assert_eq!(Some(eval.accuracy), last.val_accuracy(), "{loss:?}");
            // BCE over ten one-hot outputs reports binary accuracy (per output), the others
            // the argmax accuracy.
            assert!(val > 0.7, "{loss:?}: validation accuracy {val}");
            results.push((last.loss, val));
        }
        let ((gl, ga), (cl, ca)) = (results[0], results[1]);
        assert!(
            (gl - cl).abs() < 0.02 * cl,
            "{loss:?}: loss GPU {gl} vs CPU {cl}"
        );
        assert!(
            (ga - ca).abs() < 0.02,
            "{loss:?}: accuracy GPU {ga} vs CPU {ca}"
        );
    }
    // Both a split and explicit validation data is an error.
    let mut model = mlp()
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::Cpu,
            0,
        )
        .unwrap();
    let err = model
        .fit(
            &train,
            &FitConfig {
                validation_split: 0.1,
                validation_data: Some(test.clone()),
                ..FitConfig::new(1, 64)
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn xor_example_learns_xor() {
    let out = std::process::Command::new(common::example("xor"))
        .output()
        .expect("the xor example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-> [0, 1, 1, 0]"), "{stdout}");
}

/// A small CNN on Fashion-MNIST (a third of the training set, three epochs) on the GPU.
#[test]
fn small_cnn_reaches_85_percent_on_fashion_mnist() {
    use wgtrain::nn::Conv2d;
    let data = mnist::load_fashion_mnist(Path::new(mnist::FASHION_MNIST_SYSTEM_DIR))
        .expect("Fashion-MNIST installed");
    let cnn = Sequential::new(&[1, 28, 28])
        .conv2d(Conv2d::new(16, 3).activation(Activation::Relu))
        .max_pool2d(2)
        .conv2d(Conv2d::new(32, 3).activation(Activation::Relu))
        .max_pool2d(2)
        .flatten()
        .dense(Dense::new(10));
    let s = cnn.summary();
    assert!(
        s.contains("conv_0 (Conv2D, relu)        (None, 16, 26, 26)          160")
            && s.contains("(None, 32, 5, 5)")
            && s.contains("Total params: 12810"),
        "{s}"
    );
    let adam = Optimizer::Adam(AdamConfig::adam(3e-3));
    let mut model = cnn
        .compile(
            Loss::SparseCategoricalCrossentropy,
            adam,
            Device::gpu().expect("GPU tests need an adapter"),
            0,
        )
        .unwrap();
    let train = data.train.head(20_000);
    let history = model.fit(&train, &FitConfig::new(3, 64)).unwrap();
    let test = model.evaluate(&data.test, 256).unwrap();
    assert!(
        test.accuracy >= 0.85,
        "CNN test accuracy {} ({history:?})",
        test.accuracy
    );

    // Shape errors name the layer.
    let err = Sequential::new(&[1, 28, 28])
        .conv2d(Conv2d::new(8, 3))
        .dense(Dense::new(10))
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1 (Dense)") && err.contains("add Flatten"),
        "{err}"
    );
    let err = Sequential::new(&[784])
        .conv2d(Conv2d::new(8, 3))
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (Conv2d)") && err.contains("[channels, height, width]"),
        "{err}"
    );
    let err = Sequential::new(&[1, 4, 4])
        .conv2d(Conv2d::new(8, 3))
        .max_pool2d(3)
        .build(true, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1") && err.contains("does not fit 2x2"),
        "{err}"
    );
}

/// The CIFAR-10 example end to end on synthetic files in the real binary format (the real
/// set is not installable offline), and its message when the data is missing.
#[test]
fn cifar10_cnn_example_runs_on_synthetic_files() {
    use wgtrain::data::cifar10;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<&str> = cifar10::TRAIN_FILES
        .iter()
        .copied()
        .chain([cifar10::TEST_FILE])
        .collect();
    let mut state = 12345u32;
    for (k, name) in files.iter().enumerate() {
        let mut bytes = Vec::new();
        for r in 0..40u32 {
            // A label byte, then 3 planes of 32x32 pixels: a class-dependent brightness with
            // a little noise, so the records are valid and not all alike.
            let label = ((r as usize + k) % 10) as u8;
            bytes.push(label);
            for _ in 0..cifar10::RECORD - 1 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push(label * 20 + (state >> 28) as u8);
            }
        }
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let out = dir.path().join("out");
    let run = std::process::Command::new(common::example("cifar10_cnn"))
        .arg("--data")
        .arg(dir.path())
        .args([
            "--epochs",
            "1",
            "--limit",
            "96",
            "--batch-size",
            "32",
            "--quiet",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("Total params: 1250858")
            && stdout.contains("epoch 1/1")
            && stdout.contains("test: loss"),
        "{stdout}"
    );
    assert!(out.join("curves.png").exists() && out.join("predictions.png").exists());

    // Missing data: a clear error saying how to get it.
    let empty = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(common::example("cifar10_cnn"))
        .arg("--data")
        .arg(empty.path())
        .arg("--quiet")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("data_batch_1.bin"), "{stderr}");
}

/// A checkpoint holds the slots the optimizer keeps, by name: Adam's `m` and `v`, SGD's
/// `momentum`, nothing for plain SGD. Checkpoints of earlier versions (`.m` and `.v` for every
/// optimizer) still load, unless they hold state the optimizer would drop.
#[test]
fn checkpoints_hold_the_optimizers_slots_and_earlier_files_load() {
    let data = tiny_images();
    let momentum = Optimizer::Sgd(wgtrain::optim::SgdConfig {
        momentum: 0.9,
        ..wgtrain::optim::SgdConfig::new(0.1)
    });
    let compile = |opt| {
        Sequential::new(&[4, 4])
            .flatten()
            .dense(Dense::new(3))
            .compile(Loss::SparseCategoricalCrossentropy, opt, Device::Cpu, 1)
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let names = |bytes: &[u8]| {
        let mut n: Vec<String> = safetensors::SafeTensors::deserialize(bytes)
            .unwrap()
            .names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        n.sort();
        n
    };
    let cases = [
        (Optimizer::Sgd(wgtrain::optim::SgdConfig::new(0.1)), vec![]),
        (momentum, vec!["momentum"]),
        (Optimizer::Adam(AdamConfig::adam(1e-2)), vec!["m", "v"]),
        (
            Optimizer::Adam(AdamConfig::adam(1e-2).with_amsgrad()),
            vec!["m", "v", "v_max"],
        ),
        (
            Optimizer::Lion(wgtrain::optim::LionConfig::new(1e-3)),
            vec!["m"],
        ),
    ];
    for (opt, slots) in cases {
        let mut model = compile(opt);
        model.fit(&data, &FitConfig::new(1, 64)).unwrap();
        let path = dir.path().join("ckpt.safetensors");
        model.save(&path).unwrap();
        let mut want = vec!["dense_0.bias".to_string(), "dense_0.weight".to_string()];
        for p in ["dense_0.bias", "dense_0.weight"] {
            want.extend(slots.iter().map(|s| format!("{p}.{s}")));
        }
        want.sort();
        let saved = std::fs::read(&path).unwrap();
        assert_eq!(names(&saved), want, "{opt:?}");
    }

    // An earlier version's momentum checkpoint: velocity under `.m`, zeros under `.v`.
    let mut model = compile(momentum);
    model.fit(&data, &FitConfig::new(1, 64)).unwrap();
    let path = dir.path().join("new.safetensors");
    model.save(&path).unwrap();
    let new = std::fs::read(&path).unwrap();
    let legacy = |v_value: f32| {
        common::rewrite_checkpoint(&new, |t| {
            let renamed: Vec<_> = t
                .iter()
                .filter_map(|(n, s, d)| {
                    let p = n.strip_suffix(".momentum")?;
                    let zeros: Vec<u8> = (0..d.len() / 4)
                        .flat_map(|_| v_value.to_le_bytes())
                        .collect();
                    Some([
                        (format!("{p}.m"), s.clone(), d.clone()),
                        (format!("{p}.v"), s.clone(), zeros),
                    ])
                })
                .flatten()
                .collect();
            t.retain(|(n, _, _)| !n.ends_with(".momentum"));
            t.extend(renamed);
        })
    };
    let old = dir.path().join("old.safetensors");
    std::fs::write(&old, legacy(0.0)).unwrap();
    let mut loaded = compile(momentum);
    loaded.load(&old).unwrap();
    let again = dir.path().join("again.safetensors");
    loaded.save(&again).unwrap();
    let (a, b) = (new.clone(), std::fs::read(&again).unwrap());
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    for name in sa.names() {
        assert_eq!(
            sa.tensor(name).unwrap().data(),
            sb.tensor(name).unwrap().data(),
            "`{name}` after loading the earlier format"
        );
    }
    // ... but not one whose `.v` holds values SGD would silently drop.
    std::fs::write(&old, legacy(0.5)).unwrap();
    let err = compile(momentum).load(&old).unwrap_err().to_string();
    assert!(
        err.contains("dense_0.bias.v") && err.contains("does not keep"),
        "{err}"
    );
}

/// `exclude_from_weight_decay(&["bias"])` keeps the decay off the biases: they end elsewhere
/// than with decay, identically on both devices.
#[test]
fn biases_can_be_excluded_from_weight_decay() {
    let data = wgtrain::data::Dataset {
        images: (0..128 * 16).map(|i| (i * 53 % 256) as u8).collect(),
        labels: (0..128).map(|i| (i % 3) as u8).collect(),
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 3,
        class_names: vec!["a".into(), "b".into(), "c".into()],
    };
    let ctx = std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("a GPU adapter"));
    let sgd = Optimizer::Sgd(wgtrain::optim::SgdConfig {
        weight_decay: 0.5,
        ..wgtrain::optim::SgdConfig::new(0.1)
    });
    let dir = tempfile::tempdir().unwrap();
    let train = |exclude: bool, device: Device| {
        let mut s = Sequential::new(&[4, 4]).flatten().dense(Dense::new(3));
        if exclude {
            s = s.exclude_from_weight_decay(&["bias"]);
        }
        let mut model = s
            .compile(Loss::SparseCategoricalCrossentropy, sgd, device, 4)
            .unwrap();
        model.fit(&data, &FitConfig::new(2, 32)).unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let bias: Vec<f32> = st
            .tensor("dense_0.bias")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        bias
    };
    let (cpu, gpu) = (
        train(true, Device::Cpu),
        train(true, Device::Gpu(ctx.clone())),
    );
    for (c, g) in cpu.iter().zip(&gpu) {
        assert!((c - g).abs() <= 1e-5 + 1e-4 * c.abs(), "{cpu:?} vs {gpu:?}");
    }
    let decayed = train(false, Device::Cpu);
    assert!(
        cpu.iter().zip(&decayed).any(|(a, b)| (a - b).abs() > 1e-4),
        "{cpu:?} vs {decayed:?}"
    );
}

/// Lion (one slot) and AMSGrad (three slots) resume bit for bit on both executors: two
/// epochs straight equal one epoch, a checkpoint, a load into a fresh model and the second.
#[test]
fn lion_and_amsgrad_resume_bit_exactly_on_both_executors() {
    let data = tiny_images();
    let ctx =
        std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter"));
    let dir = tempfile::tempdir().unwrap();
    let optimizers = [
        Optimizer::Lion(wgtrain::optim::LionConfig {
            weight_decay: 0.1,
            ..wgtrain::optim::LionConfig::new(1e-3)
        }),
        Optimizer::Adam(AdamConfig::adamw(1e-2, 0.01).with_amsgrad()),
    ];
    for opt in optimizers {
        for device in [Device::Gpu(ctx.clone()), Device::Cpu] {
            let what = format!(
                "{opt:?} on {}",
                if matches!(device, Device::Cpu) {
                    "CPU"
                } else {
                    "GPU"
                }
            );
            let compile = || {
                Sequential::new(&[4, 4])
                    .flatten()
                    .dense(Dense::new(8).activation(Activation::Relu))
                    .dense(Dense::new(3))
                    .compile(Loss::SparseCategoricalCrossentropy, opt, device.clone(), 5)
                    .unwrap()
            };
            let cfg = |epochs| FitConfig {
                seed: 2,
                ..FitConfig::new(epochs, 32)
            };
            let mut straight = compile();
            straight.fit(&data, &cfg(2)).unwrap();
            let mut first = compile();
            first.fit(&data, &cfg(1)).unwrap();
            let ckpt = dir.path().join("epoch1.safetensors");
            first.save(&ckpt).unwrap();
            let mut resumed = compile();
            resumed.load(&ckpt).unwrap();
            resumed
                .fit(
                    &data,
                    &FitConfig {
                        initial_epoch: 1,
                        ..cfg(2)
                    },
                )
                .unwrap();
            let (a, b) = (dir.path().join("a"), dir.path().join("b"));
            straight.save(&a).unwrap();
            resumed.save(&b).unwrap();
            let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
            let (sa, sb) = (
                safetensors::SafeTensors::deserialize(&a).unwrap(),
                safetensors::SafeTensors::deserialize(&b).unwrap(),
            );
            let slots = opt.state_slots();
            assert_eq!(sa.names().len(), 4 * (1 + slots.len()), "{what}");
            for name in sa.names() {
                assert!(
                    sa.tensor(name).unwrap().data() == sb.tensor(name).unwrap().data(),
                    "{what} `{name}`: resumed training must be bit-identical"
                );
            }
            // The state moved: a resume that dropped it would not match, and this shows it
            // was there to drop.
            let last = format!("dense_1.bias.{}", slots[slots.len() - 1]);
            let state = sa.tensor(&last).unwrap();
            assert!(
                state.data().iter().any(|&b| b != 0),
                "{what}: `{last}` is all zeros"
            );
        }
    }
}

/// 256 deterministic 4x4 images of 3 classes: enough for checkpoint and resume tests.
fn tiny_images() -> wgtrain::data::Dataset {
    wgtrain::data::Dataset {
        images: (0..256 * 16).map(|i| (i * 37 % 256) as u8).collect(),
        labels: (0..256).map(|i| (i % 3) as u8).collect(),
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 3,
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}
