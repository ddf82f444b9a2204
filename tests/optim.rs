//! Every optimizer's GPU update tracks its CPU step over 100 steps (fresh gradients each
//! step); Lion and AMSGrad against their published update rules in f64.
//! Tolerance: rtol 1e-4 / atol 1e-5 after 100 steps (f32 rounding accumulates over steps).

mod common;

use common::*;
use ndarray::{Array1, ArrayView1};
use wgtrain::optim::{self, AdamConfig, LionConfig, Optimizer, SgdConfig};

/// Sizes: odd (the scalar kernels) and a multiple of 4 (the vec4 kernels).
const SIZES: [usize; 2] = [1031, 1032];
const STEPS: u64 = 100;

/// Runs `opt`'s GPU update and its CPU step side by side for 100 steps of fresh gradients,
/// through the table executors use (`gpu_update`, `write_gpu_params`, `cpu_step`), and
/// compares the parameters and every state slot.
fn check_tracks_cpu(opt: Optimizer) {
    for n in SIZES {
        let ctx = gpu();
        let p0 = uniform(2, n, -1.0, 1.0);
        let slots = opt.state_slots();
        let (gp, gg) = (upload("p", &p0), zeros("g", n));
        let gs: Vec<_> = slots.iter().map(|s| zeros(s, n)).collect();
        let views: Vec<_> = gs.iter().map(|b| b.full()).collect();
        let kernel = opt
            .gpu_update(ctx, 1, n, gp.full(), gg.full(), &views)
            .unwrap();
        let mut p = Array1::from(p0);
        let mut state = vec![Array1::<f32>::zeros(n); slots.len()];
        for t in 1..=STEPS {
            let g = uniform(200 + t, n, -1.0, 1.0);
            gg.write(ctx, 0, &g).unwrap();
            // Step-dependent parameters change without rebuilding the launch.
            opt.write_gpu_params(ctx, &kernel, 0, n, t).unwrap();
            kernel.run(ctx).unwrap();
            let mut views: Vec<_> = state.iter_mut().map(|s| s.view_mut()).collect();
            opt.cpu_step(t, p.view_mut(), ArrayView1::from(&g), &mut views)
                .unwrap();
        }
        let what = format!("{opt:?} n={n}");
        assert_close(
            &what,
            &download(&gp),
            &to_f64(p.as_slice().unwrap()),
            1e-5,
            1e-4,
        );
        for ((slot, buf), want) in slots.iter().zip(&gs).zip(&state) {
            let want = to_f64(want.as_slice().unwrap());
            assert_close(&format!("{what} {slot}"), &download(buf), &want, 1e-6, 1e-4);
        }
    }
}

#[test]
fn sgd_variants_track_cpu() {
    check_tracks_cpu(Optimizer::Sgd(SgdConfig::new(0.05)));
    check_tracks_cpu(Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    }));
    check_tracks_cpu(Optimizer::Sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-3,
        ..SgdConfig::new(0.01)
    }));
}

#[test]
fn adam_adamw_and_amsgrad_track_cpu() {
    check_tracks_cpu(Optimizer::Adam(AdamConfig::adam(1e-2)));
    check_tracks_cpu(Optimizer::Adam(AdamConfig {
        weight_decay: 1e-2,
        ..AdamConfig::adam(1e-3)
    }));
    check_tracks_cpu(Optimizer::Adam(AdamConfig::adamw(1e-2, 0.05)));
    check_tracks_cpu(Optimizer::Adam(AdamConfig::adam(1e-2).with_amsgrad()));
    check_tracks_cpu(Optimizer::Adam(
        AdamConfig::adamw(1e-2, 0.05).with_amsgrad(),
    ));
}

#[test]
fn lion_tracks_cpu() {
    check_tracks_cpu(Optimizer::Lion(LionConfig::new(1e-3)));
    check_tracks_cpu(Optimizer::Lion(LionConfig {
        weight_decay: 0.5,
        beta1: 0.95,
        beta2: 0.98,
        ..LionConfig::new(3e-4)
    }));
}

/// Gradients whose sign and size change from step to step, so that a running maximum and a
/// sign both matter.
fn wavy_gradients(steps: u64, n: usize) -> Vec<Vec<f64>> {
    (1..=steps)
        .map(|t| {
            (0..n)
                .map(|i| {
                    let (t, i) = (t as f64, i as f64);
                    (0.7 * t + 1.3 * i).sin() * (1.0 + 0.5 * (0.3 * t).cos()) - 0.05 * i
                })
                .collect()
        })
        .collect()
}

