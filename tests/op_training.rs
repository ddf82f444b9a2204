//! Ops trained through both executors, GPU against CPU over several steps: dropout,
//! binary losses, convolutions, values read twice, GELU, concatenation, products and
//! broadcasting, each on both kernel plans (`common::for_each_plan`). Tolerances as in
//! tests/executor.rs.

mod common;

use common::mlp::*;
use common::*;
use wgtrain::graph::{
    CpuExecutor, Dim, ElementwiseOp, Executor, Feed, GpuExecutor, Graph, Init, NodeId,
};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer, SgdConfig};

/// Dropout, global-norm clipping and a pointwise loss on both executors: the dropout masks
/// are the same hash on both, so the runs agree to f32 rounding.
#[test]
fn dropout_clipping_and_binary_loss_agree_on_cpu_and_gpu() {
    use wgtrain::graph::CpuExecutor;
    use wgtrain::ops::PointwiseLoss;
    for_each_plan(|ctx| {
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
        ge.set_clip_global_norm(Some(0.05)).unwrap();
        ce.set_clip_global_norm(Some(0.05)).unwrap();
        assert!(ce.set_clip_global_norm(Some(-1.0)).is_err());
        for step in 1..=15u64 {
            let (xs, labels) = batch(step, 16, 12, 2);
            let ts: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let feeds = [(x, Feed::F32(&xs)), (t, Feed::F32(&ts))];
            ge.step(16, &feeds).unwrap();
            ce.step(16, &feeds).unwrap();
        }
        for p in g.params() {
            let want = to_f64(ce.param(p).unwrap().as_slice().unwrap());
            assert_close("param", &ge.read_param(p).unwrap(), &want, 1e-4, 1e-3);
        }
        let (gm, cm) = (ge.metrics().unwrap(), ce.metrics().unwrap());
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
            ge.reset_metrics().unwrap();
            ge.evaluate_batch(16, &feeds).unwrap();
            losses.push(ge.metrics().unwrap().mean_loss);
        }
        ce.reset_metrics().unwrap();
        ce.evaluate_batch(16, &feeds).unwrap();
        assert_eq!(losses[0], losses[1]);
        assert!(
            (losses[0] - ce.metrics().unwrap().mean_loss).abs() < 1e-4,
            "{losses:?}"
        );
    });
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
    for (gm, cm) in train_alike_for_8_steps(&g, (x, y, loss), 3 * 11 * 9, 3) {
        assert!(
            (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
            "{gm:?} vs {cm:?}"
        );
    }
}

/// Trains `g` (image input `x` of `features` values, labels `y`, five classes) with Adam for 8
/// steps of 6 rows on both executors from `seed`, on each kernel plan, checks that their
/// parameters agree, and returns both executors' metrics for each plan.
fn train_alike_for_8_steps(
    g: &Graph,
    (x, y, loss): (NodeId, NodeId, NodeId),
    features: usize,
    seed: u64,
) -> Vec<(wgtrain::ops::Metrics, wgtrain::ops::Metrics)> {
    use wgtrain::graph::CpuExecutor;
    let mut metrics = Vec::new();
    for_each_plan(|ctx| {
        let opt = Optimizer::Adam(AdamConfig::adam(1e-2));
        let mut ge = GpuExecutor::new(ctx, g.clone(), loss, opt, seed).unwrap();
        let mut ce = CpuExecutor::new(g.clone(), loss, opt, seed).unwrap();
        for step in 1..=8u64 {
            let (xs, ys) = batch(step, 6, features, 5);
            let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];
            ge.step(6, &feeds).unwrap();
            ce.step(6, &feeds).unwrap();
        }
        for p in g.params() {
            let want = to_f64(ce.param(p).unwrap().as_slice().unwrap());
            assert_close(
                &g.node(p).name,
                &ge.read_param(p).unwrap(),
                &want,
                1e-4,
                1e-3,
            );
        }
        metrics.push((ge.metrics().unwrap(), ce.metrics().unwrap()));
    });
    metrics
}

