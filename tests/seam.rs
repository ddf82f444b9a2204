//! The training-step contract on both executors (ARCHITECTURE.md, "The training step"): the
//! seam between computing and applying gradients, clipping, parameter groups and buffers the
//! optimizer leaves alone.

mod common;

use common::mlp::*;
use common::*;
use wgtrain::graph::{CpuExecutor, Dim, Executor, Feed, GpuExecutor, Graph, Init};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer, SgdConfig};

/// Clipping leaves gradients under the limit alone and scales the rest to the limit.
#[test]
fn clipping_scales_to_the_global_norm() {
    use wgtrain::graph::CpuExecutor;
    let ctx = gpu();
    let m = mlp(6, &[8], 4, Activation::Tanh);
    // lr 1 and plain SGD: the update is exactly the (clipped) gradient.
    let opt = Optimizer::Sgd(SgdConfig::new(1.0));
    let (x, y) = batch(3, 8, 6, 4);
    let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
    let norm_of_update = |clip: Option<f32>, on_gpu: bool| -> f64 {
        let params = m.graph.params();
        let (before, after): (Vec<f32>, Vec<f32>) = if on_gpu {
            let mut e = GpuExecutor::new(ctx, m.graph.clone(), m.loss, opt, 1).unwrap();
            e.set_clip_global_norm(clip).unwrap();
            let read = |e: &GpuExecutor| -> Vec<f32> {
                params
                    .iter()
                    .flat_map(|&p| e.read_param(p).unwrap())
                    .collect()
            };
            let before = read(&e);
            e.step(8, &feeds).unwrap();
            (before, read(&e))
        } else {
            let mut e = CpuExecutor::new(m.graph.clone(), m.loss, opt, 1).unwrap();
            e.set_clip_global_norm(clip).unwrap();
            let read = |e: &CpuExecutor| -> Vec<f32> {
                params
                    .iter()
                    .flat_map(|&p| e.param(p).unwrap().iter().copied().collect::<Vec<_>>())
                    .collect()
            };
            let before = read(&e);
            e.step(8, &feeds).unwrap();
            (before, read(&e))
        };
        before
            .iter()
            .zip(&after)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for on_gpu in [false, true] {
        let full = norm_of_update(None, on_gpu);
        assert!(full > 0.1, "{full}");
        let loose = norm_of_update(Some(full as f32 * 2.0), on_gpu);
        assert!((loose - full).abs() < 1e-4 * full, "{loose} vs {full}");
        let tight = norm_of_update(Some(0.1), on_gpu);
        assert!((tight - 0.1).abs() < 1e-4, "gpu {on_gpu}: {tight}");
    }
}

/// Both executors behind the one training-step contract.
fn executors(m: &Mlp, opt: Optimizer, seed: u64) -> Vec<(&'static str, Box<dyn Executor>)> {
    let ctx = std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("a GPU adapter"));
    let gpu_exec = GpuExecutor::new(&ctx, m.graph.clone(), m.loss, opt, seed).unwrap();
    vec![
        ("gpu", Box::new(gpu_exec)),
        (
            "cpu",
            Box::new(CpuExecutor::new(m.graph.clone(), m.loss, opt, seed).unwrap()),
        ),
    ]
}

