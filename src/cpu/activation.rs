use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Axis, Zip};

use super::Scalar;
use crate::error::{Error, Result};
use crate::ops::Activation;

/// The CPU arithmetic of each activation.
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
            Activation::Gelu if x.abs() >= T::of(GELU_RELU_FROM) => Activation::Relu.apply(x),
            Activation::Gelu => x * Activation::Sigmoid.apply(T::of(2.0) * gelu_u(x)),
            Activation::Silu => x * Activation::Sigmoid.apply(x),
            Activation::LeakyRelu => {
                if x < T::zero() {
                    x * T::of(crate::ops::LEAKY_RELU_SLOPE)
                } else {
                    x
                }
            }
            Activation::Elu => {
                if x > T::zero() {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Activation::Softplus => x.max(T::zero()) + (-x.abs()).exp().ln_1p(),
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
            Activation::Gelu => {
                let x = saved;
                if x.abs() >= T::of(GELU_RELU_FROM) {
                    return if x > T::zero() { dy } else { T::zero() };
                }
                // d/dx [x s(2u)] = s + x s (1 - s) 2 u'(x)
                let s = Activation::Sigmoid.apply(T::of(2.0) * gelu_u(x));
                let du = T::of(GELU_K0) * (T::one() + T::of(3.0 * GELU_K1) * x * x);
                dy * (s + x * s * (T::one() - s) * T::of(2.0) * du)
            }
            Activation::Silu => {
                // d/dx [x s(x)] = s + x s (1 - s)
                let (x, s) = (saved, Activation::Sigmoid.apply(saved));
                dy * (s + x * s * (T::one() - s))
            }
            // y has x's sign, so the rule reads y.
            Activation::LeakyRelu => {
                if y > T::zero() {
                    dy
                } else {
                    dy * T::of(crate::ops::LEAKY_RELU_SLOPE)
                }
            }
            // Below zero f'(x) = exp(x) = y + 1.
            Activation::Elu => {
                if y > T::zero() {
                    dy
                } else {
                    dy * (y + T::one())
                }
            }
            Activation::Softplus => dy * Activation::Sigmoid.apply(saved),
        }
    }
}

/// sqrt(2 / pi) and the cubic coefficient of GELU's tanh form.
const GELU_K0: f64 = 0.797_884_560_802_865_4;
const GELU_K1: f64 = 0.044_715;
/// From here on GELU is ReLU to f32 precision (and x^3 would overflow further out).
const GELU_RELU_FROM: f64 = 10.0;

/// u(x) = sqrt(2/pi) (x + 0.044715 x^3): GELU = x sigmoid(2u) = 0.5 x (1 + tanh(u)).
fn gelu_u<T: Scalar>(x: T) -> T {
    T::of(GELU_K0) * (x + T::of(GELU_K1) * x * x * x)
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
