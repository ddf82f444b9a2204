use ndarray::{Array2, ArrayView1, ArrayView2};

use super::Scalar;
use crate::error::{Error, Result};
use crate::ops::Epilogue;

/// `C = alpha * op(A) op(B) + beta * C`, then `+ bias` and ReLU as the epilogue says: the
/// reference for the GEMM kernel.
/// With [`Epilogue::ReluGrad`], `bias` holds the ReLU's output y (m x n) and C is zeroed
/// where y is not positive.
///
/// `a` is (m, k), or (k, m) with `trans_a`; `b` is (k, n), or (n, k) with `trans_b`. With
/// `beta == 0`, C's old contents are not read (so NaN in C does not leak in).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Scalar>(
    alpha: T,
    a: ArrayView2<'_, T>,
    trans_a: bool,
    b: ArrayView2<'_, T>,
    trans_b: bool,
    beta: T,
    c: &mut Array2<T>,
    epilogue: Epilogue,
    bias: Option<ArrayView1<'_, T>>,
) -> Result<()> {
    let a = if trans_a { a.reversed_axes() } else { a };
    let b = if trans_b { b.reversed_axes() } else { b };
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    if k != k2 || c.dim() != (m, n) {
        return Err(Error::shape(
            "gemm",
            format!(
                "op(A) is {m}x{k}, op(B) is {k2}x{n}, C is {}x{}",
                c.nrows(),
                c.ncols()
            ),
        ));
    }
    let product = a.dot(&b);
    let bias_in = bias;
    let bias = match (epilogue.has_bias(), bias) {
        (true, Some(v)) if v.len() == n => Some(v),
        (true, v) => {
            return Err(Error::shape(
                "gemm",
                format!(
                    "bias of {} elements for {n} columns",
                    v.map_or(0, |v| v.len())
                ),
            ))
        }
        (false, _) => None,
    };
    // The ReLU-gradient epilogue reads y (m x n, row-major) from the bias slot.
    let relu_output = match (epilogue, bias_in) {
        (Epilogue::ReluGrad, Some(y)) if y.len() == m * n => Some(y),
        (Epilogue::ReluGrad, y) => {
            return Err(Error::shape(
                "gemm",
                format!(
                    "ReLU output of {} elements for a {m}x{n} product",
                    y.map_or(0, |v| v.len())
                ),
            ))
        }
        _ => None,
    };
    let relu = matches!(epilogue, Epilogue::BiasRelu | Epilogue::Relu);
    for ((i, j), out) in c.indexed_iter_mut() {
        let mut v = alpha * product[(i, j)];
        if beta != T::zero() {
            v = v + beta * *out;
        }
        if let Some(bias) = &bias {
            v = v + bias[j];
        }
        if relu && v < T::zero() {
            v = T::zero();
        }
        if let Some(y) = &relu_output {
            // Zero unless y > 0 (NaN included, as the shader's select).
            if y[i * n + j].partial_cmp(&T::zero()) != Some(std::cmp::Ordering::Greater) {
                v = T::zero();
            }
        }
        *out = v;
    }
    Ok(())
}