/// Data parallelism through the seam: two replicas each compute the gradients of half a
/// batch, average them, and apply the average; they then hold what one replica holds after
/// a step on the whole batch.
#[test]
fn averaging_gradients_at_the_seam_equals_a_step_on_the_whole_batch() {
    let m = mlp(10, &[12], 4, Activation::Tanh);
    let opt = Optimizer::Adam(AdamConfig::adam(1e-2));
    let (x, y) = batch(3, 16, 10, 4);
    let half = |k: usize| (&x[k * 80..(k + 1) * 80], &y[k * 8..(k + 1) * 8]);
    for ((name, mut whole), ((_, mut a), (_, mut b))) in executors(&m, opt, 5)
        .into_iter()
        .zip(executors(&m, opt, 5).into_iter().zip(executors(&m, opt, 5)))
    {
        for step in 0..3 {
            whole
                .step(16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
                .unwrap();
            let mut sum = Vec::new();
            for (k, replica) in [&mut a, &mut b].into_iter().enumerate() {
                let (xs, ys) = half(k);
                replica
                    .compute_gradients(8, &[(m.x, Feed::F32(xs)), (m.y, Feed::U32(ys))])
                    .unwrap();
                let g = replica.read_gradients().unwrap();
                if sum.is_empty() {
                    sum = g;
                } else {
                    sum.iter_mut().zip(&g).for_each(|(s, g)| *s += g);
                }
            }
            let mean: Vec<f32> = sum.iter().map(|g| g * 0.5).collect();
            for replica in [&mut a, &mut b] {
                replica.write_gradients(&mean).unwrap();
                replica.apply_gradients().unwrap();
            }
            for p in m.graph.params() {
                let want = to_f64(&whole.read_param(p).unwrap());
                let what = format!("{name} step {step}");
                assert_close(&what, &a.read_param(p).unwrap(), &want, 1e-5, 1e-4);
                assert_eq!(a.read_param(p).unwrap(), b.read_param(p).unwrap(), "{what}");
            }
        }
        assert_eq!((whole.steps(), a.steps()), (3, 3), "{name}");
    }
}

/// Halving the gradients at the seam is a step at half the learning rate, bit for bit, for
/// plain SGD (0.5 is exact); misuse of the seam is an error naming the fix.
#[test]
fn the_seam_changes_what_the_optimizer_applies_and_checks_its_use() {
    let m = mlp(6, &[5], 3, Activation::Relu);
    let (x, y) = batch(9, 4, 6, 3);
    let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
    let sgd = |lr| Optimizer::Sgd(SgdConfig::new(lr));
    for ((name, mut halved), (_, mut slow)) in executors(&m, sgd(0.2), 1)
        .into_iter()
        .zip(executors(&m, sgd(0.1), 1))
    {
        halved.compute_gradients(4, &feeds).unwrap();
        let g: Vec<f32> = halved.read_gradients().unwrap();
        assert!(g.iter().any(|&v| v != 0.0), "{name}");
        halved
            .write_gradients(&g.iter().map(|v| v * 0.5).collect::<Vec<_>>())
            .unwrap();
        halved.apply_gradients().unwrap();
        slow.step(4, &feeds).unwrap();
        for p in m.graph.params() {
            assert_eq!(
                halved.read_param(p).unwrap(),
                slow.read_param(p).unwrap(),
                "{name}"
            );
        }

        let err = |r: wgtrain::Result<()>| r.unwrap_err().to_string();
        assert!(err(halved.apply_gradients()).contains("call compute_gradients first"));
        halved.compute_gradients(4, &feeds).unwrap();
        assert!(err(halved.compute_gradients(4, &feeds)).contains("apply_gradients first"));
        let short = vec![0.0; g.len() - 1];
        assert!(err(halved.write_gradients(&short)).contains("gradient layout"));
        let mut nan = g.clone();
        nan[3] = f32::NAN;
        assert!(err(halved.write_gradients(&nan)).contains("gradient value 3 is NaN"));
        halved.apply_gradients().unwrap();
        assert_eq!(halved.steps(), 2, "{name}");
    }
}

/// Parameter groups: a frozen group (learning rate scale 0) keeps its values exactly; a group
/// with its own weight decay trains the same on both executors; the layout puts each group
/// in one range of the arenas. Bad options are errors.
#[test]
fn parameter_groups_take_their_own_rate_and_decay() {
    let mut m = mlp(6, &[8], 3, Activation::Tanh);
    let params = m.graph.params();
    let (w0, b0, w1, b1) = (params[0], params[1], params[2], params[3]);
    let frozen = wgtrain::optim::ParamOptions {
        lr_scale: 0.0,
        weight_decay: None,
    };
    let no_decay = wgtrain::optim::ParamOptions {
        weight_decay: Some(0.0),
        ..Default::default()
    };
    m.graph.set_param_options(w0, frozen).unwrap();
    m.graph.set_param_options(b0, no_decay).unwrap();
    m.graph.set_param_options(b1, no_decay).unwrap();
    // Three groups: w1 (defaults) would come after; groups follow their first parameter.
    let groups = m.graph.param_groups();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[1].1, vec![b0, b1]);
    let (layout, _) = m.graph.param_layout();
    let order: Vec<_> = layout.iter().map(|l| l.0).collect();
    assert_eq!(order, vec![w0, b0, b1, w1]);
    let adamw = Optimizer::Adam(AdamConfig::adamw(1e-2, 0.1));
    let (x, y) = batch(4, 12, 6, 3);
    let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
    let mut runs = Vec::new();
    for (name, mut exec) in executors(&m, adamw, 2) {
        let start = exec.read_param(w0).unwrap();
        for _ in 0..5 {
            exec.step(12, &feeds).unwrap();
        }
        assert_eq!(
            exec.read_param(w0).unwrap(),
            start,
            "{name}: frozen group moved"
        );
        runs.push(exec);
    }
    for p in [b0, w1, b1] {
        let want = to_f64(&runs[1].read_param(p).unwrap());
        assert_close(
            "group param",
            &runs[0].read_param(p).unwrap(),
            &want,
            1e-5,
            1e-4,
        );
    }
    // The groups matter: without them the same run ends elsewhere.
    let plain = mlp(6, &[8], 3, Activation::Tanh);
    let mut exec = executors(&plain, adamw, 2).remove(1).1;
    for _ in 0..5 {
        exec.step(12, &[(plain.x, Feed::F32(&x)), (plain.y, Feed::U32(&y))])
            .unwrap();
    }
    let plain_b0 = plain.graph.params()[1];
    assert_ne!(
        exec.read_param(plain_b0).unwrap(),
        runs[1].read_param(b0).unwrap()
    );

    let bad = wgtrain::optim::ParamOptions {
        lr_scale: f32::NAN,
        weight_decay: None,
    };
    let err = m.graph.set_param_options(b0, bad).unwrap_err().to_string();
    assert!(err.contains("lr_scale"), "{err}");
    let err = m
        .graph
        .set_param_options(m.x, no_decay)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a parameter"), "{err}");
}

