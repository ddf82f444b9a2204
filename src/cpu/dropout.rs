//! Dropout on the CPU reference, with the counter-based mask `ops::dropout_keeps` defines.

use ndarray::{ArrayD, ArrayViewD};

use super::Scalar;
use crate::ops::{dropout_keeps, dropout_key, dropout_scale, dropout_threshold};

/// Inverted dropout: `x * mask / (1 - rate)` while training, `x` otherwise. Applied to the
/// upstream gradient it is also the backward pass (the same mask for the same step).
pub fn dropout<T: Scalar>(
    x: ArrayViewD<'_, T>,
    rate: f32,
    seed: u64,
    step: u64,
    training: bool,
) -> ArrayD<T> {
    if !training {
        return x.to_owned();
    }
    let key = dropout_key(seed, step);
    let threshold = dropout_threshold(rate);
    let scale = T::of(dropout_scale(rate) as f64);
    let x = x.as_standard_layout();
    let values: Vec<T> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let keep = dropout_keeps(key, threshold, i as u32);
            v * if keep { scale } else { T::zero() }
        })
        .collect();
    ArrayD::from_shape_vec(x.raw_dim(), values).expect("same shape")
}
