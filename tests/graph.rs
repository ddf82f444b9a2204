//! Graph building, shape errors, and finite-difference checks of every backward rule in f64
//! on the CPU executor (central differences, h = 1e-6; tolerance atol 1e-7 + rtol 1e-5, far
//! above f64 rounding at this h and far below any wrong rule).

use std::collections::HashMap;

use ndarray::{Array1, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use wgtrain::graph::{CpuRun, Dim, ElementwiseOp, Gradients, Graph, Init, NodeId, Op, Value};
use wgtrain::ops::{Activation, PointwiseLoss};

const B: usize = 3;

fn rand_array(seed: u64, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let n = shape.iter().product();
    ArrayD::from_shape_vec(
        IxDyn(shape),
        (0..n).map(|_| rng.random_range(lo..hi)).collect(),
    )
    .unwrap()
}

/// Checks d loss / d p for every parameter p against central differences.
fn gradcheck(g: &mut Graph, loss: NodeId, feeds: HashMap<NodeId, Value<f64>>) -> Gradients {
    let grads = g.backward(loss).unwrap();
    let mut run = CpuRun::<f64>::new(g, 42);
    // Training mode at a fixed step: dropout draws one fixed mask, so the loss is a function.
    run.training_step = Some(7);
    // Random, not-too-small parameters keep ReLU inputs away from its kink.
    for (i, (_, p)) in run.params.iter_mut().enumerate() {
        *p = rand_array(100 + i as u64, p.shape(), -1.0, 1.0);
    }
    let vals = run.eval(g, &feeds, g.last().unwrap()).unwrap();
    let params = g.params();
    assert!(!params.is_empty());
    for p in params {
        let gid = grads
            .of(p)
            .unwrap_or_else(|| panic!("no gradient for `{}`", g.node(p).name));
        let analytic = vals[g.index(gid)]
            .as_ref()
            .unwrap()
            .float()
            .unwrap()
            .clone();
        let h = 1e-6;
        let n = run.params[&p].len();
        for j in 0..n {
            let mut plus = run.clone();
            plus.params.get_mut(&p).unwrap().as_slice_mut().unwrap()[j] += h;
            let mut minus = run.clone();
            minus.params.get_mut(&p).unwrap().as_slice_mut().unwrap()[j] -= h;
            let lp = CpuRun::scalar(&plus.eval(g, &feeds, loss).unwrap(), loss).unwrap();
            let lm = CpuRun::scalar(&minus.eval(g, &feeds, loss).unwrap(), loss).unwrap();
            let numeric = (lp - lm) / (2.0 * h);
            let a = analytic.as_slice().unwrap()[j];
            assert!(
                (a - numeric).abs() <= 1e-7 + 1e-5 * numeric.abs(),
                "`{}`[{j}]: analytic {a}, numeric {numeric}",
                g.node(p).name
            );
        }
    }
    grads
}

fn feeds(pairs: Vec<(NodeId, Value<f64>)>) -> HashMap<NodeId, Value<f64>> {
    pairs.into_iter().collect()
}

fn x_input(g: &mut Graph, cols: usize) -> (NodeId, Value<f64>) {
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(cols)]);
    (x, Value::Float(rand_array(1, &[B, cols], -1.0, 1.0)))
}

fn target(g: &mut Graph, cols: usize, binary: bool) -> (NodeId, Value<f64>) {
    let t = g.input("t", &[Dim::Batch, Dim::Fixed(cols)]);
    let v = rand_array(2, &[B, cols], 0.0, 1.0);
    (t, Value::Float(if binary { v.mapv(f64::round) } else { v }))
}

#[test]
fn matmul_every_transpose() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (m, k, n) = (3, 4, 5);
        let mut g = Graph::new();
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = g.param("a", &a_shape, Init::Zeros);
        let b = g.param("b", &b_shape, Init::Zeros);
        let c = g.matmul_t(a, b, ta, tb).unwrap();
        let t = g.input("t", &[Dim::Fixed(m), Dim::Fixed(n)]);
        let loss = g.loss(PointwiseLoss::MeanSquaredError, c, t).unwrap();
        gradcheck(
            &mut g,
            loss,
            feeds(vec![(t, Value::Float(rand_array(3, &[m, n], -1.0, 1.0)))]),
        );
    }
}

#[test]
fn dense_layer_with_each_activation() {
    for act in [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Identity,
        Activation::Gelu,
        Activation::Silu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Softplus,
    ] {
        let mut g = Graph::new();
        let (x, xv) = x_input(&mut g, 4);
        let w = g.param("w", &[4, 5], Init::Zeros);
        let b = g.param("b", &[5], Init::Zeros);
        let h = g.matmul(x, w).unwrap();
        let z = g.bias_add(h, b).unwrap();
        let y = g.activation(z, act).unwrap();
        let (t, tv) = target(&mut g, 5, false);
        let loss = g.loss(PointwiseLoss::MeanSquaredError, y, t).unwrap();
        gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv)]));
    }
}

