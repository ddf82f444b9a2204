//! Concatenation and slicing along axis 1 (the features of a matrix, the channels of an
//! image batch): the functional API's `Concatenate` merge and its gradient.

use ndarray::{ArrayD, ArrayViewD, Axis, Dimension, IxDyn, Slice};

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

/// `x` with its axes reordered (output axis `a` is input axis `perm[a]`), in row-major
/// order.
pub fn permute<T: Scalar>(x: ArrayViewD<'_, T>, perm: &[usize]) -> ArrayD<T> {
    x.permuted_axes(IxDyn(perm)).as_standard_layout().to_owned()
}

/// `x` repeated along its axes of size 1 to `shape` (of the same rank; checked by the shape
/// rule).
pub fn broadcast<T: Scalar>(x: ArrayViewD<'_, T>, shape: &[usize]) -> ArrayD<T> {
    x.broadcast(IxDyn(shape))
        .expect("broadcastable, by the shape rule")
        .to_owned()
}

/// `x` summed over the axes where `shape` (of the same rank) has size 1 and `x` does not.
/// Each output adds its inputs in increasing index order, as the WGSL kernel does.
pub fn sum_to<T: Scalar>(x: ArrayViewD<'_, T>, shape: &[usize]) -> ArrayD<T> {
    let mut y = ArrayD::zeros(IxDyn(shape));
    let mut at = vec![0; shape.len()];
    for (idx, &v) in x.indexed_iter() {
        for (a, (&i, &n)) in at.iter_mut().zip(idx.slice().iter().zip(shape)) {
            *a = if n == 1 { 0 } else { i };
        }
        y[IxDyn(&at)] = y[IxDyn(&at)] + v;
    }
    y
}
