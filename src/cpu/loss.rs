use ndarray::{Array2, ArrayView1, ArrayView2, Zip};

use super::Scalar;
use crate::error::{Error, Result};
use crate::ops::PointwiseLoss;

/// Fused softmax + cross-entropy from integer labels: (mean loss, d_logits), with
/// d_logits = (softmax - target) / rows, the target `(1 - smoothing) * onehot + smoothing /
/// classes` (label smoothing; 0 is the plain one-hot). An out-of-range label gives a NaN
/// loss.
pub fn softmax_xent<T: Scalar>(
    logits: ArrayView2<'_, T>,
    labels: ArrayView1<'_, u32>,
    smoothing: T,
) -> Result<(T, Array2<T>)> {
    let (rows, cols) = logits.dim();
    if labels.len() != rows {
        return Err(Error::shape(
            "softmax_xent",
            format!("{rows} rows of logits, {} labels", labels.len()),
        ));
    }
    let inv_rows = T::one() / T::of(rows as f64);
    let mut grad = Array2::zeros((rows, cols));
    let mut total = T::zero();
    for (i, row) in logits.rows().into_iter().enumerate() {
        let mut m = row[0];
        for &v in row.iter().skip(1) {
            if v > m {
                m = v;
            }
        }
        let s = row.iter().fold(T::zero(), |acc, &v| acc + (v - m).exp());
        let label = labels[i] as usize;
        let (hit, rest) = (T::one() - smoothing, smoothing / T::of(cols as f64));
        for (j, &v) in row.iter().enumerate() {
            let p = (v - m).exp() / s;
            let target = if j == label { hit + rest } else { rest };
            grad[(i, j)] = (p - target) * inv_rows;
        }
        // -sum_j t_j log p_j = logsumexp - (1 - smoothing) z_label - smoothing mean_j z_j.
        let row_loss = if label >= cols {
            T::nan()
        } else if smoothing == T::zero() {
            s.ln() + m - row[label]
        } else {
            let mean = row.iter().fold(T::zero(), |a, &v| a + v) / T::of(cols as f64);
            s.ln() + m - hit * row[label] - smoothing * mean
        };
        total = total + row_loss;
    }
    Ok((total * inv_rows, grad))
}

const BCE_EPS: f64 = 1e-7;

impl PointwiseLoss {
    /// (loss, dloss/dp) for one element.
    pub fn eval<T: Scalar>(self, p: T, t: T) -> (T, T) {
        let one = T::one();
        match self {
            PointwiseLoss::MeanSquaredError => {
                let d = p - t;
                (d * d, T::of(2.0) * d)
            }
            PointwiseLoss::BinaryCrossEntropy => {
                // f32 rounds 1 - 1e-7 the same way the shader does.
                let eps = T::of(BCE_EPS);
                let q = p.max(eps).min(one - eps);
                let q = if p.is_nan() { p } else { q };
                (
                    -(t * q.ln() + (one - t) * (one - q).ln()),
                    (q - t) / (q * (one - q)),
                )
            }
            PointwiseLoss::BinaryCrossEntropyWithLogits => {
                let l = p.max(T::zero()) - p * t + (one + (-p.abs()).exp()).ln();
                let sig = if p >= T::zero() {
                    one / (one + (-p).exp())
                } else {
                    let e = p.exp();
                    e / (one + e)
                };
                (l, sig - t)
            }
            PointwiseLoss::MeanAbsoluteError => {
                let d = p - t;
                (d.abs(), sign(d))
            }
            PointwiseLoss::Huber => {
                let d = p - t;
                if d.abs() <= one {
                    (T::of(0.5) * d * d, d)
                } else {
                    (d.abs() - T::of(0.5), sign(d))
                }
            }
        }
    }
}

/// -1, 0 or 1 (WGSL's `sign`; NaN stays NaN).
fn sign<T: Scalar>(d: T) -> T {
    if d > T::zero() {
        T::one()
    } else if d < T::zero() {
        -T::one()
    } else {
        d * T::zero()
    }
}

/// Mean loss and its gradient (d mean / d prediction) for a pointwise loss.
pub fn pointwise_loss<T: Scalar>(
    kind: PointwiseLoss,
    prediction: ArrayView2<'_, T>,
    target: ArrayView2<'_, T>,
) -> Result<(T, Array2<T>)> {
    if prediction.dim() != target.dim() {
        return Err(Error::shape(
            "pointwise_loss",
            format!(
                "prediction is {:?}, target is {:?}",
                prediction.dim(),
                target.dim()
            ),
        ));
    }
    let inv_n = T::one() / T::of(prediction.len() as f64);
    let mut total = T::zero();
    let grad = Zip::from(&prediction).and(&target).map_collect(|&p, &t| {
        let (l, g) = kind.eval(p, t);
        total = total + l;
        g * inv_n
    });
    Ok((total * inv_n, grad))
}
