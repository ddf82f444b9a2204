//! Every GPU kernel against its CPU reference, over shape sweeps with 1, primes, tile edges,
//! a 1000+ case and a case over 4M elements. Tolerances follow ARCHITECTURE.md, "Testing":
//! elementwise 1e-6; GEMM and reductions rtol 1e-4 / atol 1e-5 (atol grown with sqrt(k));
//! references run in f64 so they measure the GPU's error, not the sum of two errors.

mod common;

use common::*;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use wgtrain::gpu::run;
use wgtrain::ops::{Activation, PointwiseLoss};
use wgtrain::unstable::cpu;
use wgtrain::unstable::kernels::Epilogue;
use wgtrain::unstable::kernels::{self, GemmPath, GemmSpec};

fn arr2(rows: usize, cols: usize, v: &[f32]) -> Array2<f64> {
    Array2::from_shape_vec((rows, cols), to_f64(v)).unwrap()
}

fn check_gemm(spec: GemmSpec, seed: u64) {
    let ctx = gpu();
    let GemmSpec { m, n, k, .. } = spec;
    // The path asked for is the path that runs (texture packing needs subgroups of 8 and
    // k > 0; anything else must say Tiled, never fall back silently).
    let taken = kernels::gemm_path(ctx, &spec);
    match spec.path {
        Some(GemmPath::Tiled) => assert_eq!(taken, GemmPath::Tiled, "{spec:?}"),
        Some(GemmPath::TiledVec4) => assert_eq!(taken, vec4_or_tiled(&spec), "{spec:?}"),
        Some(GemmPath::Texture) if ctx.subgroup_size() == Some(8) && k > 0 => {
            assert_eq!(taken, GemmPath::Texture, "{spec:?}")
        }
        _ => {}
    }
    PATHS_RUN.lock().unwrap().push(taken);
    let a = uniform(seed, m * k, -1.0, 1.0);
    let b = uniform(seed + 1, k * n, -1.0, 1.0);
    let c0 = uniform(seed + 2, m * n, -1.0, 1.0);
    let bias = uniform(seed + 3, n, -1.0, 1.0);
    let (ga, gb, gc, gbias) = (
        upload("a", &a),
        upload("b", &b),
        upload("c", &c0),
        upload("bias", &bias),
    );
    let launch = kernels::gemm(
        ctx,
        &spec,
        ga.full(),
        gb.full(),
        Some(gbias.full()),
        gc.full(),
    )
    .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    launch.run(ctx).unwrap();
    let got = download(&gc);

    let (ar, ac) = if spec.trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if spec.trans_b { (n, k) } else { (k, n) };
    // With trans_c the buffer holds C^T, for beta's read as for the write.
    let mut want = if spec.trans_c {
        arr2(n, m, &c0).t().to_owned()
    } else {
        arr2(m, n, &c0)
    };
    let bias64 = Array1::from(to_f64(&bias));
    cpu::gemm(
        spec.alpha as f64,
        arr2(ar, ac, &a).view(),
        spec.trans_a,
        arr2(br, bc, &b).view(),
        spec.trans_b,
        spec.beta as f64,
        &mut want,
        spec.epilogue,
        Some(bias64.view()),
    )
    .unwrap();
    // Rounding error of a k-term f32 dot product grows like sqrt(k).
    let atol = 1e-5 * (k.max(1) as f64).sqrt();
    let want: Vec<f64> = if spec.trans_c {
        want.t().iter().copied().collect()
    } else {
        want.iter().copied().collect()
    };
    assert_close(&format!("{spec:?}"), &got, &want, atol, 1e-4);
}

/// The vec4 path where the operands' stored rows are whole vec4s (A's k, or m transposed;
/// B's n, or k transposed), the scalar tiles otherwise.
fn vec4_or_tiled(spec: &GemmSpec) -> GemmPath {
    let a_row = if spec.trans_a { spec.m } else { spec.k };
    let b_row = if spec.trans_b { spec.k } else { spec.n };
    if spec.k > 0 && a_row % 4 == 0 && b_row % 4 == 0 {
        GemmPath::TiledVec4
    } else {
        GemmPath::Tiled
    }
}

/// Every path `check_gemm` ran, so sweeps can assert that each was exercised.
static PATHS_RUN: std::sync::Mutex<Vec<GemmPath>> = std::sync::Mutex::new(Vec::new());