#[test]
fn softmax_and_losses() {
    // softmax -> MSE
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 4);
    let w = g.param("w", &[4, 6], Init::Zeros);
    let z = g.matmul(x, w).unwrap();
    let p = g.softmax(z).unwrap();
    let (t, tv) = target(&mut g, 6, false);
    let loss = g.loss(PointwiseLoss::MeanSquaredError, p, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv.clone()), (t, tv)]));

    // fused softmax cross-entropy
    let mut g = Graph::new();
    let (x, xv2) = x_input(&mut g, 4);
    let labels = g.labels("y");
    let w = g.param("w", &[4, 6], Init::Zeros);
    let b = g.param("b", &[6], Init::Zeros);
    let h = g.matmul(x, w).unwrap();
    let z = g.bias_add(h, b).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let lv = Value::Labels(Array1::from(vec![0u32, 5, 2]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv2), (labels, lv)]));

    // BCE on probabilities and on logits
    for kind in [
        PointwiseLoss::BinaryCrossEntropy,
        PointwiseLoss::BinaryCrossEntropyWithLogits,
    ] {
        let mut g = Graph::new();
        let (x, xv) = x_input(&mut g, 4);
        let w = g.param("w", &[4, 2], Init::Zeros);
        let z = g.matmul(x, w).unwrap();
        let pred = if kind == PointwiseLoss::BinaryCrossEntropy {
            g.activation(z, Activation::Sigmoid).unwrap()
        } else {
            z
        };
        let (t, tv) = target(&mut g, 2, true);
        let loss = g.loss(kind, pred, t).unwrap();
        gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv)]));
    }
}

#[test]
fn reshape_and_shared_parameters() {
    // A parameter reshaped before use: the gradient flows back through the reshape.
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 4);
    let w = g.param("w", &[2, 6], Init::Zeros);
    let w43 = g.reshape(w, &[Dim::Fixed(4), Dim::Fixed(3)]).unwrap();
    let z = g.matmul(x, w43).unwrap();
    let (t, tv) = target(&mut g, 3, false);
    let loss = g.loss(PointwiseLoss::MeanSquaredError, z, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv.clone()), (t, tv.clone())]));

    // One activation read twice (a residual sum): its gradient is the sum of both uses.
    let mut g = Graph::new();
    let (x, _) = x_input(&mut g, 4);
    let w = g.param("w", &[4, 3], Init::Zeros);
    let a = g.matmul(x, w).unwrap();
    let r = g.activation(a, Activation::Tanh).unwrap();
    let w2 = g.param("w2", &[3, 3], Init::Zeros);
    let b = g.matmul(r, w2).unwrap();
    let s = g.add(a, b).unwrap();
    let (t, tv3) = target(&mut g, 3, false);
    let loss = g.loss(PointwiseLoss::MeanSquaredError, s, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv.clone()), (t, tv3.clone())]));

    // One parameter used by two layers (tied weights): its gradient sums both uses.
    let mut g = Graph::new();
    let (x, _) = x_input(&mut g, 4);
    let w1 = g.param("w1", &[4, 3], Init::Zeros);
    let shared = g.param("shared", &[3, 3], Init::Zeros);
    let h = g.matmul(x, w1).unwrap();
    let h = g.activation(h, Activation::Tanh).unwrap();
    let h = g.matmul(h, shared).unwrap();
    let h = g.activation(h, Activation::Tanh).unwrap();
    let out = g.matmul(h, shared).unwrap();
    let (t, _) = target(&mut g, 3, false);
    let loss = g.loss(PointwiseLoss::MeanSquaredError, out, t).unwrap();
    let grads = gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv3)]));
    // The summed gradient is one node: an `add` of the two uses' weight gradients.
    let d_shared = grads.of(shared).expect("the shared weight has a gradient");
    assert_eq!(g.node(d_shared).op, Op::Elementwise(ElementwiseOp::Add));
}

#[test]
fn two_layer_mlp() {
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(3)]);
    let labels = g.labels("y");
    let flat = g.flatten(x).unwrap();
    let w1 = g.param("w1", &[6, 5], Init::HeUniform);
    let b1 = g.param("b1", &[5], Init::Zeros);
    let w2 = g.param("w2", &[5, 4], Init::GlorotUniform);
    let b2 = g.param("b2", &[4], Init::Zeros);
    let h = g.matmul(flat, w1).unwrap();
    let h = g.bias_add(h, b1).unwrap();
    let h = g.activation(h, Activation::Relu).unwrap();
    let z = g.matmul(h, w2).unwrap();
    let z = g.bias_add(z, b2).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let xv = Value::Float(rand_array(9, &[B, 2, 3], -1.0, 1.0));
    gradcheck(
        &mut g,
        loss,
        feeds(vec![
            (x, xv),
            (labels, Value::Labels(Array1::from(vec![3u32, 0, 1]))),
        ]),
    );
}

