//! Batch normalization over the channels of (batch, channels, positions) arrays (dense
//! features are (batch, features, 1), images (batch, channels, h * w)), PyTorch's convention:
//! - training normalizes with the batch's mean and population (biased) variance over the
//!   batch and positions of each channel, computed in two passes;
//! - the running statistics then move as `running = (1 - momentum) * running + momentum *
//!   batch`, with the variance's unbiased form `var * n / (n - 1)` (n values per channel; with
//!   n = 1 the biased value, 0);
//! - evaluation normalizes with the running statistics.
//!
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta` either way.
//!
//! The per-channel sums (the statistics, and the backward pass's sums of dy and dy * xhat)
//! run over batch x positions values, 50,176 for 64 images of 28x28: they accumulate in f64
//! and round once, so an f32 run's statistics are the correctly rounded f64 ones rather than
//! a serial f32 fold's (ARCHITECTURE.md, "Accumulation").

use ndarray::{Array1, Array3, ArrayView1, ArrayView3, Axis, Zip};

use super::Scalar;
use crate::error::{Error, Result};

fn check<T: Scalar>(
    op: &'static str,
    x: &ArrayView3<'_, T>,
    lengths: &[(&str, usize)],
) -> Result<()> {
    let c = x.len_of(Axis(1));
    for (what, len) in lengths {
        if *len != c {
            return Err(Error::shape(
                op,
                format!("{what} has {len} values for {c} channels"),
            ));
        }
    }
    Ok(())
}

/// `v` in f64, the type every long sum here accumulates in.
fn wide<T: Scalar>(v: T) -> f64 {
    v.to_f64().expect("a float converts to f64")
}

/// Each channel's mean and population variance over the batch and positions, two passes
/// in f64, each rounded once.
pub fn batch_norm_stats<T: Scalar>(x: ArrayView3<'_, T>) -> (Array1<T>, Array1<T>) {
    let n = (x.len_of(Axis(0)) * x.len_of(Axis(2))) as f64;
    let c = x.len_of(Axis(1));
    let mut mean = Array1::zeros(c);
    let mut var = Array1::zeros(c);
    for ch in 0..c {
        let values = x.index_axis(Axis(1), ch);
        let m = values.iter().fold(0.0, |a, &v| a + wide(v)) / n;
        let s = values.iter().fold(0.0, |a, &v| {
            let d = wide(v) - m;
            a + d * d
        });
        mean[ch] = T::of(m);
        var[ch] = T::of(s / n);
    }
    (mean, var)
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` with the given per-channel statistics
/// (the batch's when training, the running ones when evaluating).
pub fn batch_norm_forward<T: Scalar>(
    x: ArrayView3<'_, T>,
    gamma: ArrayView1<'_, T>,
    beta: ArrayView1<'_, T>,
    mean: ArrayView1<'_, T>,
    var: ArrayView1<'_, T>,
    eps: T,
) -> Result<Array3<T>> {
    let lengths = [
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("mean", mean.len()),
        ("var", var.len()),
    ];
    check("batch_norm", &x, &lengths)?;
    let mut y = x.to_owned();
    for (ch, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let inv = T::one() / (var[ch] + eps).sqrt();
        plane.mapv_inplace(|v| (v - mean[ch]) * inv * gamma[ch] + beta[ch]);
    }
    Ok(y)
}

/// The running statistics after a training step whose batch had `mean` and (population)
/// `var` over `n` values per channel.
pub fn batch_norm_running_update<T: Scalar>(
    running: (ArrayView1<'_, T>, ArrayView1<'_, T>),
    batch: (ArrayView1<'_, T>, ArrayView1<'_, T>),
    n: usize,
    momentum: T,
) -> (Array1<T>, Array1<T>) {
    let unbias = if n > 1 {
        T::of(n as f64) / T::of((n - 1) as f64)
    } else {
        T::one()
    };
    let keep = T::one() - momentum;
    let mean = Zip::from(running.0)
        .and(batch.0)
        .map_collect(|&r, &b| keep * r + momentum * b);
    let var = Zip::from(running.1)
        .and(batch.1)
        .map_collect(|&r, &b| keep * r + momentum * (b * unbias));
    (mean, var)
}

/// Per channel: (invstd, sum of dy, sum of dy * xhat), xhat = (x - mean) * invstd with the
/// batch's statistics.
fn grad_sums<T: Scalar>(x: ArrayView3<'_, T>, dy: ArrayView3<'_, T>, eps: T) -> Vec<(T, T, T, T)> {
    let (mean, var) = batch_norm_stats(x);
    (0..x.len_of(Axis(1)))
        .map(|ch| {
            let inv = T::one() / (var[ch] + eps).sqrt();
            let (xs, ds) = (x.index_axis(Axis(1), ch), dy.index_axis(Axis(1), ch));
            // Each term as the forward pass rounds xhat; the sums in f64.
            let (mut sum_dy, mut sum_dyx) = (0.0, 0.0);
            Zip::from(&xs).and(&ds).for_each(|&v, &d| {
                sum_dy += wide(d);
                sum_dyx += wide(d) * wide((v - mean[ch]) * inv);
            });
            (mean[ch], inv, T::of(sum_dy), T::of(sum_dyx))
        })
        .collect()
}

fn same_shape<T: Scalar>(
    op: &'static str,
    x: &ArrayView3<'_, T>,
    dy: &ArrayView3<'_, T>,
) -> Result<()> {
    if x.shape() != dy.shape() {
        return Err(Error::shape(
            op,
            format!("dy is {:?}, x is {:?}", dy.shape(), x.shape()),
        ));
    }
    Ok(())
}

/// dL/dx through the batch statistics (training): per channel, with n values,
/// `dx = gamma * invstd / n * (n * dy - sum(dy) - xhat * sum(dy * xhat))`.
pub fn batch_norm_backward<T: Scalar>(
    x: ArrayView3<'_, T>,
    gamma: ArrayView1<'_, T>,
    dy: ArrayView3<'_, T>,
    eps: T,
) -> Result<Array3<T>> {
    check("batch_norm_grad", &x, &[("gamma", gamma.len())])?;
    same_shape("batch_norm_grad", &x, &dy)?;
    let n = T::of((x.len_of(Axis(0)) * x.len_of(Axis(2))) as f64);
    let sums = grad_sums(x, dy, eps);
    let mut dx = Array3::zeros(x.raw_dim());
    for (ch, &(mean, inv, sum_dy, sum_dyx)) in sums.iter().enumerate() {
        let scale = gamma[ch] * inv / n;
        Zip::from(dx.index_axis_mut(Axis(1), ch))
            .and(x.index_axis(Axis(1), ch))
            .and(dy.index_axis(Axis(1), ch))
            .for_each(|o, &v, &d| {
                let xhat = (v - mean) * inv;
                *o = scale * (n * d - sum_dy - xhat * sum_dyx);
            });
    }
    Ok(dx)
}

/// dL/dgamma: per channel, the sum of dy * xhat over the batch and positions.
pub fn batch_norm_gamma_grad<T: Scalar>(
    x: ArrayView3<'_, T>,
    dy: ArrayView3<'_, T>,
    eps: T,
) -> Result<Array1<T>> {
    same_shape("batch_norm_gamma_grad", &x, &dy)?;
    Ok(grad_sums(x, dy, eps).iter().map(|s| s.3).collect())
}