#[test]
fn gemm_shape_sweep() {
    let dims = [1usize, 4, 7, 13, 15, 16, 17, 31, 32, 33, 64, 127];
    let mut seed = 0;
    for &m in &dims {
        for &n in &[1usize, 7, 16, 17, 33, 127] {
            for &k in &[1usize, 4, 13, 32, 127] {
                seed += 10;
                for path in [GemmPath::Texture, GemmPath::Tiled, GemmPath::TiledVec4] {
                    check_gemm(GemmSpec::new(m, n, k).path(path), seed);
                }
            }
        }
    }
    // Every path ran (textures only where the adapter has subgroups of 8, as lavapipe does).
    let paths = PATHS_RUN.lock().unwrap();
    for p in [GemmPath::Texture, GemmPath::Tiled, GemmPath::TiledVec4] {
        if p != GemmPath::Texture || gpu().subgroup_size() == Some(8) {
            assert!(paths.contains(&p), "the sweep never ran the {p:?} path");
        }
    }
}

#[test]
fn gemm_transposes_scales_and_epilogues() {
    let mut seed = 1000;
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 13, 127),
        (33, 17, 64),
        (128, 10, 128),
        (64, 128, 100),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for epi in [
                Epilogue::None,
                Epilogue::Bias,
                Epilogue::BiasRelu,
                Epilogue::Relu,
            ] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                    seed += 10;
                    let spec = GemmSpec::new(m, n, k)
                        .trans_a(ta)
                        .trans_b(tb)
                        .scale(alpha, beta)
                        .epilogue(epi);
                    check_gemm(spec.path(GemmPath::Texture), seed);
                    check_gemm(spec.path(GemmPath::Tiled), seed);
                    check_gemm(spec.path(GemmPath::TiledVec4), seed);
                }
                // C stored transposed, with beta reading it the same way.
                let spec = GemmSpec::new(m, n, k)
                    .trans_a(ta)
                    .trans_b(tb)
                    .scale(0.5, 1.0)
                    .epilogue(epi)
                    .trans_c(true);
                check_gemm(spec.path(GemmPath::Texture), seed + 1);
                check_gemm(spec.path(GemmPath::Tiled), seed + 1);
                check_gemm(spec.path(GemmPath::TiledVec4), seed + 1);
            }
        }
    }
}

#[test]
fn gemm_mlp_shapes_and_large_cases() {
    // The MLP's forward and both backward products at batch 128, a 1000+ case, and an output
    // of more than 4M elements (more tiles than one dispatch dimension holds on some adapters).
    check_gemm(GemmSpec::new(128, 128, 784), 1);
    check_gemm(GemmSpec::new(784, 128, 128).trans_a(true), 2);
    check_gemm(GemmSpec::new(128, 784, 128).trans_b(true), 3);
    check_gemm(GemmSpec::new(128, 10, 128).epilogue(Epilogue::Bias), 4);
    check_gemm(GemmSpec::new(1031, 1025, 67), 5);
    check_gemm(GemmSpec::new(1031, 1025, 67).path(GemmPath::Tiled), 5);
    // The same products on the vec4 path: 32x32 tiles for the MLP's, 64x64 for the large one
    // (aligned to whole vec4s; 4M+ outputs as well).
    for (i, spec) in [
        GemmSpec::new(128, 128, 784),
        GemmSpec::new(784, 128, 128).trans_a(true),
        GemmSpec::new(128, 784, 128).trans_b(true),
        GemmSpec::new(128, 10, 128)
            .trans_b(true)
            .epilogue(Epilogue::Bias),
        GemmSpec::new(1032, 1024, 68),
        GemmSpec::new(2052, 2048, 4).epilogue(Epilogue::BiasRelu),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = spec.path(GemmPath::TiledVec4);
        assert_eq!(kernels::gemm_path(gpu(), &spec), GemmPath::TiledVec4);
        check_gemm(spec, 20 + i as u64);
    }
    check_gemm(GemmSpec::new(2053, 2049, 3), 6);
    // Taller than a texture may be (convolutions as GEMMs): op(A) is packed in bands.
    let max = gpu().limits().max_texture_dimension_2d as usize;
    for (spec, seed) in [
        (GemmSpec::new(2 * max + 5, 32, 27), 7),
        (GemmSpec::new(2 * max + 4, 16, 36).trans_a(true), 8),
        (GemmSpec::new(max + 1, 8, 9).trans_a(true), 9),
    ] {
        // The plan's own choice: packed bands on the CPU-adapter plan, tiles otherwise.
        let want = match gpu().plan() {
            wgtrain::gpu::AdapterKind::Cpu => GemmPath::Texture,
            wgtrain::gpu::AdapterKind::Gpu => vec4_or_tiled(&spec),
        };
        assert_eq!(kernels::gemm_path(gpu(), &spec), want, "{spec:?}");
        check_gemm(spec, seed);
    }
}