#[test]
fn bad_graphs_give_clear_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(4)]);
    let w = g.param("w", &[5, 3], Init::Zeros);
    let err = g.matmul(x, w).unwrap_err().to_string();
    assert!(
        err.contains("matmul") && err.contains("(batch, 4)") && err.contains("(5, 3)"),
        "{err}"
    );
    let b = g.param("b", &[7], Init::Zeros);
    let w4 = g.param("w4", &[4, 3], Init::Zeros);
    let h = g.matmul(x, w4).unwrap();
    let err = g.bias_add(h, b).unwrap_err().to_string();
    assert!(err.contains("bias") && err.contains("(3)"), "{err}");
    // The gradient of a non-scalar.
    let err = g.backward(h).unwrap_err().to_string();
    assert!(err.contains("scalar loss"), "{err}");
    // A node from another graph.
    let mut other = Graph::new();
    for i in 0..20 {
        other.param(&format!("p{i}"), &[1], Init::Zeros);
    }
    let foreign = other.last().unwrap();
    let err = g
        .activation(foreign, Activation::Relu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in this graph"), "{err}");
    // ... also when its index is in range here.
    let mut small = Graph::new();
    let in_range = small.param("p", &[4], Init::Zeros);
    assert!(g.index(in_range) < g.len() && !g.contains(in_range));
    let err = g
        .activation(in_range, Activation::Relu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in this graph"), "{err}");
    // A missing or misshapen feed.
    let labels = g.labels("y");
    let loss = g.softmax_xent(h, labels).unwrap();
    let run = CpuRun::<f64>::new(&g, 0);
    let err = run.eval(&g, &HashMap::new(), loss).unwrap_err().to_string();
    assert!(err.contains("no value fed for input `x`"), "{err}");
    let bad = feeds(vec![
        (x, Value::Float(rand_array(1, &[2, 5], 0.0, 1.0))),
        (labels, Value::Labels(Array1::from(vec![0u32, 1]))),
    ]);
    let err = run.eval(&g, &bad, loss).unwrap_err().to_string();
    assert!(err.contains("input `x` should be [2, 4]"), "{err}");
}

#[test]
fn initializers_are_seeded_and_scaled() {
    let a = Init::GlorotUniform.values(&[300, 100], 7);
    assert_eq!(a, Init::GlorotUniform.values(&[300, 100], 7));
    assert_ne!(a, Init::GlorotUniform.values(&[300, 100], 8));
    let limit = (6.0f32 / 400.0).sqrt();
    assert!(a.iter().all(|v| v.abs() <= limit));
    let he = Init::HeNormal.values(&[500, 200], 1);
    let var = he.iter().map(|v| v * v).sum::<f32>() / he.len() as f32;
    assert!(
        (var - 2.0 / 500.0).abs() < 0.1 * 2.0 / 500.0,
        "variance {var}"
    );
}

#[test]
fn dropout_backward_and_masks() {
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 5);
    let labels = g.labels("y");
    let w = g.param("w", &[5, 8], Init::GlorotUniform);
    let b = g.param("b", &[8], Init::Zeros);
    let w2 = g.param("w2", &[8, 3], Init::GlorotUniform);
    let h = g.matmul(x, w).unwrap();
    let h = g.bias_add(h, b).unwrap();
    let h = g.activation(h, Activation::Tanh).unwrap();
    let h = g.dropout(h, 0.5, 9).unwrap();
    let z = g.matmul(h, w2).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![0u32, 2, 1]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));

    // The mask keeps about 1 - rate of the elements, scaled by 1 / (1 - rate); it changes
    // with the step and the seed; evaluation is the identity.
    let ones = ArrayD::<f64>::ones(IxDyn(&[100_000]));
    for rate in [0.1f32, 0.5, 0.8] {
        let y = wgtrain::unstable::cpu::dropout(ones.view(), rate, 3, 1, true);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / 1e5;
        assert!(
            (kept - (1.0 - rate as f64)).abs() < 0.01,
            "rate {rate}: kept {kept}"
        );
        let scale = 1.0 / (1.0 - rate as f64);
        assert!(y
            .iter()
            .all(|&v| v == 0.0 || (v - scale).abs() < 1e-6 * scale));
        let other_step = wgtrain::unstable::cpu::dropout(ones.view(), rate, 3, 2, true);
        let other_seed = wgtrain::unstable::cpu::dropout(ones.view(), rate, 4, 1, true);
        assert_ne!(y, other_step);
        assert_ne!(y, other_seed);
        assert_eq!(
            y,
            wgtrain::unstable::cpu::dropout(ones.view(), rate, 3, 1, true)
        );
    }
    assert_eq!(
        wgtrain::unstable::cpu::dropout(ones.view(), 0.5, 3, 1, false),
        ones
    );
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(2)]);
    let err = g.dropout(x, 1.0, 0).unwrap_err().to_string();
    assert!(err.contains("[0, 1)"), "{err}");
}

fn image_input(g: &mut Graph, c: usize, h: usize, w: usize, seed: u64) -> (NodeId, Value<f64>) {
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
    );
    (x, Value::Float(rand_array(seed, &[B, c, h, w], -1.0, 1.0)))
}

