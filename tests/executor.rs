//! The GPU executor against the CPU executor, training behaviour, determinism and
//! steady-state resource use. Gradient tolerances follow ARCHITECTURE.md, "Testing" (rtol
//! 1e-3 / atol 1e-4); parameters after 50 steps: rtol 1e-3 / atol 1e-4 (f32 rounding
//! compounds over steps).

mod common;

use std::collections::HashMap;

use common::*;
use ndarray::{Array1, ArrayD, ArrayViewMut1, IxDyn};
use wgtrain::cpu;
use wgtrain::graph::{
    CpuExecutor, CpuRun, Dim, Executor, Feed, GpuExecutor, GpuSession, Graph, Init, NodeId, Value,
};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, LionConfig, Optimizer, SgdConfig};

struct Mlp {
    graph: Graph,
    x: NodeId,
    y: NodeId,
    loss: NodeId,
    features: usize,
}

fn mlp(features: usize, hidden: &[usize], classes: usize, act: Activation) -> Mlp {
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(features)]);
    let y = g.labels("y");
    let mut h = x;
    let mut width = features;
    for (i, &units) in hidden.iter().chain([&classes]).enumerate() {
        let w = g.param(
            &format!("dense_{i}.weight"),
            &[width, units],
            Init::GlorotUniform,
        );
        let b = g.param(&format!("dense_{i}.bias"), &[units], Init::Zeros);
        let z = g.matmul(h, w).unwrap();
        h = g.bias_add(z, b).unwrap();
        if i < hidden.len() {
            h = g.activation(h, act).unwrap();
        }
        width = units;
    }
    let loss = g.softmax_xent(h, y).unwrap();
    Mlp {
        graph: g,
        x,
        y,
        loss,
        features,
    }
}

fn batch(seed: u64, rows: usize, features: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let x = uniform(seed, rows * features, -1.0, 1.0);
    let y = (0..rows)
        .map(|i| ((i as u64 * 7 + seed) % classes as u64) as u32)
        .collect();
    (x, y)
}

fn cpu_feeds<T: cpu::Scalar>(m: &Mlp, x: &[f32], y: &[u32]) -> HashMap<NodeId, Value<T>> {
    let rows = y.len();
    let xa = ArrayD::from_shape_vec(
        IxDyn(&[rows, m.features]),
        x.iter().map(|&v| T::of(v as f64)).collect(),
    )
    .unwrap();
    HashMap::from([
        (m.x, Value::Float(xa)),
        (m.y, Value::Labels(Array1::from(y.to_vec()))),
    ])
}

#[test]
fn golden_step_zero_matches_cpu() {
    step_zero_matches_cpu(&[16], 32);
}

/// Odd sizes: a batch that is not a multiple of 4 (the packed output gradients and the bias
/// sums over them carry padding) and hidden widths with and without whole vec4s.
#[test]
fn step_zero_matches_cpu_at_odd_sizes() {
    step_zero_matches_cpu(&[12, 10, 8], 30);
}