#[test]
fn gemm_beta_zero_ignores_nan_in_c() {
    let ctx = gpu();
    let (m, n, k) = (9, 5, 3);
    let a = uniform(1, m * k, -1.0, 1.0);
    let b = uniform(2, k * n, -1.0, 1.0);
    let gc = upload("c", &vec![f32::NAN; m * n]);
    let (ga, gb) = (upload("a", &a), upload("b", &b));
    let l = kernels::gemm(
        ctx,
        &GemmSpec::new(m, n, k),
        ga.full(),
        gb.full(),
        None,
        gc.full(),
    )
    .unwrap();
    l.run(ctx).unwrap();
    assert!(download(&gc).iter().all(|v| v.is_finite()));
}

#[test]
fn gemm_rejects_bad_operands() {
    let ctx = gpu();
    let small = zeros("small", 10);
    let c = zeros("c", 100);
    let err = kernels::gemm(
        ctx,
        &GemmSpec::new(10, 10, 10),
        small.full(),
        small.full(),
        None,
        c.full(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gemm") && err.contains("`small`") && err.contains("needs 100"),
        "{err}"
    );
    let err = kernels::gemm(
        ctx,
        &GemmSpec::new(10, 10, 1).epilogue(Epilogue::Bias),
        small.full(),
        small.full(),
        None,
        c.full(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bias"), "{err}");
}

const ELEMENTWISE_SIZES: [usize; 9] = [1, 7, 13, 127, 255, 256, 257, 1031, 4 * 1024 * 1024 + 3];

fn with_specials(mut v: Vec<f32>) -> Vec<f32> {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        100.0,
        -100.0,
        1e-8,
    ];
    for (slot, s) in v.iter_mut().zip(specials) {
        *slot = s;
    }
    v
}

#[test]
fn activations_forward_and_backward() {
    let ctx = gpu();
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
        for (i, &n) in ELEMENTWISE_SIZES.iter().enumerate() {
            let x = with_specials(uniform(i as u64, n, -6.0, 6.0));
            let dy = uniform(i as u64 + 100, n, -1.0, 1.0);
            let (gx, gdy, gy, gdx) = (
                upload("x", &x),
                upload("dy", &dy),
                zeros("y", n),
                zeros("dx", n),
            );
            let fwd = kernels::activation_forward(ctx, act, n, gx.full(), gy.full()).unwrap();
            // The backward reads what the rule keeps: y (the GPU's own, so this tests the
            // backward alone) or x.
            let (gsaved, reads_x) = match act.backward_reads_input() {
                true => (&gx, true),
                false => (&gy, false),
            };
            let bwd =
                kernels::activation_backward(ctx, act, n, gsaved.full(), gdy.full(), gdx.full())
                    .unwrap();
            run(ctx, &[&fwd, &bwd]).unwrap();
            let y = download(&gy);
            let want_y: Vec<f64> = x.iter().map(|&v| act.apply(v as f64)).collect();
            assert_close(&format!("{act:?} forward n={n}"), &y, &want_y, 1e-6, 1e-6);
            let saved = if reads_x { x.clone() } else { y };
            let want_dx: Vec<f64> = saved
                .iter()
                .zip(&dy)
                .map(|(&y, &d)| act.grad(y as f64, d as f64))
                .collect();
            assert_close(
                &format!("{act:?} backward n={n}"),
                &download(&gdx),
                &want_dx,
                1e-6,
                1e-6,
            );
        }
    }
}

#[test]
fn bias_add_and_column_sum() {
    let ctx = gpu();
    for &(rows, cols) in &[
        (1, 1),
        (7, 13),
        (127, 10),
        (128, 257),
        (1031, 3),
        (4097, 1025),
    ] {
        let y0 = uniform(rows as u64, rows * cols, -1.0, 1.0);
        let bias = uniform(cols as u64, cols, -1.0, 1.0);
        let (gy, gb) = (upload("y", &y0), upload("bias", &bias));
        let prior = uniform(7, cols, -1.0, 1.0);
        let (gsum, gacc) = (zeros("sum", cols), upload("acc", &prior));
        // Out of place first (reads y0), then in place.
        let gout = zeros("out", rows * cols);
        let out =
            kernels::bias_add_out(ctx, rows, cols, gy.full(), gb.full(), gout.full()).unwrap();
        let add = kernels::bias_add(ctx, rows, cols, gb.full(), gy.full()).unwrap();
        let sum = kernels::column_sum(ctx, rows, cols, false, gy.full(), gsum.full()).unwrap();
        let acc = kernels::column_sum(ctx, rows, cols, true, gy.full(), gacc.full()).unwrap();
        run(ctx, &[&out, &add, &sum, &acc]).unwrap();
        let mut want = arr2(rows, cols, &y0);
        cpu::bias_add(&mut want, Array1::from(to_f64(&bias)).view()).unwrap();
        for (what, got) in [("bias_add", &gy), ("bias_add_out", &gout)] {
            assert_close(what, &download(got), want.as_slice().unwrap(), 1e-6, 1e-6);
        }
        let want_sum = cpu::column_sum(want.view());
        let atol = 1e-5 * (rows as f64).sqrt();
        assert_close(
            "column_sum",
            &download(&gsum),
            want_sum.as_slice().unwrap(),
            atol,
            1e-4,
        );
        let want_acc: Vec<f64> = want_sum
            .iter()
            .zip(&prior)
            .map(|(s, &p)| s + p as f64)
            .collect();
        assert_close(
            "column_sum accumulate",
            &download(&gacc),
            &want_acc,
            atol,
            1e-4,
        );
    }
}

#[test]
fn softmax_forward_backward_and_extremes() {
    let ctx = gpu();
    for &(rows, cols) in &[
        (1, 1),
        (1, 7),
        (13, 10),
        (127, 13),
        (257, 1031),
        (4097, 1025),
    ] {
        let mut x = uniform(rows as u64, rows * cols, -10.0, 10.0);
        if rows * cols > 8 {
            // Huge logits must stay finite thanks to the max subtraction; a NaN poisons its row.
            x[0] = 1e4;
            x[1] = -1e4;
            let nan_at = cols.min(x.len() - 1);
            x[nan_at] = f32::NAN;
        }
        let dy = uniform(rows as u64 + 1, rows * cols, -1.0, 1.0);
        let (gx, gdy, gy, gdx) = (
            upload("x", &x),
            upload("dy", &dy),
            zeros("y", rows * cols),
            zeros("dx", rows * cols),
        );
        let f = kernels::softmax_forward(ctx, rows, cols, gx.full(), gy.full()).unwrap();
        let b =
            kernels::softmax_backward(ctx, rows, cols, gy.full(), gdy.full(), gdx.full()).unwrap();
        run(ctx, &[&f, &b]).unwrap();
        let y = download(&gy);
        let want = cpu::softmax_forward(arr2(rows, cols, &x).view());
        assert_close("softmax", &y, want.as_slice().unwrap(), 1e-6, 1e-5);
        if rows * cols > 8 && cols > 1 {
            assert!(
                y[..cols].iter().all(|v| v.is_finite()),
                "row with +-1e4 must be finite"
            );
        }
        let y64 = arr2(rows, cols, &y);
        let want_dx = cpu::softmax_backward(y64.view(), arr2(rows, cols, &dy).view()).unwrap();
        assert_close(
            "softmax_backward",
            &download(&gdx),
            want_dx.as_slice().unwrap(),
            1e-6,
            1e-5,
        );
    }
}

fn check_xent(rows: usize, cols: usize, logits: &[f32], labels: &[u32], smoothing: f32) {
    let ctx = gpu();
    let (gl, glab, gg, gout) = (
        upload("logits", logits),
        upload_u32("labels", labels),
        zeros("grad", rows * cols),
        zeros("loss", 1),
    );
    let l = kernels::softmax_xent(
        ctx,
        (rows, cols),
        smoothing,
        gl.full(),
        glab.full(),
        gg.full(),
        gout.full(),
    )
    .unwrap();
    l.run(ctx).unwrap();
    let (loss, grad) = cpu::softmax_xent(
        arr2(rows, cols, logits).view(),
        ArrayView1::from(labels),
        smoothing as f64,
    )
    .unwrap();
    assert_close(
        "xent grad",
        &download(&gg),
        grad.as_slice().unwrap(),
        1e-6,
        1e-5,
    );
    assert_close("xent loss", &download(&gout), &[loss], 1e-5, 1e-4);
}

#[test]
fn softmax_cross_entropy() {
    for &(rows, cols) in &[
        (1, 1),
        (1, 10),
        (7, 13),
        (64, 10),
        (65, 10),
        (128, 10),
        (1031, 127),
        (4100, 1025),
    ] {
        let logits = uniform(rows as u64, rows * cols, -5.0, 5.0);
        let labels: Vec<u32> = (0..rows).map(|i| ((i * 7919) % cols) as u32).collect();
        // Plain and with label smoothing.
        check_xent(rows, cols, &logits, &labels, 0.0);
        check_xent(rows, cols, &logits, &labels, 0.1);
    }
    // Extreme logits stay finite; an out-of-range label makes the loss NaN.
    check_xent(2, 3, &[1e4, -1e4, 0.0, -1e4, 1e4, 0.0], &[0, 2], 0.0);
    let ctx = gpu();
    let (gl, glab, gg, gout) = (
        upload("logits", &[0.0; 6]),
        upload_u32("labels", &[0, 5]),
        zeros("grad", 6),
        zeros("loss", 1),
    );
    let l = kernels::softmax_xent(
        ctx,
        (2, 3),
        0.0,
        gl.full(),
        glab.full(),
        gg.full(),
        gout.full(),
    )
    .unwrap();
    l.run(ctx).unwrap();
    assert!(download(&gout)[0].is_nan());
    let err = kernels::softmax_xent(
        ctx,
        (2, 3),
        1.0,
        gl.full(),
        glab.full(),
        gg.full(),
        gout.full(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("label smoothing 1 must be in [0, 1)"), "{err}");
}

#[test]
fn pointwise_losses() {
    let ctx = gpu();
    for kind in [
        PointwiseLoss::MeanSquaredError,
        PointwiseLoss::BinaryCrossEntropy,
        PointwiseLoss::BinaryCrossEntropyWithLogits,
    ] {
        for &n in &[1usize, 7, 64, 127, 1031, 4 * 1024 * 1024 + 3] {
            let p = match kind {
                PointwiseLoss::BinaryCrossEntropy => uniform(n as u64, n, 0.0, 1.0),
                _ => uniform(n as u64, n, -4.0, 4.0),
            };
            let t: Vec<f32> = uniform(n as u64 + 5, n, 0.0, 1.0)
                .iter()
                .map(|v| v.round())
                .collect();
            let (gp, gt, gg, gout) = (
                upload("p", &p),
                upload("t", &t),
                zeros("grad", n),
                zeros("loss", 1),
            );
            let l =
                kernels::pointwise_loss(ctx, kind, n, gp.full(), gt.full(), gg.full(), gout.full())
                    .unwrap();
            l.run(ctx).unwrap();
            let (loss, grad) = cpu::pointwise_loss(
                kind,
                ArrayView2::from_shape((1, n), &to_f64(&p)).unwrap(),
                ArrayView2::from_shape((1, n), &to_f64(&t)).unwrap(),
            )
            .unwrap();
            // BCE's gradient divides by q(1-q), which amplifies f32's rounding of log/clamp.
            let rtol = if kind == PointwiseLoss::BinaryCrossEntropy {
                1e-4
            } else {
                1e-5
            };
            assert_close(
                &format!("{kind:?} grad n={n}"),
                &download(&gg),
                grad.as_slice().unwrap(),
                1e-6 / n as f64,
                rtol,
            );
            assert_close(
                &format!("{kind:?} loss n={n}"),
                &download(&gout),
                &[loss],
                1e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn gemm_relu_gradient_epilogue() {
    let ctx = gpu();
    for &(m, n, k) in &[(7, 13, 9), (128, 128, 10), (33, 64, 17)] {
        for (ta, tb) in [(false, false), (false, true), (true, false)] {
            for path in [GemmPath::Texture, GemmPath::Tiled] {
                let spec = GemmSpec::new(m, n, k)
                    .trans_a(ta)
                    .trans_b(tb)
                    .epilogue(Epilogue::ReluGrad)
                    .path(path);
                let a = uniform(1, m * k, -1.0, 1.0);
                let b = uniform(2, k * n, -1.0, 1.0);
                let mut y = uniform(3, m * n, -1.0, 1.0);
                y[0] = 0.0; // ReLU'(0) is 0
                let (ga, gb, gy, gc) = (
                    upload("a", &a),
                    upload("b", &b),
                    upload("y", &y),
                    zeros("c", m * n),
                );
                kernels::gemm(ctx, &spec, ga.full(), gb.full(), Some(gy.full()), gc.full())
                    .unwrap()
                    .run(ctx)
                    .unwrap();
                let (ar, ac) = if ta { (k, m) } else { (m, k) };
                let (br, bc) = if tb { (n, k) } else { (k, n) };
                let mut want = Array2::<f64>::zeros((m, n));
                let y64 = Array1::from(to_f64(&y));
                cpu::gemm(
                    1.0,
                    arr2(ar, ac, &a).view(),
                    ta,
                    arr2(br, bc, &b).view(),
                    tb,
                    0.0,
                    &mut want,
                    Epilogue::ReluGrad,
                    Some(y64.view()),
                )
                .unwrap();
                let got = download(&gc);
                assert_close(
                    &format!("{spec:?}"),
                    &got,
                    want.as_slice().unwrap(),
                    1e-5 * (k as f64).sqrt(),
                    1e-4,
                );
                assert!(got.iter().zip(&y).all(|(c, y)| *y > 0.0 || *c == 0.0));
            }
        }
    }
    // Without the ReLU output it is an error, not a read of garbage.
    let (a, c) = (zeros("a", 4), zeros("c", 4));
    let spec = GemmSpec::new(2, 2, 2).epilogue(Epilogue::ReluGrad);
    let err = kernels::gemm(ctx, &spec, a.full(), a.full(), None, c.full()).unwrap_err();
    assert!(err.to_string().contains("ReLU output"), "{err}");
}

#[test]
fn elementwise_add() {
    let ctx = gpu();
    for n in [1, 3, 4, 64, 1031, (1 << 22) + 5] {
        let (a, b) = (uniform(n as u64, n, -1.0, 1.0), uniform(9, n, -1.0, 1.0));
        let (ga, gb, gy) = (upload("a", &a), upload("b", &b), zeros("y", n));
        let add = kernels::add(ctx, n, ga.full(), gb.full(), gy.full()).unwrap();
        run(ctx, &[&add]).unwrap();
        let want: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| x as f64 + y as f64)
            .collect();
        assert_close(&format!("add n={n}"), &download(&gy), &want, 1e-6, 1e-6);
    }
    let (short, y) = (zeros("short", 3), zeros("y", 4));
    let err = kernels::add(ctx, 4, short.full(), y.full(), y.full()).unwrap_err();
    assert!(err.to_string().contains("add"), "{err}");
}

/// Permute against the CPU reference (exact: it only moves values), over ranks 2 to 4 and
/// every order of a rank-4 shape with a prime size; a non-permutation is refused.
#[test]
fn permute_matches_the_reference() {
    use wgtrain::unstable::cpu;
    let ctx = gpu();
    let mut cases: Vec<(Vec<usize>, Vec<usize>)> =
        vec![(vec![5, 7], vec![1, 0]), (vec![2, 3, 5], vec![0, 2, 1])];
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                let d = 6 - a - b - c;
                if a != b && b != c && a != c && d < 4 && d != a && d != b && d != c {
                    cases.push((vec![2, 3, 5, 7], vec![a, b, c, d]));
                }
            }
        }
    }
    assert_eq!(cases.len(), 2 + 24);
    for (shape, perm) in cases {
        let n: usize = shape.iter().product();
        let x = uniform(n as u64, n, -1.0, 1.0);
        let (gx, gy) = (upload("x", &x), zeros("y", n));
        let launch = kernels::permute(ctx, &shape, &perm, gx.full(), gy.full()).unwrap();
        run(ctx, &[&launch]).unwrap();
        let xa = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), x).unwrap();
        let want: Vec<f64> = cpu::permute(xa.view(), &perm)
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(
            &format!("permute {shape:?} {perm:?}"),
            &download(&gy),
            &want,
            0.0,
            0.0,
        );
    }
    let (x, y) = (zeros("x", 6), zeros("y", 6));
    let err = kernels::permute(ctx, &[2, 3], &[0, 0], x.full(), y.full()).unwrap_err();
    assert!(err.to_string().contains("is not an order"), "{err}");
}

