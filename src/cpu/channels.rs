//! Concatenation and slicing along axis 1 (the features of a matrix, the channels of an
//! image batch): the functional API's `Concatenate` merge and its gradient.

use ndarray::{ArrayD, ArrayViewD, Axis, Slice};

use super::Scalar;

/// `xs` side by side along axis 1; every other axis must agree (checked by the caller's
/// shape rule, so a mismatch here is a bug and panics).
pub fn concat_channels<T: Scalar>(xs: &[ArrayViewD<'_, T>]) -> ArrayD<T> {
    ndarray::concatenate(Axis(1), xs).expect("concatenated shapes agree off axis 1")
}

/// Entries `start..start + len` of axis 1 of `x`.
pub fn slice_channels<T: Scalar>(x: ArrayViewD<'_, T>, start: usize, len: usize) -> ArrayD<T> {
    x.slice_axis(Axis(1), Slice::from(start..start + len))
        .to_owned()
}