fn step_zero_matches_cpu(hidden: &[usize], rows: usize) {
    let ctx = gpu();
    let m = mlp(20, hidden, 10, Activation::Relu);
    let (x, y) = batch(1, rows, 20, 10);
    let mut exec = GpuExecutor::new(
        ctx,
        m.graph.clone(),
        m.loss,
        Optimizer::Sgd(SgdConfig::new(0.1)),
        5,
    )
    .unwrap();
    exec.step(ctx, rows, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();

    let g = exec.graph();
    let run = CpuRun::<f64>::new(g, 5);
    let vals = run
        .eval(g, &cpu_feeds(&m, &x, &y), g.last().unwrap())
        .unwrap();
    let loss_cpu = CpuRun::scalar(&vals, m.loss).unwrap();
    let loss_gpu = exec.read_node(ctx, rows, m.loss).unwrap()[0] as f64;
    assert!(
        (loss_gpu - loss_cpu).abs() < 1e-4 * loss_cpu.abs() + 1e-5,
        "loss {loss_gpu} vs {loss_cpu}"
    );
    for p in g.params() {
        let gi = g.index(exec.gradients().of(p).unwrap());
        let want = vals[gi].as_ref().unwrap().float().unwrap();
        let got = exec.read_grad(ctx, p).unwrap();
        assert_close(&g.node(p).name, &got, want.as_slice().unwrap(), 1e-4, 1e-3);
    }
}

fn cpu_train(
    m: &Mlp,
    exec_graph: &Graph,
    grads: &wgtrain::graph::Gradients,
    opt: Optimizer,
    seed: u64,
    steps: u64,
) -> CpuRun<f32> {
    let mut run = CpuRun::<f32>::new(exec_graph, seed);
    let mut state: HashMap<NodeId, Vec<Array1<f32>>> = HashMap::new();
    for t in 1..=steps {
        let (x, y) = batch(100 + t, 16, m.features, 10);
        let vals = run
            .eval(
                exec_graph,
                &cpu_feeds(m, &x, &y),
                exec_graph.last().unwrap(),
            )
            .unwrap();
        for p in exec_graph.params() {
            let g = vals[exec_graph.index(grads.of(p).unwrap())]
                .as_ref()
                .unwrap()
                .float()
                .unwrap()
                .clone();
            let param = run.params.get_mut(&p).unwrap();
            let n = param.len();
            let slots = state
                .entry(p)
                .or_insert_with(|| vec![Array1::zeros(n); opt.state_slots().len()]);
            let mut slots: Vec<_> = slots.iter_mut().map(|s| s.view_mut()).collect();
            let pv: ArrayViewMut1<f32> = param.as_slice_mut().unwrap().into();
            let gv = g.as_slice().unwrap().into();
            opt.cpu_step(t, pv, gv, &mut slots).unwrap();
        }
    }
    run
}

#[test]
fn fifty_steps_track_cpu_with_every_optimizer() {
    let ctx = gpu();
    for opt in [
        Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(0.05)
        }),
        Optimizer::Adam(AdamConfig::adam(1e-2)),
        Optimizer::Adam(AdamConfig::adam(1e-2).with_amsgrad()),
        Optimizer::Lion(LionConfig {
            weight_decay: 0.1,
            ..LionConfig::new(1e-3)
        }),
    ] {
        let m = mlp(12, &[16, 8], 10, Activation::Tanh);
        let mut exec = GpuExecutor::new(ctx, m.graph.clone(), m.loss, opt, 3).unwrap();
        for t in 1..=50u64 {
            let (x, y) = batch(100 + t, 16, 12, 10);
            exec.step(ctx, 16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
                .unwrap();
        }
        let cpu = cpu_train(&m, exec.graph(), exec.gradients(), opt, 3, 50);
        for p in exec.graph().params() {
            let want = to_f64(cpu.params[&p].as_slice().unwrap());
            assert_close(
                &format!("{opt:?} {}", exec.graph().node(p).name),
                &exec.read_param(ctx, p).unwrap(),
                &want,
                1e-4,
                1e-3,
            );
        }
    }
}

fn spirals(n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as u32;
        let t = (i / 2) as f32 / (n / 2) as f32 * 3.0 * std::f32::consts::PI;
        let r = 0.2 + t / (3.0 * std::f32::consts::PI);
        let a = t + class as f32 * std::f32::consts::PI;
        x.extend([r * a.cos(), r * a.sin()]);
        y.push(class);
    }
    (x, y)
}