#[test]
fn convolution_and_pooling_backward() {
    // conv (padding 1) -> tanh -> 3x3/2 max pool -> conv (stride 2, padding 2) -> 2x2/1
    // average pool -> global average pool -> cross-entropy: every conv/pool rule, and the
    // input gradient of the second convolution flowing into the first one's parameters.
    let mut g = Graph::new();
    let (x, xv) = image_input(&mut g, 2, 9, 9, 11);
    let labels = g.labels("y");
    let w1 = g.param("w1", &[3, 2, 3, 3], Init::GlorotUniform);
    let b1 = g.param("b1", &[3], Init::Zeros);
    let w2 = g.param("w2", &[4, 3, 3, 3], Init::GlorotUniform);
    let b2 = g.param("b2", &[4], Init::Zeros);
    let h = g.conv2d(x, w1, b1, 1, 1).unwrap();
    let h = g.activation(h, Activation::Tanh).unwrap();
    let h = g.max_pool2d(h, 3, 2).unwrap();
    assert_eq!(
        g.node(h).shape,
        [Dim::Batch, Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)]
    );
    let h = g.conv2d(h, w2, b2, 2, 2).unwrap();
    assert_eq!(g.node(h).shape[2..], [Dim::Fixed(3), Dim::Fixed(3)]);
    let h = g.avg_pool2d(h, 2, 1).unwrap();
    let z = g.global_avg_pool(h).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![0u32, 3, 1]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));

    // A 5x5 kernel with stride 2 on a non-square image, then a dense layer.
    let mut g = Graph::new();
    let (x, xv) = image_input(&mut g, 1, 7, 9, 12);
    let labels = g.labels("y");
    let w = g.param("w", &[2, 1, 5, 5], Init::HeUniform);
    let b = g.param("b", &[2], Init::Constant(0.1));
    let h = g.conv2d(x, w, b, 2, 2).unwrap();
    assert_eq!(
        g.node(h).shape[1..],
        [Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(5)]
    );
    let h = g.avg_pool2d(h, 2, 2).unwrap();
    let h = g.flatten(h).unwrap();
    let wd = g.param("wd", &[8, 3], Init::GlorotUniform);
    let z = g.matmul(h, wd).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![2u32, 0, 1]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));
}

#[test]
fn convolution_shape_errors_name_the_problem() {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)],
    );
    let flat = g.input("f", &[Dim::Batch, Dim::Fixed(10)]);
    let w = g.param("w", &[4, 2, 3, 3], Init::Zeros);
    let b = g.param("b", &[4], Init::Zeros);
    let err = g.conv2d(x, w, b, 1, 0).unwrap_err().to_string();
    assert!(err.contains("the weight must be (4, 3, 3, 3)"), "{err}");
    let w = g.param("w3", &[4, 3, 3, 3], Init::Zeros);
    let b5 = g.param("b5", &[5], Init::Zeros);
    let err = g.conv2d(x, w, b5, 1, 0).unwrap_err().to_string();
    assert!(err.contains("the bias must be (4)"), "{err}");
    let err = g.conv2d(flat, w, b, 1, 0).unwrap_err().to_string();
    assert!(err.contains("(batch, channels, height, width)"), "{err}");
    let err = g.max_pool2d(x, 9, 1).unwrap_err().to_string();
    assert!(
        err.contains("9x9 window") && err.contains("does not fit 8x8"),
        "{err}"
    );
    let err = g.conv2d(x, w, b, 0, 0).unwrap_err().to_string();
    assert!(err.contains("stride 0"), "{err}");
}

/// GELU against its published tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
/// (PyTorch's `gelu(x, approximate='tanh')`: 0.8411920 at 1, -0.1588080 at -1).
#[test]
fn gelu_is_the_tanh_form() {
    let k0 = (2.0 / std::f64::consts::PI).sqrt();
    for i in -120..=120 {
        let x = i as f64 / 10.0;
        let want = 0.5 * x * (1.0 + (k0 * (x + 0.044715 * x * x * x)).tanh());
        let got = Activation::Gelu.apply(x);
        assert!(
            (got - want).abs() <= 1e-12 + 1e-9 * want.abs(),
            "x={x}: {got} vs {want}"
        );
    }
    assert!((Activation::Gelu.apply(1.0f32) - 0.841_192).abs() < 1e-6);
    assert!((Activation::Gelu.apply(-1.0f32) + 0.158_808).abs() < 1e-6);
    assert_eq!(Activation::Gelu.apply(f32::NEG_INFINITY), 0.0);
    assert!(Activation::Gelu.apply(f32::NAN).is_nan());
}

/// The newer activations against published values (PyTorch: `F.silu`, `F.leaky_relu` with
/// its default slope 0.01, `F.elu` with alpha 1, `F.softplus`), and their edges.
#[test]
fn silu_leaky_relu_elu_and_softplus_match_published_values() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(Activation::Silu.apply(1.0), 0.731_058_6));
    assert!(close(Activation::Silu.apply(-2.0), -0.238_405_8));
    assert!(close(Activation::LeakyRelu.apply(-2.0), -0.02));
    assert!(close(Activation::LeakyRelu.apply(3.0), 3.0));
    assert!(close(Activation::Elu.apply(-1.0), -0.632_120_6));
    assert!(close(Activation::Elu.apply(2.5), 2.5));
    assert!(close(Activation::Softplus.apply(1.0), 1.313_261_7));
    assert!(close(Activation::Softplus.apply(-1.0), 0.313_261_7));
    // No overflow far out, and NaN passes through.
    assert_eq!(Activation::Softplus.apply(1000.0f32), 1000.0);
    assert_eq!(Activation::Softplus.apply(-1000.0f32), 0.0);
    assert_eq!(Activation::Elu.apply(f32::NEG_INFINITY), -1.0);
    for act in [
        Activation::Silu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Softplus,
    ] {
        assert!(act.apply(f32::NAN).is_nan(), "{act:?}");
    }
}