/// Layer normalization's forward, input gradient and gamma gradient against the f64
/// reference, over row and feature counts that include 1, primes and a long row.
#[test]
fn layer_norm_matches_the_reference() {
    let ctx = gpu();
    let eps = 1e-3f32;
    let mut seed = 300;
    for &(rows, cols) in &[
        (1, 1),
        (1, 7),
        (7, 1),
        (5, 16),
        (64, 3),
        (130, 100),
        (3, 1000),
    ] {
        seed += 10;
        // Rows with an offset and a spread of their own, as activations have.
        let x: Vec<f32> = uniform(seed, rows * cols, -2.0, 2.0)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i / cols) as f32) + (i / cols) as f32)
            .collect();
        let gamma = uniform(seed + 1, cols, 0.5, 1.5);
        let beta = uniform(seed + 2, cols, -1.0, 1.0);
        let dy = uniform(seed + 3, rows * cols, -1.0, 1.0);
        let (gx, gg, gb, gdy) = (
            upload("x", &x),
            upload("gamma", &gamma),
            upload("beta", &beta),
            upload("dy", &dy),
        );
        let (gy, gdx, gdg) = (
            zeros("y", rows * cols),
            zeros("dx", rows * cols),
            zeros("dgamma", cols),
        );
        let fwd = kernels::layer_norm_forward(
            ctx,
            rows,
            cols,
            eps,
            gx.full(),
            gg.full(),
            gb.full(),
            gy.full(),
        )
        .unwrap();
        let bwd = kernels::layer_norm_backward(
            ctx,
            rows,
            cols,
            eps,
            gx.full(),
            gg.full(),
            gdy.full(),
            gdx.full(),
        )
        .unwrap();
        let dg =
            kernels::layer_norm_gamma_grad(ctx, rows, cols, eps, gx.full(), gdy.full(), gdg.full())
                .unwrap();
        run(ctx, &[&fwd, &bwd]).unwrap();
        dg.run(ctx).unwrap();
        let x64 = Array2::from_shape_vec((rows, cols), to_f64(&x)).unwrap();
        let dy64 = Array2::from_shape_vec((rows, cols), to_f64(&dy)).unwrap();
        let (g64, b64) = (Array1::from(to_f64(&gamma)), Array1::from(to_f64(&beta)));
        let eps64 = eps as f64;
        let want_y = cpu::layer_norm_forward(x64.view(), g64.view(), b64.view(), eps64).unwrap();
        let want_dx = cpu::layer_norm_backward(x64.view(), g64.view(), dy64.view(), eps64).unwrap();
        let want_dg = cpu::layer_norm_gamma_grad(x64.view(), dy64.view(), eps64).unwrap();
        let what = format!("{rows}x{cols}");
        // Reductions over a row: the GEMM/reduction tolerance, grown with sqrt(cols).
        let atol = 1e-5 * (cols as f64).sqrt();
        assert_close(
            &format!("forward {what}"),
            &download(&gy),
            want_y.as_slice().unwrap(),
            atol,
            1e-4,
        );
        assert_close(
            &format!("dx {what}"),
            &download(&gdx),
            want_dx.as_slice().unwrap(),
            1e-4,
            1e-3,
        );
        let atol = 1e-4 * (rows as f64).sqrt();
        assert_close(
            &format!("dgamma {what}"),
            &download(&gdg),
            want_dg.as_slice().unwrap(),
            atol,
            1e-3,
        );
    }
}