/// The CPU step in f64 against PyTorch's AMSGrad (torch.optim.Adam with amsgrad=True, L2
/// weight decay; and AdamW's decoupled form), written out from its documented algorithm:
/// `v_max = max(v_max, v); denom = sqrt(v_max) / sqrt(1 - b2^t) + eps;
/// p -= lr / (1 - b1^t) * m / denom`.
#[test]
fn amsgrad_matches_pytorch_formula_in_f64() {
    let (n, steps) = (7, 40);
    for (decoupled, wd) in [(false, 0.01), (true, 0.1)] {
        // beta2 0.9, so that v follows g^2 down and the maximum binds.
        let cfg = AdamConfig {
            beta2: 0.9,
            weight_decay: wd,
            decoupled,
            ..AdamConfig::adam(0.05)
        }
        .with_amsgrad();
        let opt = Optimizer::Adam(cfg);
        assert_eq!(opt.state_slots(), ["m", "v", "v_max"]);
        let grads = wavy_gradients(steps, n);
        let mut p = Array1::from_iter((0..n).map(|i| 0.3 - 0.1 * i as f64));
        let mut state = vec![Array1::<f64>::zeros(n); 3];
        let mut want = p.to_vec();
        let (mut m, mut v, mut v_max) = (vec![0.0; n], vec![0.0; n], vec![0.0f64; n]);
        let (b1, b2, eps, lr) = (0.9f64, 0.9f64, 1e-8f64, 0.05f64);
        let (b1, b2) = (b1 as f32 as f64, b2 as f32 as f64);
        let (eps, lr, wd) = (eps as f32 as f64, lr as f32 as f64, wd as f64);
        let mut max_gap = 0.0f64;
        for (t, g) in (1..=steps).zip(&grads) {
            let mut views: Vec<_> = state.iter_mut().map(|s| s.view_mut()).collect();
            opt.cpu_step(t, p.view_mut(), ArrayView1::from(g), &mut views)
                .unwrap();
            let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for i in 0..n {
                let mut gi = g[i];
                if decoupled {
                    want[i] *= 1.0 - lr * wd;
                } else {
                    gi += wd * want[i];
                }
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                v_max[i] = v_max[i].max(v[i]);
                let denom = v_max[i].sqrt() / bc2.sqrt() + eps;
                want[i] -= lr / bc1 * m[i] / denom;
            }
            // The maximum must bind at some step, or this test would not tell AMSGrad from Adam.
            max_gap = v_max
                .iter()
                .zip(&v)
                .map(|(a, b)| a - b)
                .fold(max_gap, f64::max);
        }
        assert!(max_gap > 1e-4, "v never fell below its maximum");
        // f64 throughout; the bias corrections are rounded to f32 once (as on the GPU).
        assert_close(
            &format!("amsgrad decoupled={decoupled}"),
            &p.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            &want,
            1e-6,
            1e-5,
        );
        let got_max = state[2].to_vec();
        for (g, w) in got_max.iter().zip(&v_max) {
            assert!((g - w).abs() <= 1e-12 + 1e-9 * w.abs(), "v_max {g} vs {w}");
        }
    }
}

/// The CPU step in f64 against Lion's published update (Chen et al. 2023, Algorithm 2, as
/// the authors' lion-pytorch implements it).
#[test]
fn lion_matches_published_update_in_f64() {
    let (n, steps) = (9, 30);
    let cfg = LionConfig {
        weight_decay: 0.2,
        ..LionConfig::new(0.01)
    };
    let opt = Optimizer::Lion(cfg);
    assert_eq!(opt.state_slots(), ["m"]);
    let grads = wavy_gradients(steps, n);
    let mut p = Array1::from_iter((0..n).map(|i| 0.5 - 0.1 * i as f64));
    let mut state = [Array1::<f64>::zeros(n)];
    let mut want = p.to_vec();
    let mut m = vec![0.0f64; n];
    let (lr, b1, b2, wd) = (0.01f32 as f64, 0.9f32 as f64, 0.99f32 as f64, 0.2f32 as f64);
    for (t, g) in (1..=steps).zip(&grads) {
        let mut views: Vec<_> = state.iter_mut().map(|s| s.view_mut()).collect();
        opt.cpu_step(t, p.view_mut(), ArrayView1::from(g), &mut views)
            .unwrap();
        for i in 0..n {
            want[i] *= 1.0 - lr * wd;
            let c = b1 * m[i] + (1.0 - b1) * g[i];
            want[i] -= lr * if c == 0.0 { 0.0 } else { c.signum() };
            m[i] = b2 * m[i] + (1.0 - b2) * g[i];
        }
    }
    for (i, (&got, &w)) in p.iter().zip(&want).enumerate() {
        assert!((got - w).abs() <= 1e-12, "p[{i}] {got} vs {w}");
    }
    // A zero interpolation moves nothing but the decay: sign(0) = 0.
    let mut p = Array1::from(vec![1.0f64]);
    let mut state = [Array1::from(vec![0.0f64])];
    let mut views: Vec<_> = state.iter_mut().map(|s| s.view_mut()).collect();
    Optimizer::Lion(LionConfig::new(0.1))
        .cpu_step(1, p.view_mut(), ArrayView1::from(&[0.0f64][..]), &mut views)
        .unwrap();
    assert_eq!(p[0], 1.0);
}

