//! ndarray reference implementation of every op, forward and backward. Needs no GPU: it
//! imports only the op vocabulary ([`crate::ops`]).
//!
//! Generic over [`Scalar`] (f32 and f64) so gradient checks can run in double precision. Each
//! function computes exactly what its WGSL kernel computes, including edge values (NaN, inf).

mod activation;
mod batch_norm;
mod channels;
mod conv;
mod dropout;
mod gemm;
mod loss;
mod norm;
mod softmax;

pub use activation::{activation_backward, activation_forward, bias_add, column_sum};
pub use batch_norm::{
    batch_norm_backward, batch_norm_forward, batch_norm_gamma_grad, batch_norm_running_update,
    batch_norm_stats,
};
pub use channels::{broadcast, concat_channels, permute, slice_channels, sum_to};
pub use conv::{
    avg_pool2d, avg_pool2d_grad, channel_sum, conv2d, conv2d_grad_input, conv2d_grad_weight,
    max_pool2d, max_pool2d_grad,
};
pub use dropout::dropout;
pub use gemm::gemm;
pub use loss::{pointwise_loss, softmax_xent};
pub use norm::{layer_norm_backward, layer_norm_forward, layer_norm_gamma_grad};
pub use softmax::{softmax_backward, softmax_forward};

/// The float types the reference runs in.
pub trait Scalar:
    num_traits::Float + ndarray::LinalgScalar + std::fmt::Debug + Send + Sync + 'static
{
    /// Converts from f64 (for constants and hyper-parameters).
    fn of(v: f64) -> Self {
        <Self as num_traits::NumCast>::from(v).expect("every f64 converts to a float type")
    }
}

impl Scalar for f32 {}
impl Scalar for f64 {}