#[test]
fn two_spirals_are_learned() {
    let ctx = gpu();
    let m = mlp(2, &[32, 32], 2, Activation::Tanh);
    let mut exec = GpuExecutor::new(
        ctx,
        m.graph,
        m.loss,
        Optimizer::Adam(AdamConfig::adam(0.02)),
        1,
    )
    .unwrap();
    let (x, y) = spirals(256);
    for _ in 0..600 {
        exec.step(ctx, 256, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
            .unwrap();
    }
    exec.reset_metrics(ctx).unwrap();
    exec.evaluate_batch(ctx, 256, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();
    let metrics = exec.metrics(ctx).unwrap();
    assert_eq!(metrics.samples, 256);
    assert!(metrics.accuracy >= 0.97, "{metrics:?}");
}

#[test]
fn runs_are_bit_identical_and_steps_allocate_nothing() {
    let ctx = gpu();
    let run = |steps: u64| {
        let m = mlp(12, &[16], 10, Activation::Relu);
        let mut exec = GpuExecutor::new(
            ctx,
            m.graph.clone(),
            m.loss,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            9,
        )
        .unwrap();
        for t in 1..=steps {
            let (x, y) = batch(t, 16, 12, 10);
            exec.step(ctx, 16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
                .unwrap();
        }
        m.graph
            .params()
            .iter()
            .flat_map(|&p| exec.read_param(ctx, p).unwrap())
            .map(f32::to_bits)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(20), run(20));

    // A private context: the shared one counts other tests' buffers too.
    let own = wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter");
    let ctx = &own;
    let m = mlp(784, &[128], 10, Activation::Relu);
    let mut exec = GpuExecutor::new(
        ctx,
        m.graph,
        m.loss,
        Optimizer::Sgd(SgdConfig::new(0.01)),
        0,
    )
    .unwrap();
    let (x, y) = batch(1, 128, 784, 10);
    let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
    exec.step(ctx, 128, &feeds).unwrap();
    let (buffers, submissions) = (ctx.counters().buffers(), ctx.counters().submissions());
    for _ in 0..1000 {
        exec.step(ctx, 128, &feeds).unwrap();
    }
    ctx.synchronize().unwrap();
    assert_eq!(
        ctx.counters().buffers(),
        buffers,
        "steps must not create buffers"
    );
    assert_eq!(
        ctx.counters().submissions(),
        submissions + 1000,
        "one submission per step"
    );
    // Liveness reuse: in a deeper MLP, backward values take buffers forward values freed.
    let deep = mlp(64, &[128, 128, 128], 10, Activation::Relu);
    let mut exec = GpuExecutor::new(
        ctx,
        deep.graph,
        deep.loss,
        Optimizer::Sgd(SgdConfig::new(0.01)),
        0,
    )
    .unwrap();
    exec.prepare(ctx, 32).unwrap();
    let mem = exec.memory();
    assert!(mem.activations < mem.activations_without_reuse, "{mem:?}");
}

#[test]
fn partial_batches_share_parameters_and_bad_feeds_are_errors() {
    let ctx = gpu();
    let m = mlp(12, &[16], 10, Activation::Relu);
    let mut exec = GpuExecutor::new(
        ctx,
        m.graph.clone(),
        m.loss,
        Optimizer::Sgd(SgdConfig::new(0.1)),
        2,
    )
    .unwrap();
    let (x, y) = batch(1, 16, 12, 10);
    exec.step(ctx, 16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();
    let w = m.graph.params()[0];
    let before = exec.read_param(ctx, w).unwrap();
    let (x5, y5) = batch(2, 5, 12, 10);
    exec.step(ctx, 5, &[(m.x, Feed::F32(&x5)), (m.y, Feed::U32(&y5))])
        .unwrap();
    assert_ne!(
        exec.read_param(ctx, w).unwrap(),
        before,
        "the partial batch updates the same weights"
    );
    assert_eq!(exec.steps(), 2);

    let err = exec
        .step(ctx, 16, &[(m.x, Feed::F32(&x5)), (m.y, Feed::U32(&y))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input `x` needs 192 values at batch 16, got 60"),
        "{err}"
    );
    let err = exec
        .step(ctx, 16, &[(m.x, Feed::U32(&y)), (m.y, Feed::U32(&y))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong element type"), "{err}");
    assert!(exec.set_lr(ctx, f32::NAN).is_err());
    exec.set_lr(ctx, 0.0).unwrap();
    let frozen = exec.read_param(ctx, w).unwrap();
    exec.step(ctx, 16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();
    assert_eq!(
        exec.read_param(ctx, w).unwrap(),
        frozen,
        "lr 0 changes nothing"
    );
}

#[test]
fn cpu_and_gpu_executors_agree() {
    use wgtrain::graph::CpuExecutor;
    let ctx = gpu();
    let m = mlp(12, &[16], 10, Activation::Relu);
    let opt = Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..SgdConfig::new(0.05)
    });
    let mut g = GpuExecutor::new(ctx, m.graph.clone(), m.loss, opt, 4).unwrap();
    let mut c = CpuExecutor::new(m.graph.clone(), m.loss, opt, 4).unwrap();
    for t in 1..=20u64 {
        let (x, y) = batch(t, 16, 12, 10);
        let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
        g.step(ctx, 16, &feeds).unwrap();
        c.step(16, &feeds).unwrap();
    }
    for p in m.graph.params() {
        let want = to_f64(c.param(p).unwrap().as_slice().unwrap());
        assert_close("param", &g.read_param(ctx, p).unwrap(), &want, 1e-4, 1e-3);
    }
    let (gm, cm) = (g.metrics(ctx).unwrap(), c.metrics());
    assert_eq!((gm.samples, gm.steps), (cm.samples, cm.steps));
    assert!(
        (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
        "{gm:?} vs {cm:?}"
    );
    assert!(
        (gm.accuracy - cm.accuracy).abs() <= 1.0 / 320.0 + 1e-6,
        "{gm:?} vs {cm:?}"
    );
}

/// Dropout, global-norm clipping and a pointwise loss on both executors: the dropout masks
/// are the same hash on both, so the runs agree to f32 rounding.
#[test]
fn dropout_clipping_and_binary_loss_agree_on_cpu_and_gpu() {
    use wgtrain::graph::CpuExecutor;
    use wgtrain::ops::PointwiseLoss;
    let ctx = gpu();
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(12)]);
    let t = g.input("t", &[Dim::Batch, Dim::Fixed(1)]);
    let w = g.param("w", &[12, 32], Init::GlorotUniform);
    let b = g.param("b", &[32], Init::Zeros);
    let w2 = g.param("w2", &[32, 1], Init::GlorotUniform);
    let h = g.matmul(x, w).unwrap();
    let h = g.bias_add(h, b).unwrap();
    let h = g.activation(h, Activation::Relu).unwrap();
    let h = g.dropout(h, 0.3, 11).unwrap();
    let z = g.matmul(h, w2).unwrap();
    let loss = g
        .loss(PointwiseLoss::BinaryCrossEntropyWithLogits, z, t)
        .unwrap();
    let opt = Optimizer::Adam(AdamConfig::adam(0.01));
    let mut ge = GpuExecutor::new(ctx, g.clone(), loss, opt, 5).unwrap();
    let mut ce = CpuExecutor::new(g.clone(), loss, opt, 5).unwrap();
    // A small limit, so clipping scales every step.
    ge.set_clip_global_norm(ctx, Some(0.05)).unwrap();
    ce.set_clip_global_norm(Some(0.05)).unwrap();
    assert!(ce.set_clip_global_norm(Some(-1.0)).is_err());
    for step in 1..=15u64 {
        let (xs, labels) = batch(step, 16, 12, 2);
        let ts: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let feeds = [(x, Feed::F32(&xs)), (t, Feed::F32(&ts))];
        ge.step(ctx, 16, &feeds).unwrap();
        ce.step(16, &feeds).unwrap();
    }
    for p in g.params() {
        let want = to_f64(ce.param(p).unwrap().as_slice().unwrap());
        assert_close("param", &ge.read_param(ctx, p).unwrap(), &want, 1e-4, 1e-3);
    }
    let (gm, cm) = (ge.metrics(ctx).unwrap(), ce.metrics());
    // Binary accuracy counts one prediction per sample.
    assert_eq!((gm.samples, gm.steps), (16 * 15, 15));
    assert_eq!((cm.samples, cm.steps), (16 * 15, 15));
    assert!(
        (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
        "{gm:?} vs {cm:?}"
    );
    assert!(
        (gm.accuracy - cm.accuracy).abs() <= 2.0 / 240.0,
        "{gm:?} vs {cm:?}"
    );
    assert_eq!(gm.first_non_finite, None);

    // Evaluation skips dropout: the same batch gives the same loss twice, on both.
    let (xs, labels) = batch(99, 16, 12, 2);
    let ts: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let feeds = [(x, Feed::F32(&xs)), (t, Feed::F32(&ts))];
    let mut losses = Vec::new();
    for _ in 0..2 {
        ge.reset_metrics(ctx).unwrap();
        ge.evaluate_batch(ctx, 16, &feeds).unwrap();
        losses.push(ge.metrics(ctx).unwrap().mean_loss);
    }
    ce.reset_metrics();
    ce.evaluate_batch(16, &feeds).unwrap();
    assert_eq!(losses[0], losses[1]);
    assert!(
        (losses[0] - ce.metrics().mean_loss).abs() < 1e-4,
        "{losses:?}"
    );
}

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
            e.set_clip_global_norm(ctx, clip).unwrap();
            let read = |e: &GpuExecutor| -> Vec<f32> {
                params
                    .iter()
                    .flat_map(|&p| e.read_param(ctx, p).unwrap())
                    .collect()
            };
            let before = read(&e);
            e.step(ctx, 8, &feeds).unwrap();
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

/// A small CNN (both convolution gradients, max and average pooling, a dense head) on both
/// executors: parameters after 8 Adam steps agree.
#[test]
fn cnn_agrees_on_cpu_and_gpu() {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(11), Dim::Fixed(9)],
    );
    let y = g.labels("y");
    let w1 = g.param("w1", &[6, 3, 3, 3], Init::HeUniform);
    let b1 = g.param("b1", &[6], Init::Zeros);
    let w2 = g.param("w2", &[8, 6, 3, 3], Init::HeUniform);
    let b2 = g.param("b2", &[8], Init::Zeros);
    let h = g.conv2d(x, w1, b1, 1, 1).unwrap();
    let h = g.activation(h, Activation::Relu).unwrap();
    let h = g.max_pool2d(h, 2, 2).unwrap();
    let h = g.conv2d(h, w2, b2, 2, 1).unwrap();
    let h = g.avg_pool2d(h, 2, 1).unwrap();
    let h = g.flatten(h).unwrap();
    let width = match g.node(h).shape[1] {
        Dim::Fixed(n) => n,
        Dim::Batch => unreachable!(),
    };
    let wd = g.param("wd", &[width, 5], Init::GlorotUniform);
    let z = g.matmul(h, wd).unwrap();
    let loss = g.softmax_xent(z, y).unwrap();
    let (gm, cm) = train_alike_for_8_steps(&g, (x, y, loss), 3 * 11 * 9, 3);
    assert!(
        (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
        "{gm:?} vs {cm:?}"
    );
}

/// Trains `g` (image input `x` of `features` values, labels `y`, five classes) with Adam for 8
/// steps of 6 rows on both executors from `seed`, checks that their parameters agree, and
/// returns both executors' metrics.
fn train_alike_for_8_steps(
    g: &Graph,
    (x, y, loss): (NodeId, NodeId, NodeId),
    features: usize,
    seed: u64,
) -> (wgtrain::ops::Metrics, wgtrain::ops::Metrics) {
    use wgtrain::graph::CpuExecutor;
    let ctx = gpu();
    let opt = Optimizer::Adam(AdamConfig::adam(1e-2));
    let mut ge = GpuExecutor::new(ctx, g.clone(), loss, opt, seed).unwrap();
    let mut ce = CpuExecutor::new(g.clone(), loss, opt, seed).unwrap();
    for step in 1..=8u64 {
        let (xs, ys) = batch(step, 6, features, 5);
        let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];
        ge.step(ctx, 6, &feeds).unwrap();
        ce.step(6, &feeds).unwrap();
    }
    for p in g.params() {
        let want = to_f64(ce.param(p).unwrap().as_slice().unwrap());
        assert_close(
            &g.node(p).name,
            &ge.read_param(ctx, p).unwrap(),
            &want,
            1e-4,
            1e-3,
        );
    }
    (ge.metrics(ctx).unwrap(), ce.metrics())
}

/// The mean loss weighs each step by its samples, on both executors: a partial last batch
/// counts for what its rows are worth, not as much as a full one.
#[test]
fn mean_loss_weighs_partial_batches_by_their_samples() {
    let ctx = gpu();
    let m = mlp(6, &[8], 4, Activation::Tanh);
    let sgd = Optimizer::Sgd(SgdConfig::new(0.1));
    let mut gpu_exec = GpuExecutor::new(ctx, m.graph.clone(), m.loss, sgd, 3).unwrap();
    let mut cpu_exec = wgtrain::graph::CpuExecutor::new(m.graph.clone(), m.loss, sgd, 3).unwrap();
    let (x8, y8) = batch(5, 8, 6, 4);
    let (x2, y2) = batch(6, 2, 6, 4);
    let one = |gpu_exec: &mut GpuExecutor, rows: usize, x: &[f32], y: &[u32]| {
        gpu_exec.reset_metrics(ctx).unwrap();
        gpu_exec
            .evaluate_batch(ctx, rows, &[(m.x, Feed::F32(x)), (m.y, Feed::U32(y))])
            .unwrap();
        gpu_exec.metrics(ctx).unwrap().mean_loss as f64
    };
    let (l8, l2) = (
        one(&mut gpu_exec, 8, &x8, &y8),
        one(&mut gpu_exec, 2, &x2, &y2),
    );
    assert!(
        (l8 - l2).abs() > 1e-3,
        "the two batches need different losses"
    );
    let want = (8.0 * l8 + 2.0 * l2) / 10.0;
    gpu_exec.reset_metrics(ctx).unwrap();
    for (rows, x, y) in [(8, &x8, &y8), (2, &x2, &y2)] {
        let feeds = [(m.x, Feed::F32(x)), (m.y, Feed::U32(y))];
        gpu_exec.evaluate_batch(ctx, rows, &feeds).unwrap();
        cpu_exec.evaluate_batch(rows, &feeds).unwrap();
    }
    for (who, got) in [
        ("gpu", gpu_exec.metrics(ctx).unwrap()),
        ("cpu", cpu_exec.metrics()),
    ] {
        assert!(
            (got.mean_loss as f64 - want).abs() <= 1e-5 * want.abs(),
            "{who}: mean loss {} over 10 samples, want {want}",
            got.mean_loss
        );
        assert_eq!((got.samples, got.steps), (10, 2), "{who}");
    }
}

/// GPU metric counters are integers: past 2^24 predictions (where an f32 count stops counting
/// odd numbers) every sample is still counted.
#[test]
fn gpu_metric_counts_are_exact_past_two_to_the_24() {
    let ctx = gpu();
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(1)]);
    // No parameter: the plan's backward pass would otherwise hold a GEMM over every row.
    let z = g.activation(x, Activation::Identity).unwrap();
    let t = g.input("t", &[Dim::Batch, Dim::Fixed(1)]);
    let loss = g
        .loss(
            wgtrain::ops::PointwiseLoss::BinaryCrossEntropyWithLogits,
            z,
            t,
        )
        .unwrap();
    let mut exec = GpuExecutor::new(ctx, g, loss, Optimizer::Sgd(SgdConfig::new(0.1)), 0).unwrap();
    // Every logit is 0, predicted negative, and every target is 0: all correct.
    let rows = (1 << 20) + 1;
    let (xs, ts) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    let steps = 17; // 17 * (2^20 + 1) = 17,825,809: odd and above 2^24
    for _ in 0..steps {
        exec.evaluate_batch(ctx, rows, &[(x, Feed::F32(&xs)), (t, Feed::F32(&ts))])
            .unwrap();
    }
    let got = exec.metrics(ctx).unwrap();
    assert_eq!(got.samples, steps as u64 * rows as u64);
    assert_eq!(got.steps, steps as u64);
    assert_eq!(got.accuracy, 1.0);
    // Each step's loss is an f32 mean over 2^20 elements (reduction rtol 1e-4).
    let ln2 = std::f32::consts::LN_2;
    assert!((got.mean_loss - ln2).abs() <= 1e-4 * ln2, "{got:?}");
}

fn small_cnn() -> (Graph, NodeId) {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(9), Dim::Fixed(9)],
    );
    let y = g.labels("y");
    let w = g.param("conv.weight", &[4, 2, 3, 3], Init::HeUniform);
    let b = g.param("conv.bias", &[4], Init::Zeros);
    let h = g.conv2d(x, w, b, 1, 1).unwrap();
    let h = g.activation(h, Activation::Relu).unwrap();
    let h = g.max_pool2d(h, 2, 2).unwrap();
    let h = g.flatten(h).unwrap();
    let w2 = g.param("dense.weight", &[64, 3], Init::GlorotUniform);
    let b2 = g.param("dense.bias", &[3], Init::Zeros);
    let z = g.matmul(h, w2).unwrap();
    let z = g.bias_add(z, b2).unwrap();
    let loss = g.softmax_xent(z, y).unwrap();
    (g, loss)
}