/// Layer normalization's three gradients (x through the weights before it, gamma, beta)
/// against finite differences in f64, between two dense layers.
#[test]
fn layer_norm_backward() {
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 4);
    let w = g.param("w", &[4, 6], Init::Zeros);
    let b = g.param("b", &[6], Init::Zeros);
    let gamma = g.param("gamma", &[6], Init::Constant(1.0));
    let beta = g.param("beta", &[6], Init::Zeros);
    let w2 = g.param("w2", &[6, 3], Init::Zeros);
    let h = g.matmul(x, w).unwrap();
    let h = g.bias_add(h, b).unwrap();
    let n = g.layer_norm(h, gamma, beta, 1e-3).unwrap();
    let a = g.activation(n, Activation::Tanh).unwrap();
    let y = g.matmul(a, w2).unwrap();
    let (t, tv) = target(&mut g, 3, false);
    let loss = g.loss(PointwiseLoss::MeanSquaredError, y, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv)]));
    // Shapes and epsilon are checked where the op is added.
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(4)]);
    let gamma = g.param("gamma", &[5], Init::Constant(1.0));
    let beta = g.param("beta", &[4], Init::Zeros);
    let err = g.layer_norm(x, gamma, beta, 1e-3).unwrap_err().to_string();
    assert!(err.contains("gamma must have shape (4)"), "{err}");
    let gamma = g.param("gamma4", &[4], Init::Constant(1.0));
    let err = g.layer_norm(x, gamma, beta, 0.0).unwrap_err().to_string();
    assert!(err.contains("epsilon 0 must be positive"), "{err}");
}

/// Batch normalization's gradients (x through the layers before it, gamma, beta) against
/// finite differences in f64: 1-D between two dense layers, 2-D between a convolution and
/// global pooling.
#[test]
fn batch_norm_backward() {
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 4);
    let w = g.param("w", &[4, 5], Init::Zeros);
    let gamma = g.param("gamma", &[5], Init::Constant(1.0));
    let beta = g.param("beta", &[5], Init::Zeros);
    let rm = g.buffer("running_mean", &[5], Init::Zeros);
    let rv = g.buffer("running_var", &[5], Init::Constant(1.0));
    let w2 = g.param("w2", &[5, 3], Init::Zeros);
    let h = g.matmul(x, w).unwrap();
    let n = g.batch_norm(h, (gamma, beta), (rm, rv), 1e-5, 0.1).unwrap();
    let a = g.activation(n, Activation::Tanh).unwrap();
    let y = g.matmul(a, w2).unwrap();
    let (t, tv) = target(&mut g, 3, false);
    let loss = g.loss(PointwiseLoss::MeanSquaredError, y, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv)]));

    let mut g = Graph::new();
    let (x, xv) = image_input(&mut g, 2, 5, 4, 21);
    let labels = g.labels("y");
    let w = g.param("w", &[3, 2, 3, 3], Init::GlorotUniform);
    let b = g.param("b", &[3], Init::Zeros);
    let gamma = g.param("gamma", &[3], Init::Constant(1.0));
    let beta = g.param("beta", &[3], Init::Zeros);
    let rm = g.buffer("running_mean", &[3], Init::Zeros);
    let rv = g.buffer("running_var", &[3], Init::Constant(1.0));
    let h = g.conv2d(x, w, b, 1, 1).unwrap();
    let h = g.batch_norm(h, (gamma, beta), (rm, rv), 1e-5, 0.1).unwrap();
    let h = g.activation(h, Activation::Tanh).unwrap();
    let z = g.global_avg_pool(h).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![0u32, 2, 1]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));
}

