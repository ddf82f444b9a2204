//! The GPU executor against the CPU executor: the golden step, every optimizer over 50
//! steps, training behaviour, determinism, partial batches, metrics and steady-state resource
//! use. Gradient tolerances follow ARCHITECTURE.md, "Testing" (rtol 1e-3 / atol 1e-4);
//! parameters after 50 steps: rtol 1e-3 / atol 1e-4 (f32 rounding compounds over steps).

mod common;

use std::collections::HashMap;

use common::mlp::*;
use common::*;
use ndarray::{Array1, ArrayViewMut1};
use wgtrain::graph::{CpuRun, Dim, Executor, Feed, GpuExecutor, Graph, Init, NodeId};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, LionConfig, Optimizer, SgdConfig};

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
    exec.step(rows, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();

    let g = exec.graph();
    let run = CpuRun::<f64>::new(g, 5);
    let vals = run
        .eval(g, &cpu_feeds(&m, &x, &y), g.last().unwrap())
        .unwrap();
    let loss_cpu = CpuRun::scalar(&vals, m.loss).unwrap();
    let loss_gpu = exec.read_node(rows, m.loss).unwrap()[0] as f64;
    assert!(
        (loss_gpu - loss_cpu).abs() < 1e-4 * loss_cpu.abs() + 1e-5,
        "loss {loss_gpu} vs {loss_cpu}"
    );
    for p in g.params() {
        let gi = g.index(exec.gradients().of(p).unwrap());
        let want = vals[gi].as_ref().unwrap().float().unwrap();
        let got = exec.read_grad(p).unwrap();
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
            exec.step(16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
                .unwrap();
        }
        let cpu = cpu_train(&m, exec.graph(), exec.gradients(), opt, 3, 50);
        for p in exec.graph().params() {
            let want = to_f64(cpu.params[&p].as_slice().unwrap());
            assert_close(
                &format!("{opt:?} {}", exec.graph().node(p).name),
                &exec.read_param(p).unwrap(),
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
        exec.step(256, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
            .unwrap();
    }
    exec.reset_metrics().unwrap();
    exec.evaluate_batch(256, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();
    let metrics = exec.metrics().unwrap();
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
            exec.step(16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
                .unwrap();
        }
        m.graph
            .params()
            .iter()
            .flat_map(|&p| exec.read_param(p).unwrap())
            .map(f32::to_bits)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(20), run(20));

    // A private context: the shared one counts other tests' buffers too.
    let own =
        std::sync::Arc::new(wgtrain::gpu::GpuContext::new().expect("GPU tests need an adapter"));
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
    exec.step(128, &feeds).unwrap();
    let (buffers, submissions) = (ctx.counters().buffers(), ctx.counters().submissions());
    for _ in 0..1000 {
        exec.step(128, &feeds).unwrap();
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
    exec.prepare(32).unwrap();
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
    exec.step(16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();
    let w = m.graph.params()[0];
    let before = exec.read_param(w).unwrap();
    let (x5, y5) = batch(2, 5, 12, 10);
    exec.step(5, &[(m.x, Feed::F32(&x5)), (m.y, Feed::U32(&y5))])
        .unwrap();
    assert_ne!(
        exec.read_param(w).unwrap(),
        before,
        "the partial batch updates the same weights"
    );
    assert_eq!(exec.steps(), 2);

    let err = exec
        .step(16, &[(m.x, Feed::F32(&x5)), (m.y, Feed::U32(&y))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input `x` needs 192 values at batch 16, got 60"),
        "{err}"
    );
    let err = exec
        .step(16, &[(m.x, Feed::U32(&y)), (m.y, Feed::U32(&y))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong element type"), "{err}");
    assert!(exec.set_lr(f32::NAN).is_err());
    exec.set_lr(0.0).unwrap();
    let frozen = exec.read_param(w).unwrap();
    exec.step(16, &[(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))])
        .unwrap();
    assert_eq!(exec.read_param(w).unwrap(), frozen, "lr 0 changes nothing");
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
        g.step(16, &feeds).unwrap();
        c.step(16, &feeds).unwrap();
    }
    for p in m.graph.params() {
        let want = to_f64(c.param(p).unwrap().as_slice().unwrap());
        assert_close("param", &g.read_param(p).unwrap(), &want, 1e-4, 1e-3);
    }
    let (gm, cm) = (g.metrics().unwrap(), c.metrics().unwrap());
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
        gpu_exec.reset_metrics().unwrap();
        gpu_exec
            .evaluate_batch(rows, &[(m.x, Feed::F32(x)), (m.y, Feed::U32(y))])
            .unwrap();
        gpu_exec.metrics().unwrap().mean_loss as f64
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
    gpu_exec.reset_metrics().unwrap();
    for (rows, x, y) in [(8, &x8, &y8), (2, &x2, &y2)] {
        let feeds = [(m.x, Feed::F32(x)), (m.y, Feed::U32(y))];
        gpu_exec.evaluate_batch(rows, &feeds).unwrap();
        cpu_exec.evaluate_batch(rows, &feeds).unwrap();
    }
    for (who, got) in [
        ("gpu", gpu_exec.metrics().unwrap()),
        ("cpu", cpu_exec.metrics().unwrap()),
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
        exec.evaluate_batch(rows, &[(x, Feed::F32(&xs)), (t, Feed::F32(&ts))])
            .unwrap();
    }
    let got = exec.metrics().unwrap();
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
    let ctx = std::sync::Arc::new(
        wgtrain::gpu::GpuContext::new().expect("a GPU adapter (lavapipe on CI)"),
    );
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
            exec.prepare(32).unwrap();
            exec.prepare(7).unwrap();
            exec.set_clip_global_norm(Some(1.0)).unwrap();
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
