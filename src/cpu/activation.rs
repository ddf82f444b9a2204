use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Axis, Zip};

use super::Scalar;
use crate::error::{Error, Result};
use crate::ops::Activation;

/// The CPU arithmetic of each activation; the backward is expressed through the forward
/// output y.
impl Activation {
    /// f(x). ReLU keeps NaN and maps -inf to 0; sigmoid uses the two-sided form that never
    /// overflows.
    pub fn apply<T: Scalar>(self, x: T) -> T {
        match self {
            Activation::Relu => {
                if x < T::zero() {
                    T::zero()
                } else {
                    x
                }
            }
            Activation::Sigmoid => {
                if x >= T::zero() {
                    T::one() / (T::one() + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (T::one() + e)
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Identity => x,
        }
    }

    /// dL/dx from dL/dy and the value the backward pass keeps: y = f(x), or x where
    /// [`Activation::backward_reads_input`]. ReLU'(0) is 0.
    pub fn grad<T: Scalar>(self, saved: T, dy: T) -> T {
        let y = saved;
        match self {
            Activation::Relu => {
                if y > T::zero() {
                    dy
                } else {
                    T::zero()
                }
            }
            Activation::Sigmoid => dy * y * (T::one() - y),
            Activation::Tanh => dy * (T::one() - y * y),
            Activation::Identity => dy,
        }
    }
}

/// y = f(x) elementwise.
pub fn activation_forward<T: Scalar>(act: Activation, x: ArrayViewD<'_, T>) -> ArrayD<T> {
    x.mapv(|v| act.apply(v))
}

/// dx = f'(x) * dy, computed from `saved`: y = f(x), or x where
/// [`Activation::backward_reads_input`].
pub fn activation_backward<T: Scalar>(
    act: Activation,
    saved: ArrayViewD<'_, T>,
    dy: ArrayViewD<'_, T>,
) -> Result<ArrayD<T>> {
    if saved.shape() != dy.shape() {
        return Err(Error::shape(
            "activation_backward",
            format!("saved is {:?}, dy is {:?}", saved.shape(), dy.shape()),
        ));
    }
    Ok(Zip::from(&saved)
        .and(&dy)
        .map_collect(|&s, &dy| act.grad(s, dy)))
}

/// y += bias, broadcast over rows of a (rows, cols) array.
pub fn bias_add<T: Scalar>(y: &mut Array2<T>, bias: ArrayView1<'_, T>) -> Result<()> {
    if y.ncols() != bias.len() {
        return Err(Error::shape(
            "bias_add",
            format!("{} columns, bias of {}", y.ncols(), bias.len()),
        ));
    }
    for mut row in y.rows_mut() {
        Zip::from(&mut row).and(&bias).for_each(|y, &b| *y = *y + b);
    }
    Ok(())
}

/// Sum over rows of a (rows, cols) array: the bias gradient. Rows are added in order.
pub fn column_sum<T: Scalar>(dy: ArrayView2<'_, T>) -> ndarray::Array1<T> {
    dy.fold_axis(Axis(0), T::zero(), |&acc, &v| acc + v)
}