/// State of the wrong number of slots or length is refused, naming the slots.
#[test]
fn state_must_match_the_slots() {
    let ctx = gpu();
    let b = zeros("b", 4);
    let adam = Optimizer::Adam(AdamConfig::adam(1e-3).with_amsgrad());
    let err = adam
        .gpu_update(ctx, 1, 4, b.full(), b.full(), &[b.full(), b.full()])
        .unwrap_err();
    assert!(err.to_string().contains("v_max"), "{err}");
    let mut p = Array1::<f32>::zeros(4);
    let g = Array1::<f32>::zeros(4);
    let mut short = Array1::<f32>::zeros(3);
    let err = Optimizer::Lion(LionConfig::new(1e-3))
        .cpu_step(1, p.view_mut(), g.view(), &mut [short.view_mut()])
        .unwrap_err();
    assert!(err.to_string().contains("lion"), "{err}");
}

#[test]
fn invalid_hyper_parameters_are_rejected() {
    let ctx = gpu();
    let b = zeros("b", 4);
    let err = optim::sgd(ctx, &SgdConfig::new(f32::NAN), 4, b.full(), b.full(), &[]).unwrap_err();
    assert!(err.to_string().contains("sgd"), "{err}");
    let momentum = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let err = optim::sgd(ctx, &momentum, 4, b.full(), b.full(), &[]).unwrap_err();
    assert!(err.to_string().contains("momentum"), "{err}");
    assert!(AdamConfig {
        beta1: 1.0,
        ..AdamConfig::adam(1e-3)
    }
    .validate()
    .is_err());
}

#[test]
fn learning_rate_schedules() {
    use wgtrain::optim::LrSchedule;
    let step = LrSchedule::Step {
        every: 10,
        gamma: 0.5,
    };
    assert_eq!(step.lr_at(0.1, 0), 0.1);
    assert_eq!(step.lr_at(0.1, 9), 0.1);
    assert_eq!(step.lr_at(0.1, 10), 0.05);
    assert_eq!(step.lr_at(0.1, 25), 0.025);
    let cosine = LrSchedule::Cosine {
        decay_steps: 100,
        alpha: 0.1,
    };
    assert_eq!(cosine.lr_at(1.0, 0), 1.0);
    assert!((cosine.lr_at(1.0, 50) - 0.55).abs() < 1e-7);
    assert!((cosine.lr_at(1.0, 100) - 0.1).abs() < 1e-7);
    assert_eq!(cosine.lr_at(1.0, 1000), cosine.lr_at(1.0, 100));
    assert_eq!(LrSchedule::Constant.lr_at(0.3, 12345), 0.3);
    for bad in [
        LrSchedule::Step {
            every: 0,
            gamma: 0.5,
        },
        LrSchedule::Step {
            every: 1,
            gamma: f32::NAN,
        },
        LrSchedule::Cosine {
            decay_steps: 0,
            alpha: 0.0,
        },
        LrSchedule::Cosine {
            decay_steps: 5,
            alpha: 1.5,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

/// The warm-up cosine schedule: linear from base / warmup to base over the warm-up, then
/// Keras' cosine decay, against values computed by hand.
#[test]
fn warmup_cosine_schedule() {
    let s = wgtrain::optim::LrSchedule::WarmupCosine {
        warmup_steps: 4,
        decay_steps: 10,
        alpha: 0.1,
    };
    s.validate().unwrap();
    let lr = |t| s.lr_at(0.2, t) as f64;
    for (t, want) in [
        (0, 0.05),
        (1, 0.1),
        (3, 0.2),
        (4, 0.2),
        (9, 0.2 * (0.9 * 0.5 + 0.1)),
        (14, 0.02),
        (100, 0.02),
    ] {
        assert!((lr(t) - want).abs() < 1e-7, "step {t}: {} vs {want}", lr(t));
    }
    let bad = wgtrain::optim::LrSchedule::WarmupCosine {
        warmup_steps: 4,
        decay_steps: 0,
        alpha: 0.1,
    };
    assert!(bad.validate().is_err());
}