/// Batch normalization against its closed form in f64: training normalizes each channel to
/// mean beta and standard deviation gamma (up to eps) and moves the running statistics by
/// momentum toward the batch's mean and unbiased variance; evaluation uses the running
/// statistics, and moves nothing.
#[test]
fn batch_norm_training_and_evaluation_closed_form() {
    let mut g = Graph::new();
    let x = g.input(
        "x",
        &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(1), Dim::Fixed(2)],
    );
    let gamma = g.param("gamma", &[2], Init::Constant(1.0));
    let beta = g.param("beta", &[2], Init::Zeros);
    let rm = g.buffer("running_mean", &[2], Init::Zeros);
    let rv = g.buffer("running_var", &[2], Init::Constant(1.0));
    let eps = 1e-5;
    let y = g
        .batch_norm(x, (gamma, beta), (rm, rv), eps as f32, 0.25)
        .unwrap();
    // Two samples: channel 0 holds 1, 2, 3, 6; channel 1 holds -4 four times.
    let xv = ArrayD::from_shape_vec(
        IxDyn(&[2, 2, 1, 2]),
        vec![1.0, 2.0, -4.0, -4.0, 3.0, 6.0, -4.0, -4.0],
    )
    .unwrap();
    let fed = feeds(vec![(x, Value::Float(xv))]);
    let mut run = CpuRun::<f64>::new(&g, 0);
    run.params.insert(
        gamma,
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![2.0, 1.0]).unwrap(),
    );
    run.params.insert(
        beta,
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.5, 0.0]).unwrap(),
    );
    run.training_step = Some(1);
    let (vals, updates) = run.eval_updates(&g, &fed, y).unwrap();
    let out = vals[g.index(y)].as_ref().unwrap().float().unwrap().clone();
    // Channel 0: mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5.
    let inv = 1.0 / (3.5f64 + eps).sqrt();
    let want0: Vec<f64> = [1.0, 2.0, 3.0, 6.0]
        .iter()
        .map(|v| (v - 3.0) * inv * 2.0 + 0.5)
        .collect();
    let got0 = [
        out[[0, 0, 0, 0]],
        out[[0, 0, 0, 1]],
        out[[1, 0, 0, 0]],
        out[[1, 0, 0, 1]],
    ];
    for (a, b) in got0.iter().zip(&want0) {
        assert!((a - b).abs() < 1e-12, "channel 0: {got0:?} vs {want0:?}");
    }
    // Channel 1 is constant: x - mean is 0, so y = beta, with no division by zero.
    assert!(out.iter().skip(2).step_by(4).all(|&v| v == 0.0), "{out:?}");
    // Running statistics: 0.75 * old + 0.25 * batch, the variance unbiased (14 / 3).
    run.store(updates);
    let (m, v) = (run.buffers[&rm].clone(), run.buffers[&rv].clone());
    assert!(
        (m[0] - 0.75).abs() < 1e-12 && (m[1] - -1.0).abs() < 1e-12,
        "{m:?}"
    );
    assert!(
        (v[0] - (0.75 + 0.25 * 14.0 / 3.0)).abs() < 1e-12 && (v[1] - 0.75).abs() < 1e-12,
        "{v:?}"
    );
    // Evaluation: the running statistics, and nothing moves.
    run.training_step = None;
    let (vals, updates) = run.eval_updates(&g, &fed, y).unwrap();
    assert!(updates.is_empty());
    let out = vals[g.index(y)].as_ref().unwrap().float().unwrap().clone();
    let want = (1.0 - m[0]) / (v[0] + eps).sqrt() * 2.0 + 0.5;
    assert!(
        (out[[0, 0, 0, 0]] - want).abs() < 1e-12,
        "{} vs {want}",
        out[[0, 0, 0, 0]]
    );
    // Shapes, epsilon and momentum are checked where the op is added.
    let err = g
        .batch_norm(x, (gamma, beta), (rm, rv), eps as f32, 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("momentum 0 must be in (0, 1]"), "{err}");
    let err = g
        .batch_norm(x, (gamma, beta), (rm, gamma), eps as f32, 0.1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("running variance must be a buffer"), "{err}");
    let flat = g.input("flat", &[Dim::Batch, Dim::Fixed(3)]);
    let err = g
        .batch_norm(flat, (gamma, beta), (rm, rv), eps as f32, 0.1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gamma must have shape (3)"), "{err}");
}

/// A residual block built by `Sequential` (two convolutions with batch normalization, a
/// projection shortcut at stride 2, the sum, ReLU), and one with the identity shortcut:
/// every parameter's gradient against finite differences in f64.
#[test]
fn residual_blocks_backward() {
    use wgtrain::nn::{Residual, Sequential};
    for block in [Residual::new(3).stride(2), Residual::new(2)] {
        let built = Sequential::new(&[2, 5, 4])
            .residual(block)
            .global_avg_pool()
            .build(true, 0)
            .unwrap();
        let mut g = built.graph.clone();
        let labels = g.labels("y");
        let loss = g.softmax_xent(built.logits, labels).unwrap();
        let xv = Value::Float(rand_array(31, &[B, 2, 5, 4], -1.0, 1.0));
        let yv = Value::Labels(Array1::from(vec![0u32, 1, 1]));
        gradcheck(&mut g, loss, feeds(vec![(built.input, xv), (labels, yv)]));
    }
}

/// Label smoothing: the gradient against finite differences in f64, and the loss and
/// gradient of two logits against their closed form.
#[test]
fn label_smoothed_cross_entropy() {
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 4);
    let labels = g.labels("y");
    let w = g.param("w", &[4, 6], Init::Zeros);
    let z = g.matmul(x, w).unwrap();
    let loss = g.softmax_xent_smoothed(z, labels, 0.1).unwrap();
    let lv = Value::Labels(Array1::from(vec![0u32, 5, 2]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, lv)]));

    // Logits (ln 3, 0) = x w with x = 1: p = (0.75, 0.25); smoothing 0.2 makes the target
    // (0.9, 0.1), and d loss / d w = p - target.
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(1)]);
    let w = g.param("w", &[1, 2], Init::Zeros);
    let z = g.matmul(x, w).unwrap();
    let labels = g.labels("y");
    let loss = g.softmax_xent_smoothed(z, labels, 0.2).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut run = CpuRun::<f64>::new(&g, 0);
    run.params.insert(
        w,
        ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![3f64.ln(), 0.0]).unwrap(),
    );
    let xv = ArrayD::from_shape_vec(IxDyn(&[1, 1]), vec![1.0]).unwrap();
    let fed = feeds(vec![
        (x, Value::Float(xv)),
        (labels, Value::Labels(Array1::from(vec![0u32]))),
    ]);
    let vals = run.eval(&g, &fed, g.last().unwrap()).unwrap();
    let got = CpuRun::scalar(&vals, loss).unwrap();
    // The op holds smoothing as an f32: 0.2 is 0.2000000030.
    let e = 0.2f32 as f64;
    let (t0, t1) = (1.0 - e + e / 2.0, e / 2.0);
    let want = -(t0 * 0.75f64.ln() + t1 * 0.25f64.ln());
    assert!((got - want).abs() < 1e-12, "loss {got} vs {want}");
    let grad = vals[g.index(grads.of(w).unwrap())]
        .as_ref()
        .unwrap()
        .float()
        .unwrap();
    let grad: Vec<f64> = grad.iter().copied().collect();
    assert!(
        (grad[0] - (0.75 - t0)).abs() < 1e-12 && (grad[1] - (0.25 - t1)).abs() < 1e-12,
        "{grad:?}"
    );
    let err = g
        .softmax_xent_smoothed(z, labels, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label smoothing 1 must be in [0, 1)"), "{err}");
}