/// A value read by two consumers (a residual connection around a bias-add and tanh) on the
/// GPU executor: its gradient is the sum of both uses, the un-fused bias-add runs out of
/// place, and `add` runs forward and backward. Tracks the CPU executor over 10 steps.
#[test]
fn a_value_with_two_consumers_trains_like_the_cpu() {
    use wgtrain::graph::CpuExecutor;
    for_each_plan(|ctx| {
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
                .any(|n| n.op == wgtrain::graph::Op::Elementwise(ElementwiseOp::Add)),
            "the backward pass sums z's two gradients"
        );
        for t in 1..=10u64 {
            let (xs, ys) = batch(t, 12, 8, 5);
            let feeds = [(x, Feed::F32(&xs)), (y, Feed::U32(&ys))];
            gpu_exec.step(12, &feeds).unwrap();
            cpu_exec.step(12, &feeds).unwrap();
        }
        for p in g.params() {
            let want = to_f64(cpu_exec.param(p).unwrap().as_slice().unwrap());
            let name = &g.node(p).name;
            assert_close(name, &gpu_exec.read_param(p).unwrap(), &want, 1e-4, 1e-3);
        }
    });
}

/// A GELU MLP (whose gradient reads the pre-activation, kept alive for the backward pass)
/// trains the same on both executors.
#[test]
fn gelu_mlp_tracks_cpu() {
    for_each_plan(|ctx| {
        let m = mlp(12, &[16], 5, Activation::Gelu);
        let opt = Optimizer::Sgd(SgdConfig::new(0.1));
        let mut g = GpuExecutor::new(ctx, m.graph.clone(), m.loss, opt, 8).unwrap();
        let mut c = CpuExecutor::new(m.graph.clone(), m.loss, opt, 8).unwrap();
        for t in 1..=10u64 {
            let (x, y) = batch(t, 16, 12, 5);
            let feeds = [(m.x, Feed::F32(&x)), (m.y, Feed::U32(&y))];
            g.step(16, &feeds).unwrap();
            c.step(16, &feeds).unwrap();
        }
        for p in m.graph.params() {
            let want = to_f64(c.param(p).unwrap().as_slice().unwrap());
            assert_close("param", &g.read_param(p).unwrap(), &want, 1e-4, 1e-3);
        }
    });
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
    for (gm, cm) in train_alike_for_8_steps(&g, (x, y, loss), 3 * 7 * 5, 5) {
        assert!(
            (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
            "{gm:?} vs {cm:?}"
        );
    }
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

/// Permute on the GPU as the CPU reference computes it: a channels-last input turned
/// channels-first before a convolution, and the feature maps read channels last again by
/// the dense head, with both gradients (inverse orders) in the backward pass.
#[test]
fn permute_trains_like_the_cpu() {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(7), Dim::Fixed(5), Dim::Fixed(3)],
    );
    let y = g.labels("y");
    let nchw = g.permute(x, &[0, 3, 1, 2]).unwrap();
    let w = g.param("w", &[4, 3, 3, 3], Init::HeUniform);
    let b = g.param("b", &[4], Init::Constant(0.1));
    let h = g.conv2d(nchw, w, b, 1, 1).unwrap();
    let h = g.activation(h, Activation::Relu).unwrap();
    let nhwc = g.permute(h, &[0, 2, 3, 1]).unwrap();
    let h = g.flatten(nhwc).unwrap();
    let wd = g.param("wd", &[7 * 5 * 4, 5], Init::GlorotUniform);
    let z = g.matmul(h, wd).unwrap();
    let loss = g.softmax_xent(z, y).unwrap();
    for (gm, cm) in train_alike_for_8_steps(&g, (x, y, loss), 7 * 5 * 3, 9) {
        assert!(
            (gm.mean_loss - cm.mean_loss).abs() < 1e-3 * cm.mean_loss,
            "{gm:?} vs {cm:?}"
        );
    }
}
