//! Every pipeline the engine builds translates for every backend wgpu targets: each WGSL
//! module, specialized with each set of override constants the engine actually uses, is
//! parsed, validated and written by naga's MSL (Metal), HLSL (DX12), SPIR-V (Vulkan) and GLSL
//! (GL) backends. The variants come from real work: the Keras-style models below trained on
//! the CPU-adapter plan and on the real-GPU plan (forced), so a kernel the engine starts
//! using is covered without editing this file.

use std::sync::Arc;

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::ShaderStage;
use wgtrain::data::{ArrayDataset, Dataset, Scaling};
use wgtrain::gpu::{shader_source, AdapterKind, GpuContext, GpuOptions, PipelineVariant};
use wgtrain::nn::{
    self, Conv2d, Dense, Device, FitConfig, Functional, Input, Layer, Loss, Metric, Sequential,
};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, LrSchedule, Optimizer, SgdConfig};

/// A small image dataset: `n` images of 2x8x8, four classes.
fn images(n: usize) -> Dataset {
    Dataset {
        images: (0..n * 128).map(|i| (i * 37 % 256) as u8).collect(),
        labels: (0..n).map(|i| (i % 4) as u8).collect(),
        channels: 2,
        height: 8,
        width: 8,
        num_classes: 4,
        class_names: vec![],
    }
}

/// Trains one of every kind of model the API builds on `ctx`, so that its pipeline cache holds
/// every variant those models need.
fn exercise(ctx: &Arc<GpuContext>) {
    let dev = || Device::Gpu(ctx.clone());
    let data = images(24);
    let cfg = |epochs| FitConfig {
        validation_split: 0.25,
        clip_global_norm: Some(1.0),
        lr_schedule: LrSchedule::Cosine {
            decay_steps: 10,
            alpha: 0.1,
        },
        ..FitConfig::new(epochs, 6)
    };
    // A CNN with every layer kind, Adam, cross-entropy with a fused final softmax.
    let cnn = Sequential::new(&[2, 8, 8])
        .conv2d(Conv2d::new(4, 3).same().activation(Activation::Relu))
        .batch_norm()
        .max_pool2d(2)
        .conv2d(
            Conv2d::new(4, 3)
                .stride(1)
                .padding(1)
                .activation(Activation::Gelu),
        )
        .avg_pool2d(2)
        .conv2d(Conv2d::new(3, 1).activation(Activation::Tanh))
        .global_avg_pool()
        .dropout(0.25)
        .dense(Dense::new(8).activation(Activation::Sigmoid))
        .batch_norm()
        .dense(Dense::new(4))
        .push(Layer::Softmax);
    let mut m = cnn
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adamw(1e-3, 1e-2)),
            dev(),
            0,
        )
        .unwrap();
    m.fit(&data, &cfg(2)).unwrap();
    m.predict(&data.head(3)).unwrap();
    // A softmax inside the network (a final one is fused into the loss).
    let mut m = Sequential::new(&[2, 8, 8])
        .flatten()
        .dense(Dense::new(6))
        .push(Layer::Softmax)
        .dense(Dense::new(4))
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Sgd(SgdConfig::new(1e-2)),
            dev(),
            0,
        )
        .unwrap();
    m.fit(&data, &cfg(1)).unwrap();
    // A functional model with every merge: channels concatenated, a product, a sum, and
    // per-channel gates broadcast over the image.
    let input = Input::new(&[2, 8, 8]);
    let a = Conv2d::new(3, 3).same().on(&input);
    let b = Conv2d::new(3, 3)
        .same()
        .activation(Activation::Sigmoid)
        .on(&input);
    let gates = Dense::new(3)
        .activation(Activation::Sigmoid)
        .on(&Layer::GlobalAvgPool.on(&input));
    let gated = nn::multiply(&[&a, &gates]);
    let joined = nn::concatenate(&[&nn::add(&[&nn::multiply(&[&a, &b]), &gated]), &input]);
    let out = Dense::new(4).on(&Layer::GlobalAvgPool.on(&joined));
    let mut m = Functional::new(&[&input], &[&out])
        .unwrap()
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Sgd(SgdConfig::new(1e-2)),
            dev(),
            0,
        )
        .unwrap();
    m.fit(&data, &cfg(1)).unwrap();
    // Dense stacks under each remaining loss and optimizer.
    let x = ndarray::Array2::from_shape_fn((24, 5), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
    let y = ndarray::Array2::from_shape_fn((24, 2), |(i, j)| ((i + j) % 2) as f32);
    let one_hot = ndarray::Array2::from_shape_fn((24, 2), |(i, j)| (i % 2 == j) as u8 as f32);
    let cases: [(Loss, Optimizer, &ndarray::Array2<f32>); 6] = [
        (
            Loss::MeanSquaredError,
            Optimizer::Sgd(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                ..SgdConfig::new(1e-2)
            }),
            &y,
        ),
        (
            Loss::MeanAbsoluteError,
            Optimizer::Sgd(SgdConfig::new(1e-2)),
            &y,
        ),
        (Loss::Huber, Optimizer::Adam(AdamConfig::adam(1e-3)), &y),
        (
            Loss::BinaryCrossentropy { from_logits: true },
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            &y,
        ),
        (
            Loss::BinaryCrossentropy { from_logits: false },
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            &y,
        ),
        (
            Loss::CategoricalCrossentropy {
                label_smoothing: 0.0,
            },
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            &one_hot,
        ),
    ];
    let hidden = [
        Activation::Relu,
        Activation::Silu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Softplus,
        Activation::Relu,
    ];
    for ((loss, opt, targets), act) in cases.into_iter().zip(hidden) {
        let last = if matches!(loss, Loss::BinaryCrossentropy { from_logits: false }) {
            Activation::Sigmoid
        } else {
            Activation::Identity
        };
        let mut net = Sequential::new(&[5]).dense(Dense::new(16).activation(act));
        if act == Activation::Relu {
            net = net.layer_norm();
        }
        let mut m = net
            .dense(Dense::new(2).activation(last))
            .compile(loss, opt, dev(), 1)
            .unwrap();
        if loss.is_regression() {
            m.set_metrics(&[Metric::Mae, Metric::R2]).unwrap();
        }
        let data = ArrayDataset::regression(&x, targets).unwrap();
        let cfg = FitConfig {
            scale_features: Some(Scaling::Standard),
            ..cfg(1)
        };
        m.fit(&data, &cfg).unwrap();
    }
}