/// Batch normalization's forward (training, with the running statistics moved, then
/// evaluating), input gradient and gamma gradient against the f64 reference, over dense and
/// image shapes whose per-channel counts include 1, fewer and more than a workgroup, primes
/// and 131,072 values.
#[test]
fn batch_norm_matches_the_reference() {
    let ctx = gpu();
    let (eps, momentum) = (1e-5f32, 0.1f32);
    let mut seed = 500;
    for &(batch, channels, positions) in &[
        (1, 1, 1),
        (2, 3, 1),
        (7, 5, 1),
        (130, 17, 1),
        (3, 4, 25),
        (16, 8, 49),
        (5, 2, 1000),
        (128, 3, 1024),
    ] {
        seed += 10;
        let len = batch * channels * positions;
        // Channels with an offset and a spread of their own, as activations have.
        let x: Vec<f32> = uniform(seed, len, -2.0, 2.0)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = ((i / positions) % channels) as f32;
                v * (1.0 + c) + 3.0 * c
            })
            .collect();
        let gamma = uniform(seed + 1, channels, 0.5, 1.5);
        let beta = uniform(seed + 2, channels, -1.0, 1.0);
        let dy = uniform(seed + 3, len, -1.0, 1.0);
        let rm0 = uniform(seed + 4, channels, -0.5, 0.5);
        let rv0 = uniform(seed + 5, channels, 0.5, 2.0);
        let s = kernels::BatchNormShape {
            batch,
            channels,
            positions,
        };
        let (gx, gg, gb, gdy) = (
            upload("x", &x),
            upload("gamma", &gamma),
            upload("beta", &beta),
            upload("dy", &dy),
        );
        let (grm, grv) = (upload("running mean", &rm0), upload("running var", &rv0));
        let (gy, gdx, gdg) = (zeros("y", len), zeros("dx", len), zeros("dgamma", channels));
        let mode = |training: bool| upload_u32("mode", &[1, 0, training as u32, 0]);
        let forward = |m: &wgtrain::gpu::GpuBuffer| {
            kernels::batch_norm_forward(
                ctx,
                s,
                (eps, momentum),
                m.full(),
                gx.full(),
                (gg.full(), gb.full()),
                (grm.full(), grv.full()),
                gy.full(),
            )
            .unwrap()
        };
        let train_mode = mode(true);
        let bwd =
            kernels::batch_norm_backward(ctx, s, eps, gx.full(), gg.full(), gdy.full(), gdx.full())
                .unwrap();
        let dg =
            kernels::batch_norm_gamma_grad(ctx, s, eps, gx.full(), gdy.full(), gdg.full()).unwrap();
        // Two training steps on the same batch: the running statistics move twice.
        let fwd = forward(&train_mode);
        run(ctx, &[&fwd, &bwd, &dg, &fwd]).unwrap();
        let train_y = download(&gy);
        let (rm, rv) = (download(&grm), download(&grv));
        let eval_mode = mode(false);
        run(ctx, &[&forward(&eval_mode)]).unwrap();
        let eval_y = download(&gy);

        let x64 =
            ndarray::Array3::from_shape_vec((batch, channels, positions), to_f64(&x)).unwrap();
        let dy64 =
            ndarray::Array3::from_shape_vec((batch, channels, positions), to_f64(&dy)).unwrap();
        let (g64, b64) = (Array1::from(to_f64(&gamma)), Array1::from(to_f64(&beta)));
        let eps64 = eps as f64;
        let (mean, var) = cpu::batch_norm_stats(x64.view());
        let want_train = cpu::batch_norm_forward(
            x64.view(),
            g64.view(),
            b64.view(),
            mean.view(),
            var.view(),
            eps64,
        )
        .unwrap();
        let n = batch * positions;
        let (mut wm, mut wv) = (Array1::from(to_f64(&rm0)), Array1::from(to_f64(&rv0)));
        for _ in 0..2 {
            (wm, wv) = cpu::batch_norm_running_update(
                (wm.view(), wv.view()),
                (mean.view(), var.view()),
                n,
                momentum as f64,
            );
        }
        let want_eval = cpu::batch_norm_forward(
            x64.view(),
            g64.view(),
            b64.view(),
            wm.view(),
            wv.view(),
            eps64,
        )
        .unwrap();
        let want_dx = cpu::batch_norm_backward(x64.view(), g64.view(), dy64.view(), eps64).unwrap();
        let want_dg = cpu::batch_norm_gamma_grad(x64.view(), dy64.view(), eps64).unwrap();
        let what = format!("{batch}x{channels}x{positions}");
        // Sums over a channel's values: the reduction tolerance, grown with sqrt(n).
        let atol = 1e-5 * (n as f64).sqrt();
        let flat = |a: &ndarray::Array3<f64>| a.iter().copied().collect::<Vec<f64>>();
        assert_close(
            &format!("training forward {what}"),
            &train_y,
            &flat(&want_train),
            atol,
            1e-4,
        );
        assert_close(
            &format!("running mean {what}"),
            &rm,
            wm.as_slice().unwrap(),
            atol,
            1e-4,
        );
        assert_close(
            &format!("running variance {what}"),
            &rv,
            wv.as_slice().unwrap(),
            atol,
            1e-4,
        );
        assert_close(
            &format!("evaluation forward {what}"),
            &eval_y,
            &flat(&want_eval),
            atol,
            1e-4,
        );
        assert_close(
            &format!("dx {what}"),
            &download(&gdx),
            &flat(&want_dx),
            1e-4,
            1e-3,
        );
        assert_close(
            &format!("dgamma {what}"),
            &download(&gdg),
            want_dg.as_slice().unwrap(),
            atol * 10.0,
            1e-3,
        );
    }
}