/// Concatenation along channels and features and the elementwise product: gradients against
/// finite differences, with one input reaching the concatenation twice (its gradient is the
/// sum of two slices) and a product of a node with itself's neighbour branch.
#[test]
fn concat_slice_and_product_backward() {
    // Images: two convolutions of x concatenated on channels (3 + 2), times a third
    // convolution of x with 5 channels, then x itself concatenated again.
    let mut g = Graph::new();
    let (x, xv) = image_input(&mut g, 2, 4, 3, 21);
    let labels = g.labels("y");
    let conv = |g: &mut Graph, name: &str, out: usize| {
        let w = g.param(&format!("{name}.w"), &[out, 2, 3, 3], Init::GlorotUniform);
        let b = g.param(&format!("{name}.b"), &[out], Init::Zeros);
        g.conv2d(x, w, b, 1, 1).unwrap()
    };
    let a = conv(&mut g, "a", 3);
    let b = conv(&mut g, "b", 2);
    let c = conv(&mut g, "c", 5);
    let ab = g.concat(&[a, b]).unwrap();
    assert_eq!(
        g.node(ab).shape,
        [Dim::Batch, Dim::Fixed(5), Dim::Fixed(4), Dim::Fixed(3)]
    );
    let gated = g.mul(ab, c).unwrap();
    let h = g.concat(&[gated, a, x]).unwrap();
    assert_eq!(g.node(h).shape[1], Dim::Fixed(10));
    let z = g.global_avg_pool(h).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![0u32, 9, 4]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));

    // Matrices: features side by side, then a dense layer.
    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 3);
    let (t, tv) = target(&mut g, 2, false);
    let w1 = g.param("w1", &[3, 4], Init::GlorotUniform);
    let w2 = g.param("w2", &[3, 1], Init::GlorotUniform);
    let h1 = g.matmul(x, w1).unwrap();
    let h2 = g.matmul(x, w2).unwrap();
    let h = g.concat(&[h2, h1, h2]).unwrap();
    let w3 = g.param("w3", &[6, 2], Init::GlorotUniform);
    let z = g.matmul(h, w3).unwrap();
    let loss = g.loss(PointwiseLoss::MeanSquaredError, z, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv)]));
}

#[test]
fn concat_and_product_shape_errors() {
    let mut g = Graph::new();
    let a = g.input(
        "a",
        &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)],
    );
    let b = g.input(
        "b",
        &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(5)],
    );
    let m = g.input("m", &[Dim::Batch, Dim::Fixed(2)]);
    let err = g.concat(&[a, b]).unwrap_err().to_string();
    assert!(
        err.contains("input 2 differs from input 1 off axis 1"),
        "{err}"
    );
    let err = g.concat(&[a, m]).unwrap_err().to_string();
    assert!(err.contains("input 2 differs"), "{err}");
    let err = g.concat(&[a]).unwrap_err().to_string();
    assert!(err.contains("at least 2 inputs"), "{err}");
    let err = g.mul(a, b).unwrap_err().to_string();
    assert!(err.contains("shapes must be equal"), "{err}");
    let err = g.slice(m, 1, 2).unwrap_err().to_string();
    assert!(err.contains("entries 1..3"), "{err}");
}

/// Functional models' graphs against finite differences: a shared layer called on two
/// inputs (its weight's gradient sums both calls), a diamond (one tensor read by two
/// branches that merge by product and sum), concatenation, and two outputs trained as one
/// row.
#[test]
fn functional_graphs_backward() {
    use wgtrain::nn::{self, Dense, Functional, Input, LayerRef};
    let x1 = Input::new(&[3]);
    let x2 = Input::new(&[3]);
    let shared = LayerRef::new(Dense::new(4).activation(Activation::Tanh));
    let (a, b) = (shared.call(&x1), shared.call(&x2));
    let h = Dense::new(4).activation(Activation::Tanh).on(&a);
    let left = Dense::new(4).on(&h);
    let right = Dense::new(4).activation(Activation::Sigmoid).on(&h);
    let diamond = nn::add(&[&nn::multiply(&[&left, &right]), &h]);
    let out = Dense::new(3).on(&nn::concatenate(&[&diamond, &b]));
    let model = Functional::new(&[&x1, &x2], &[&out]).unwrap();
    let built = model.build(true, 0).unwrap();
    let names: Vec<&str> = built.params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("dense_0.")).count(),
        2
    );
    let mut g = built.graph.clone();
    let labels = g.labels("y");
    let loss = g.softmax_xent(built.logits, labels).unwrap();
    let xv1 = Value::Float(rand_array(41, &[B, 3], -1.0, 1.0));
    let xv2 = Value::Float(rand_array(42, &[B, 3], -1.0, 1.0));
    let yv = Value::Labels(Array1::from(vec![2u32, 0, 1]));
    gradcheck(
        &mut g,
        loss,
        feeds(vec![
            (built.inputs[0], xv1),
            (built.inputs[1], xv2),
            (labels, yv),
        ]),
    );

    // Two outputs of different widths, concatenated for the loss.
    let x = Input::new(&[3]);
    let trunk = Dense::new(4).activation(Activation::Tanh).on(&x);
    let y1 = Dense::new(1).on(&trunk);
    let y2 = Dense::new(2).on(&trunk);
    let built = Functional::new(&[&x], &[&y1, &y2])
        .unwrap()
        .build(false, 0)
        .unwrap();
    assert_eq!(g_width(&built.graph, built.logits), 3);
    let mut g = built.graph.clone();
    let (t, tv) = target(&mut g, 3, false);
    let loss = g
        .loss(PointwiseLoss::MeanSquaredError, built.logits, t)
        .unwrap();
    let xv = Value::Float(rand_array(43, &[B, 3], -1.0, 1.0));
    gradcheck(&mut g, loss, feeds(vec![(built.input, xv), (t, tv)]));
}

