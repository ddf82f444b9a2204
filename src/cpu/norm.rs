//! Layer normalization over the last axis of a (rows, features) array, forward and backward:
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta` per row, with the population variance
//! computed in two passes (mean first, then squared deviations).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use super::Scalar;
use crate::error::{Error, Result};

/// Each row's mean and 1 / sqrt(var + eps).
fn row_stats<T: Scalar>(x: ArrayView2<'_, T>, eps: T) -> Vec<(T, T)> {
    let n = T::of(x.ncols() as f64);
    x.axis_iter(Axis(0))
        .map(|row| {
            let mean = row.iter().fold(T::zero(), |a, &v| a + v) / n;
            let var = row
                .iter()
                .fold(T::zero(), |a, &v| a + (v - mean) * (v - mean))
                / n;
            (mean, T::one() / (var + eps).sqrt())
        })
        .collect()
}

fn check<T: Scalar>(op: &'static str, x: &ArrayView2<'_, T>, v: &ArrayView1<'_, T>) -> Result<()> {
    if v.len() != x.ncols() {
        return Err(Error::shape(
            op,
            format!("{} per-feature values for rows of {}", v.len(), x.ncols()),
        ));
    }
    Ok(())
}

/// `y = (x - mean) * invstd * gamma + beta`, row by row.
pub fn layer_norm_forward<T: Scalar>(
    x: ArrayView2<'_, T>,
    gamma: ArrayView1<'_, T>,
    beta: ArrayView1<'_, T>,
    eps: T,
) -> Result<Array2<T>> {
    check("layer_norm", &x, &gamma)?;
    check("layer_norm", &x, &beta)?;
    let stats = row_stats(x, eps);
    let mut y = x.to_owned();
    for (mut row, &(mean, inv)) in y.axis_iter_mut(Axis(0)).zip(&stats) {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * gamma[j] + beta[j];
        }
    }
    Ok(y)
}

/// dL/dx: with g = dy * gamma and xhat = (x - mean) * invstd,
/// `dx = invstd * (g - mean(g) - xhat * mean(g * xhat))` per row.
pub fn layer_norm_backward<T: Scalar>(
    x: ArrayView2<'_, T>,
    gamma: ArrayView1<'_, T>,
    dy: ArrayView2<'_, T>,
    eps: T,
) -> Result<Array2<T>> {
    check("layer_norm_grad", &x, &gamma)?;
    if dy.dim() != x.dim() {
        return Err(Error::shape(
            "layer_norm_grad",
            format!("dy is {:?}, x is {:?}", dy.dim(), x.dim()),
        ));
    }
    let n = T::of(x.ncols() as f64);
    let stats = row_stats(x, eps);
    let mut dx = Array2::zeros(x.dim());
    for (r, &(mean, inv)) in stats.iter().enumerate() {
        let (mut sum_g, mut sum_gx) = (T::zero(), T::zero());
        for j in 0..x.ncols() {
            let g = dy[[r, j]] * gamma[j];
            sum_g = sum_g + g;
            sum_gx = sum_gx + g * (x[[r, j]] - mean) * inv;
        }
        let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
        for j in 0..x.ncols() {
            let g = dy[[r, j]] * gamma[j];
            let xhat = (x[[r, j]] - mean) * inv;
            dx[[r, j]] = inv * (g - mean_g - xhat * mean_gx);
        }
    }
    Ok(dx)
}

/// dL/dgamma: `sum over rows of dy * xhat` (dL/dbeta is the column sum of dy).
pub fn layer_norm_gamma_grad<T: Scalar>(
    x: ArrayView2<'_, T>,
    dy: ArrayView2<'_, T>,
    eps: T,
) -> Result<Array1<T>> {
    if dy.dim() != x.dim() {
        return Err(Error::shape(
            "layer_norm_gamma_grad",
            format!("dy is {:?}, x is {:?}", dy.dim(), x.dim()),
        ));
    }
    let stats = row_stats(x, eps);
    let mut dg = Array1::zeros(x.ncols());
    for (r, &(mean, inv)) in stats.iter().enumerate() {
        for j in 0..x.ncols() {
            dg[j] = dg[j] + dy[[r, j]] * (x[[r, j]] - mean) * inv;
        }
    }
    Ok(dg)
}