/// `memory()` accounts for every byte the executor allocates (counted by its own context),
/// and the optimizer state is what the optimizer keeps: none for plain SGD, one slot with
/// momentum, two for Adam.
#[test]
fn memory_report_matches_the_bytes_allocated() {
    let ctx = wgtrain::gpu::GpuContext::new().expect("a GPU adapter (lavapipe on CI)");
    let momentum = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    };
    let optimizers = [
        (Optimizer::Sgd(SgdConfig::new(0.01)), 0),
        (Optimizer::Sgd(momentum), 1),
        (Optimizer::Adam(AdamConfig::adam(1e-3)), 2),
    ];
    let m = mlp(20, &[16], 5, Activation::Relu);
    let models = [("mlp", m.graph, m.loss), {
        let (g, loss) = small_cnn();
        ("cnn", g, loss)
    }];
    for (name, graph, loss) in &models {
        for (opt, slots) in optimizers {
            let before = ctx.counters().bytes();
            let mut exec = GpuExecutor::new(&ctx, graph.clone(), *loss, opt, 0).unwrap();
            exec.prepare(&ctx, 32).unwrap();
            exec.prepare(&ctx, 7).unwrap();
            exec.set_clip_global_norm(&ctx, Some(1.0)).unwrap();
            let mem = exec.memory();
            let allocated = ctx.counters().bytes() - before;
            assert_eq!(mem.total(), allocated, "{name} {opt:?}: {mem:?}");
            assert_eq!(
                mem.optimizer_state,
                slots * mem.parameters,
                "{name} {opt:?}"
            );
            assert_eq!(mem.gradients, mem.parameters, "{name} {opt:?}");
            assert!(
                mem.scratch > 0 && mem.activations > 0 && mem.inputs > 0,
                "{mem:?}"
            );
        }
    }
}