/// A non-trainable buffer (a fixed projection here): ops read it, no gradient reaches it, the
/// optimizer leaves it alone, and writing it changes what later steps compute; on both
/// executors, which start from the same values.
#[test]
fn buffers_are_read_by_ops_and_left_alone_by_the_optimizer() {
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(5)]);
    let y = g.labels("y");
    let proj = g.buffer("projection", &[5, 4], Init::GlorotUniform);
    let w = g.param("w", &[4, 3], Init::GlorotUniform);
    let h = g.matmul(x, proj).unwrap();
    let h = g.activation(h, Activation::Tanh).unwrap();
    let z = g.matmul(h, w).unwrap();
    let loss = g.softmax_xent(z, y).unwrap();
    let m = Mlp {
        graph: g,
        x,
        y,
        loss,
        features: 5,
    };
    let sgd = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        weight_decay: 0.1,
        ..SgdConfig::new(0.1)
    });
    let (xs, ys) = batch(6, 10, 5, 3);
    let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];
    let mut finals = Vec::new();
    for (name, mut exec) in executors(&m, sgd, 3) {
        assert!(
            exec.graph().params() == vec![w],
            "{name}: the buffer is no parameter"
        );
        let start = exec.read_buffer(proj).unwrap();
        for _ in 0..5 {
            exec.step(10, &feeds).unwrap();
        }
        assert_eq!(
            exec.read_buffer(proj).unwrap(),
            start,
            "{name}: the optimizer moved it"
        );
        // A new projection changes the loss of the next evaluation.
        exec.reset_metrics().unwrap();
        exec.evaluate_batch(10, &feeds).unwrap();
        let before = exec.metrics().unwrap().mean_loss;
        let doubled: Vec<f32> = start.iter().map(|v| v * 2.0).collect();
        exec.write_buffer(proj, &doubled).unwrap();
        assert_eq!(exec.read_buffer(proj).unwrap(), doubled, "{name}");
        exec.reset_metrics().unwrap();
        exec.evaluate_batch(10, &feeds).unwrap();
        assert_ne!(exec.metrics().unwrap().mean_loss, before, "{name}");
        let err = |r: wgtrain::Result<()>| r.unwrap_err().to_string();
        let mut nan = doubled.clone();
        nan[0] = f32::NAN;
        assert!(
            err(exec.write_buffer(proj, &nan)).contains("value 0 is NaN"),
            "{name}"
        );
        assert!(
            err(exec.write_buffer(proj, &doubled[1..])).contains("19 values"),
            "{name}"
        );
        assert!(
            err(exec.write_buffer(w, &[0.0; 12])).contains("not a buffer"),
            "{name}"
        );
        finals.push((start, exec.read_param(w).unwrap()));
    }
    assert_eq!(
        finals[0].0, finals[1].0,
        "both executors start from the same buffer"
    );
    assert_close("w", &finals[0].1, &to_f64(&finals[1].1), 1e-5, 1e-4);
}