fn g_width(g: &Graph, n: NodeId) -> usize {
    g.concrete_shapes(1)[g.index(n)].iter().product()
}

/// Broadcasting and its gradient (a sum over the repeated axes): per-channel gates on an
/// image (squeeze-and-excitation), a per-position mask shared by every channel, and a
/// column repeated across a matrix's features.
#[test]
fn broadcast_and_sum_to_backward() {
    let mut g = Graph::new();
    let (x, xv) = image_input(&mut g, 3, 4, 5, 51);
    let labels = g.labels("y");
    let w = g.param("w", &[2, 3, 3, 3], Init::GlorotUniform);
    let b = g.param("b", &[2], Init::Zeros);
    let h = g.conv2d(x, w, b, 1, 1).unwrap(); // (B, 2, 4, 5)
    let pooled = g.global_avg_pool(h).unwrap(); // (B, 2)
    let wg = g.param("wg", &[2, 2], Init::GlorotUniform);
    let gate = g.matmul(pooled, wg).unwrap();
    let gate = g.activation(gate, Activation::Sigmoid).unwrap();
    let gate = g
        .reshape(
            gate,
            &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(1), Dim::Fixed(1)],
        )
        .unwrap();
    let full = [Dim::Batch, Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(5)];
    let gate = g.broadcast(gate, &full).unwrap();
    let gated = g.mul(h, gate).unwrap();
    // A (B, 1, 4, 5) mask from a 1x1 convolution, repeated over both channels.
    let wm = g.param("wm", &[1, 2, 1, 1], Init::GlorotUniform);
    let bm = g.param("bm", &[1], Init::Zeros);
    let mask = g.conv2d(gated, wm, bm, 1, 0).unwrap();
    let mask = g.broadcast(mask, &full).unwrap();
    let y = g.add(gated, mask).unwrap();
    let z = g.global_avg_pool(y).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![0u32, 1, 1]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));

    let mut g = Graph::new();
    let (x, xv) = x_input(&mut g, 3);
    let (t, tv) = target(&mut g, 4, false);
    let w1 = g.param("w1", &[3, 1], Init::GlorotUniform);
    let w2 = g.param("w2", &[3, 4], Init::GlorotUniform);
    let col = g.matmul(x, w1).unwrap();
    let col = g.broadcast(col, &[Dim::Batch, Dim::Fixed(4)]).unwrap();
    let m = g.matmul(x, w2).unwrap();
    let z = g.mul(col, m).unwrap();
    let loss = g.loss(PointwiseLoss::MeanSquaredError, z, t).unwrap();
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (t, tv)]));

    let err = g
        .broadcast(m, &[Dim::Batch, Dim::Fixed(5)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differ on an axis where neither is 1"),
        "{err}"
    );
}

/// Permute and its gradient (the inverse order): a convolution's output read channels last,
/// then its (height, width) swapped, into a dense head; and orders that are not one are
/// refused.
#[test]
fn permute_backward() {
    let mut g = Graph::new();
    let (x, xv) = image_input(&mut g, 3, 4, 5, 52);
    let labels = g.labels("y");
    let w = g.param("w", &[2, 3, 3, 3], Init::GlorotUniform);
    let b = g.param("b", &[2], Init::Zeros);
    let h = g.conv2d(x, w, b, 1, 1).unwrap(); // (B, 2, 4, 5)
    let nhwc = g.permute(h, &[0, 2, 3, 1]).unwrap(); // (B, 4, 5, 2)
    assert_eq!(
        g.node(nhwc).shape,
        [Dim::Batch, Dim::Fixed(4), Dim::Fixed(5), Dim::Fixed(2)]
    );
    let swapped = g.permute(nhwc, &[0, 2, 1, 3]).unwrap(); // (B, 5, 4, 2)
    let flat = g.flatten(swapped).unwrap();
    let wd = g.param("wd", &[40, 3], Init::GlorotUniform);
    let z = g.matmul(flat, wd).unwrap();
    let loss = g.softmax_xent(z, labels).unwrap();
    let yv = Value::Labels(Array1::from(vec![0u32, 2, 1]));
    gradcheck(&mut g, loss, feeds(vec![(x, xv), (labels, yv)]));
    for bad in [&[1, 0, 2, 3][..], &[0, 1, 1, 3], &[0, 2, 1]] {
        let err = g.permute(h, bad).unwrap_err().to_string();
        assert!(
            err.contains("is not an order of the 4 axes"),
            "{bad:?}: {err}"
        );
    }
}
