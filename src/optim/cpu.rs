//! The optimizers' steps on the CPU reference, in f32 or f64.

use ndarray::{ArrayView1, ArrayViewMut1, Zip};

use super::{AdamConfig, SgdConfig};
use crate::cpu::Scalar;
use crate::error::{Error, Result};

fn check(op: &'static str, p: usize, g: usize, s: &[usize]) -> Result<()> {
    if g != p || s.iter().any(|&l| l != p) {
        return Err(Error::shape(
            op,
            format!("{p} parameters, {g} gradients, state lengths {s:?}"),
        ));
    }
    Ok(())
}

/// One SGD step in place (PyTorch semantics; see [`SgdConfig`]).
pub fn sgd_step<T: Scalar>(
    cfg: &SgdConfig,
    mut param: ArrayViewMut1<'_, T>,
    grad: ArrayView1<'_, T>,
    mut velocity: ArrayViewMut1<'_, T>,
) -> Result<()> {
    check("sgd_step", param.len(), grad.len(), &[velocity.len()])?;
    let (lr, mom, wd) = (
        T::of(cfg.lr as f64),
        T::of(cfg.momentum as f64),
        T::of(cfg.weight_decay as f64),
    );
    Zip::from(&mut param)
        .and(&grad)
        .and(&mut velocity)
        .for_each(|p, &g, v| {
            let mut g = g + wd * *p;
            if mom != T::zero() {
                *v = mom * *v + g;
                g = if cfg.nesterov { g + mom * *v } else { *v };
            }
            *p = *p - lr * g;
        });
    Ok(())
}

/// One Adam/AdamW step in place for step number `t` (1-based).
pub fn adam_step<T: Scalar>(
    cfg: &AdamConfig,
    t: u64,
    mut param: ArrayViewMut1<'_, T>,
    grad: ArrayView1<'_, T>,
    mut m: ArrayViewMut1<'_, T>,
    mut v: ArrayViewMut1<'_, T>,
) -> Result<()> {
    check("adam_step", param.len(), grad.len(), &[m.len(), v.len()])?;
    let (bc1, bc2) = cfg.bias_corrections(t);
    let one = T::one();
    let (lr, b1, b2, eps, wd) = (
        T::of(cfg.lr as f64),
        T::of(cfg.beta1 as f64),
        T::of(cfg.beta2 as f64),
        T::of(cfg.eps as f64),
        T::of(cfg.weight_decay as f64),
    );
    let (bc1, bc2) = (T::of(bc1 as f64), T::of(bc2 as f64));
    Zip::from(&mut param)
        .and(&grad)
        .and(&mut m)
        .and(&mut v)
        .for_each(|p, &g, m, v| {
            let mut g = g;
            if cfg.decoupled {
                *p = *p * (one - lr * wd);
            } else {
                g = g + wd * *p;
            }
            *m = b1 * *m + (one - b1) * g;
            *v = b2 * *v + (one - b2) * g * g;
            *p = *p - lr * (*m / bc1) / ((*v / bc2).sqrt() + eps);
        });
    Ok(())
}
