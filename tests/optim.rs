//! SGD and Adam kernels track the CPU update over 100 steps (fresh gradients each step).
//! Tolerance: rtol 1e-4 / atol 1e-5 after 100 steps (f32 rounding accumulates over steps).

mod common;

use common::*;
use ndarray::{Array1, ArrayView1};
use wgtrain::cpu;
use wgtrain::gpu::run;
use wgtrain::optim::{self, AdamConfig, AdamParams, SgdConfig};

/// Sizes: odd (the scalar kernels) and a multiple of 4 (the vec4 kernels).
const SIZES: [usize; 2] = [1031, 1032];
const STEPS: u64 = 100;

fn check_sgd(cfg: SgdConfig) {
    for n in SIZES {
        check_sgd_n(cfg, n);
    }
}

fn check_sgd_n(cfg: SgdConfig, n: usize) {
    let ctx = gpu();
    let p0 = uniform(1, n, -1.0, 1.0);
    let (gp, gg, gv) = (upload("p", &p0), zeros("g", n), zeros("v", n));
    // Plain SGD keeps no velocity; with momentum the kernel needs one.
    let velocity = (cfg.momentum != 0.0).then(|| gv.full());
    let l = optim::sgd(ctx, &cfg, n, gp.full(), gg.full(), velocity).unwrap();
    let (mut p, mut v) = (Array1::from(p0), Array1::<f32>::zeros(n));
    for t in 0..STEPS {
        let g = uniform(100 + t, n, -1.0, 1.0);
        gg.write(ctx, 0, &g).unwrap();
        l.run(ctx).unwrap();
        optim::sgd_step(&cfg, p.view_mut(), ArrayView1::from(&g), v.view_mut()).unwrap();
    }
    assert_close(
        &format!("{cfg:?}"),
        &download(&gp),
        &to_f64(p.as_slice().unwrap()),
        1e-5,
        1e-4,
    );
}

#[test]
fn sgd_variants_track_cpu() {
    check_sgd(SgdConfig::new(0.05));
    check_sgd(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    });
    check_sgd(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-3,
        ..SgdConfig::new(0.01)
    });
}

fn check_adam(cfg: AdamConfig) {
    for n in SIZES {
        check_adam_n(cfg, n);
    }
}

fn check_adam_n(cfg: AdamConfig, n: usize) {
    let ctx = gpu();
    let p0 = uniform(2, n, -1.0, 1.0);
    let (gp, gg, gm, gv) = (
        upload("p", &p0),
        zeros("g", n),
        zeros("m", n),
        zeros("v", n),
    );
    let l = optim::adam(ctx, &cfg, 1, n, gp.full(), gg.full(), gm.full(), gv.full()).unwrap();
    let (mut p, mut m, mut v) = (
        Array1::from(p0),
        Array1::<f32>::zeros(n),
        Array1::<f32>::zeros(n),
    );
    for t in 1..=STEPS {
        let g = uniform(200 + t, n, -1.0, 1.0);
        gg.write(ctx, 0, &g).unwrap();
        // The step count and bias corrections change each step without rebuilding the launch.
        l.set_params(ctx, &AdamParams::new(&cfg, n, t).unwrap());
        run(ctx, &[&l]).unwrap();
        optim::adam_step(
            &cfg,
            t,
            p.view_mut(),
            ArrayView1::from(&g),
            m.view_mut(),
            v.view_mut(),
        )
        .unwrap();
    }
    assert_close(
        &format!("{cfg:?}"),
        &download(&gp),
        &to_f64(p.as_slice().unwrap()),
        1e-5,
        1e-4,
    );
    assert_close(
        "adam m",
        &download(&gm),
        &to_f64(m.as_slice().unwrap()),
        1e-6,
        1e-4,
    );
}

#[test]
fn adam_and_adamw_track_cpu() {
    check_adam(AdamConfig::adam(1e-2));
    check_adam(AdamConfig {
        weight_decay: 1e-2,
        ..AdamConfig::adam(1e-3)
    });
    check_adam(AdamConfig::adamw(1e-2, 0.05));
}

#[test]
fn invalid_hyper_parameters_are_rejected() {
    let ctx = gpu();
    let b = zeros("b", 4);
    let err = optim::sgd(ctx, &SgdConfig::new(f32::NAN), 4, b.full(), b.full(), None).unwrap_err();
    assert!(err.to_string().contains("sgd"), "{err}");
    let momentum = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let err = optim::sgd(ctx, &momentum, 4, b.full(), b.full(), None).unwrap_err();
    assert!(err.to_string().contains("velocity"), "{err}");
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