/// A value read by two consumers (a residual connection around a bias-add and tanh) on the
/// GPU executor: its gradient is the sum of both uses, the un-fused bias-add runs out of
/// place, and `add` runs forward and backward. Tracks the CPU executor over 10 steps.
#[test]
fn a_value_with_two_consumers_trains_like_the_cpu() {
    use wgtrain::graph::CpuExecutor;
    let ctx = gpu();
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(8)]);
    let y = g.labels("y");
    let w1 = g.param("w1", &[8, 8], Init::GlorotUniform);
    let b1 = g.param("b1", &[8], Init::Constant(0.1));
    let z = g.matmul(x, w1).unwrap(); // read by the bias-add and by the residual add
    let a = g.bias_add(z, b1).unwrap();
    let h = g.activation(a, Activation::Tanh).unwrap();
    let r = g.add(h, z).unwrap();
    let w2 = g.param("w2", &[8, 5], Init::GlorotUniform);
    let b2 = g.param("b2", &[5], Init::Zeros);
    let out = g.matmul(r, w2).unwrap();
    let out = g.bias_add(out, b2).unwrap();
    let loss = g.softmax_xent(out, y).unwrap();
    let opt = Optimizer::Adam(AdamConfig::adam(1e-2));
    let mut gpu_exec = GpuExecutor::new(ctx, g.clone(), loss, opt, 11).unwrap();
    let mut cpu_exec = CpuExecutor::new(g.clone(), loss, opt, 11).unwrap();
    assert!(
        gpu_exec
            .graph()
            .nodes()
            .iter()
            .any(|n| n.op == wgtrain::graph::Op::Add),
        "the backward pass sums z's two gradients"
    );
    for t in 1..=10u64 {
        let (xs, ys) = batch(t, 12, 8, 5);
        let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];
        gpu_exec.step(ctx, 12, &feeds).unwrap();
        cpu_exec.step(12, &feeds).unwrap();
    }
    for p in g.params() {
        let want = to_f64(cpu_exec.param(p).unwrap().as_slice().unwrap());
        let name = &g.node(p).name;
        assert_close(
            name,
            &gpu_exec.read_param(ctx, p).unwrap(),
            &want,
            1e-4,
            1e-3,
        );
    }
}