/// Translates one variant for every backend; Err names the backend and naga's message.
fn translate(v: &PipelineVariant) -> Result<(), String> {
    let source = shader_source(v.shader).ok_or(format!("no source named {}", v.shader))?;
    let module = naga::front::wgsl::parse_str(source).map_err(|e| format!("parse: {e}"))?;
    let mut validator = Validator::new(ValidationFlags::all(), Capabilities::all());
    let info = validator
        .validate(&module)
        .map_err(|e| format!("validate: {e:?}"))?;
    let constants: naga::back::PipelineConstants = v
        .constants
        .iter()
        .map(|&(n, x)| (n.to_string(), x))
        .collect();
    let entry = (ShaderStage::Compute, v.entry);
    let (module, info) =
        naga::back::pipeline_constants::process_overrides(&module, &info, Some(entry), &constants)
            .map_err(|e| format!("overrides: {e:?}"))?;
    let entry_name = v.entry.to_string();

    let spv_options = spv::Options::default();
    spv::write_vec(
        &module,
        &info,
        &spv_options,
        Some(&spv::PipelineOptions {
            shader_stage: ShaderStage::Compute,
            entry_point: entry_name.clone(),
        }),
    )
    .map_err(|e| format!("SPIR-V: {e}"))?;

    let msl_options = msl::Options {
        lang_version: (2, 4),
        fake_missing_bindings: true,
        ..Default::default()
    };
    msl::write_string(
        &module,
        &info,
        &msl_options,
        &msl::PipelineOptions {
            entry_point: Some((ShaderStage::Compute, entry_name.clone())),
            ..Default::default()
        },
    )
    .map_err(|e| format!("MSL: {e}"))?;

    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_0,
        fake_missing_bindings: true,
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry_name.clone())),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e}"))?;

    let glsl_options = glsl::Options {
        version: glsl::Version::Embedded {
            version: 310,
            is_webgl: false,
        },
        ..Default::default()
    };
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry_name,
        multiview: None,
    };
    let mut out = String::new();
    glsl::Writer::new(
        &mut out,
        &module,
        &info,
        &glsl_options,
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write())
    .map_err(|e| format!("GLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_pipeline_the_engine_builds_translates_to_msl_hlsl_spirv_and_glsl() {
    let natural = Arc::new(GpuContext::new().expect("the tests need a GPU adapter"));
    let forced = Arc::new(
        GpuContext::with_options(GpuOptions {
            plan: Some(AdapterKind::Gpu),
            ..GpuOptions::default()
        })
        .unwrap(),
    );
    exercise(&natural);
    exercise(&forced);
    let mut variants = natural.pipeline_variants();
    for v in forced.pipeline_variants() {
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    let mut failures = Vec::new();
    for v in &variants {
        if let Err(e) = translate(v) {
            failures.push(format!("{}::{} {:?}: {e}", v.shader, v.entry, v.constants));
        }
    }
    let modules: std::collections::BTreeSet<&str> = variants.iter().map(|v| v.shader).collect();
    eprintln!(
        "{} pipeline variants of {} modules ({:?}) on {:?} and forced-GPU plans",
        variants.len(),
        modules.len(),
        modules,
        natural.plan()
    );
    assert!(
        failures.is_empty(),
        "{} of {} variants do not translate:\n{}",
        failures.len(),
        variants.len(),
        failures.join("\n")
    );
    // Both plans ran: the real-GPU plan's tiled GEMM and, on a CPU adapter with subgroups of
    // 8, the texture kernels.
    assert!(modules.contains("gemm"), "{modules:?}");
    if natural.plan() == AdapterKind::Cpu {
        assert!(modules.contains("gemm_tex"), "{modules:?}");
    }
}
