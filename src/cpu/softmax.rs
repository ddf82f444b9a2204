use ndarray::{Array2, ArrayView2, Zip};

use super::Scalar;
use crate::error::{Error, Result};

/// Row softmax with the row maximum subtracted first (exp cannot overflow; a shift leaves
/// softmax unchanged). NaN anywhere in a row makes the row NaN.
pub fn softmax_forward<T: Scalar>(x: ArrayView2<'_, T>) -> Array2<T> {
    let mut y = x.to_owned();
    for mut row in y.rows_mut() {
        let mut m = row[0];
        for &v in row.iter().skip(1) {
            if v > m {
                m = v;
            }
        }
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.iter().fold(T::zero(), |acc, &v| acc + v);
        let inv = T::one() / s;
        row.mapv_inplace(|v| v * inv);
    }
    y
}

/// dx = y * (dy - sum(dy * y)) per row.
pub fn softmax_backward<T: Scalar>(
    y: ArrayView2<'_, T>,
    dy: ArrayView2<'_, T>,
) -> Result<Array2<T>> {
    if y.dim() != dy.dim() {
        return Err(Error::shape(
            "softmax_backward",
            format!("y is {:?}, dy is {:?}", y.dim(), dy.dim()),
        ));
    }
    let mut dx = Array2::zeros(y.dim());
    for ((y, dy), mut dx) in y.rows().into_iter().zip(dy.rows()).zip(dx.rows_mut()) {
        let dot = Zip::from(&y)
            .and(&dy)
            .fold(T::zero(), |acc, &y, &dy| acc + y * dy);
        Zip::from(&mut dx)
            .and(&y)
            .and(&dy)
            .for_each(|dx, &y, &dy| *dx = y * (dy - dot));
    }
    Ok(dx)
}