/// Both executors behind the one training-step contract.
fn executors(m: &Mlp, opt: Optimizer, seed: u64) -> Vec<(&'static str, Box<dyn Executor>)> {
    let ctx = std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("a GPU adapter"));
    let gpu_exec = GpuExecutor::new(&ctx, m.graph.clone(), m.loss, opt, seed).unwrap();
    vec![
        (
            "gpu",
            Box::new(GpuSession {
                ctx,
                exec: gpu_exec,
            }),
        ),
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

/// A GELU MLP (whose gradient reads the pre-activation, kept alive for the backward pass)
/// trains the same on both executors.
#[test]
fn gelu_mlp_tracks_cpu() {
    let ctx = gpu();
    let m = mlp(12, &[16], 5, Activation::Gelu);
    let opt = Optimizer::Sgd(SgdConfig::new(0.1));
    let mut g = GpuExecutor::new(ctx, m.graph.clone(), m.loss, opt, 8).unwrap();
    let mut c = CpuExecutor::new(m.graph.clone(), m.loss, opt, 8).unwrap();
    for t in 1..=10u64 {
        let (x, y) = batch(t, 16, 12, 5);
        let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
        g.step(ctx, 16, &feeds).unwrap();
        c.step(16, &feeds).unwrap();
    }
    for p in m.graph.params() {
        let want = to_f64(c.param(p).unwrap().as_slice().unwrap());
        assert_close("param", &g.read_param(ctx, p).unwrap(), &want, 1e-4, 1e-3);
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

/// Concatenation (channels of images, features of matrices), its slices in the backward
/// pass and the elementwise product run on the GPU as the CPU reference computes them: two
/// convolution branches concatenated, gated by a third, concatenated with the input again
/// (one value read by two concatenations), then pooled, flattened and joined to a dense
/// branch.
#[test]
fn concatenation_and_products_train_like_the_cpu() {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(7), Dim::Fixed(5)],
    );
    let y = g.labels("y");
    let conv = |g: &mut Graph, name: &str, out: usize| {
        let w = g.param(&format!("{name}.w"), &[out, 3, 3, 3], Init::HeUniform);
        let b = g.param(&format!("{name}.b"), &[out], Init::Constant(0.1));
        g.conv2d(x, w, b, 1, 1).unwrap()
    };
    let a = conv(&mut g, "a", 4);
    let b = conv(&mut g, "b", 2);
    let c = conv(&mut g, "c", 6);
    let ab = g.concat(&[a, b]).unwrap();
    let gate = g.activation(c, Activation::Sigmoid).unwrap();
    let gated = g.mul(ab, gate).unwrap();
    let h = g.concat(&[x, gated, a]).unwrap();
    let h = g.avg_pool2d(h, 2, 2).unwrap();
    let h = g.flatten(h).unwrap();
    let width = match g.node(h).shape[1] {
        Dim::Fixed(n) => n,
        Dim::Batch => unreachable!(),
    };
    let xf = g.flatten(x).unwrap();
    let wf = g.param("wf", &[3 * 7 * 5, 3], Init::GlorotUniform);
    let f = g.matmul(xf, wf).unwrap();
    let h = g.concat(&[f, h]).unwrap();
    let wd = g.param("wd", &[width + 3, 5], Init::GlorotUniform);
    let z = g.matmul(h, wd).unwrap();
    let loss = g.softmax_xent(z, y).unwrap();
    let (gm, cm) = train_alike_for_8_steps(&g, (x, y, loss), 3 * 7 * 5, 5);
    assert!(
        (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
        "{gm:?} vs {cm:?}"
    );
}

/// Broadcasting runs on the GPU as the CPU reference computes it: squeeze-and-excitation
/// gates repeated over height and width, and a per-position mask repeated over channels,
/// with their gradients summed back over the repeated axes.
#[test]
fn broadcasting_trains_like_the_cpu() {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(6), Dim::Fixed(7)],
    );
    let y = g.labels("y");
    let w = g.param("w", &[4, 3, 3, 3], Init::HeUniform);
    let b = g.param("b", &[4], Init::Constant(0.1));
    let h = g.conv2d(x, w, b, 1, 1).unwrap();
    let pooled = g.global_avg_pool(h).unwrap();
    let wg = g.param("wg", &[4, 4], Init::GlorotUniform);
    let gate = g.matmul(pooled, wg).unwrap();
    let gate = g.activation(gate, Activation::Sigmoid).unwrap();
    let gate = g
        .reshape(
            gate,
            &[Dim::Batch, Dim::Fixed(4), Dim::Fixed(1), Dim::Fixed(1)],
        )
        .unwrap();
    let full = [Dim::Batch, Dim::Fixed(4), Dim::Fixed(6), Dim::Fixed(7)];
    let gate = g.broadcast(gate, &full).unwrap();
    let gated = g.mul(h, gate).unwrap();
    let wm = g.param("wm", &[1, 4, 1, 1], Init::GlorotUniform);
    let bm = g.param("bm", &[1], Init::Zeros);
    let mask = g.conv2d(gated, wm, bm, 1, 0).unwrap();
    let mask = g.broadcast(mask, &full).unwrap();
    let h = g.add(gated, mask).unwrap();
    let h = g.flatten(h).unwrap();
    let wd = g.param("wd", &[4 * 6 * 7, 5], Init::GlorotUniform);
    let z = g.matmul(h, wd).unwrap();
    let loss = g.softmax_xent(z, y).unwrap();
    train_alike_for_8_steps(&g, (x, y, loss), 3 * 6 * 7, 8);
}
