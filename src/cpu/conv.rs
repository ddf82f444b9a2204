//! Convolution and pooling over NCHW arrays: the reference the WGSL kernels in
//! shaders/conv.wgsl are checked against, forward and backward.
//!
//! Conventions (PyTorch's): x is (n, c, h, w), a convolution kernel (out, c, kh, kw), zero
//! padding `pad` on every side, output size `(h + 2 pad - kh) / stride + 1`. Pooling windows do
//! not pad. Max pooling sends the gradient to the first maximum of each window in row-major
//! order (NaN never wins a comparison after the first element).

use ndarray::{Array1, Array4, ArrayView1, ArrayView4};

use super::Scalar;
use crate::ops::Window;

fn dims(x: &ArrayView4<'_, impl Scalar>) -> (usize, usize, usize, usize) {
    let s = x.shape();
    (s[0], s[1], s[2], s[3])
}

/// y = conv(x, weight) + bias.
pub fn conv2d<T: Scalar>(
    x: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: ArrayView1<'_, T>,
    win: Window,
) -> Array4<T> {
    let (n, c, h, w) = dims(&x);
    let oc = weight.shape()[0];
    let (oh, ow) = win.output(h, w).expect("shapes were inferred");
    let mut y = Array4::zeros((n, oc, oh, ow));
    for b in 0..n {
        for o in 0..oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = T::zero();
                    for ci in 0..c {
                        for ky in 0..win.kh {
                            let iy = win.input(oy, ky);
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..win.kw {
                                let ix = win.input(ox, kx);
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                s = s + x[[b, ci, iy as usize, ix as usize]]
                                    * weight[[o, ci, ky, kx]];
                            }
                        }
                    }
                    y[[b, o, oy, ox]] = s + bias[o];
                }
            }
        }
    }
    y
}

/// dx of a convolution from dy, for an input of `(h, w)`.
pub fn conv2d_grad_input<T: Scalar>(
    dy: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    win: Window,
    (h, w): (usize, usize),
) -> Array4<T> {
    let (n, oc, oh, ow) = dims(&dy);
    let c = weight.shape()[1];
    let mut dx = Array4::zeros((n, c, h, w));
    for b in 0..n {
        for o in 0..oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[[b, o, oy, ox]];
                    for ci in 0..c {
                        for ky in 0..win.kh {
                            let iy = win.input(oy, ky);
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..win.kw {
                                let ix = win.input(ox, kx);
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let at = [b, ci, iy as usize, ix as usize];
                                dx[at] = dx[at] + g * weight[[o, ci, ky, kx]];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// d weight of a convolution from x and dy.
pub fn conv2d_grad_weight<T: Scalar>(
    x: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    win: Window,
) -> Array4<T> {
    let (n, c, h, w) = dims(&x);
    let (_, oc, oh, ow) = dims(&dy);
    let mut dw = Array4::zeros((oc, c, win.kh, win.kw));
    for o in 0..oc {
        for ci in 0..c {
            for ky in 0..win.kh {
                for kx in 0..win.kw {
                    let mut s = T::zero();
                    for b in 0..n {
                        for oy in 0..oh {
                            let iy = win.input(oy, ky);
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for ox in 0..ow {
                                let ix = win.input(ox, kx);
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                s = s + x[[b, ci, iy as usize, ix as usize]] * dy[[b, o, oy, ox]];
                            }
                        }
                    }
                    dw[[o, ci, ky, kx]] = s;
                }
            }
        }
    }
    dw
}

/// Sum over batch and positions per channel: the bias gradient of a convolution.
pub fn channel_sum<T: Scalar>(dy: ArrayView4<'_, T>) -> Array1<T> {
    let (n, c, h, w) = dims(&dy);
    Array1::from_shape_fn(c, |ci| {
        let mut s = T::zero();
        for b in 0..n {
            for y in 0..h {
                for x in 0..w {
                    s = s + dy[[b, ci, y, x]];
                }
            }
        }
        s
    })
}

/// The index (ky, kx) of the first maximum of a pooling window.
fn argmax<T: Scalar>(
    x: &ArrayView4<'_, T>,
    b: usize,
    c: usize,
    oy: usize,
    ox: usize,
    win: Window,
) -> (usize, usize) {
    let (mut best, mut at) = (x[[b, c, oy * win.stride, ox * win.stride]], (0, 0));
    for ky in 0..win.kh {
        for kx in 0..win.kw {
            let v = x[[b, c, oy * win.stride + ky, ox * win.stride + kx]];
            if v > best {
                best = v;
                at = (ky, kx);
            }
        }
    }
    at
}

/// Max pooling (no padding).
pub fn max_pool2d<T: Scalar>(x: ArrayView4<'_, T>, win: Window) -> Array4<T> {
    let (n, c, h, w) = dims(&x);
    let (oh, ow) = win.output(h, w).expect("shapes were inferred");
    Array4::from_shape_fn((n, c, oh, ow), |(b, ci, oy, ox)| {
        let (ky, kx) = argmax(&x, b, ci, oy, ox, win);
        x[[b, ci, oy * win.stride + ky, ox * win.stride + kx]]
    })
}

/// dx of max pooling: each window's gradient goes to its first maximum.
pub fn max_pool2d_grad<T: Scalar>(
    x: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    win: Window,
) -> Array4<T> {
    let (n, c, h, w) = dims(&x);
    let (_, _, oh, ow) = dims(&dy);
    let mut dx = Array4::zeros((n, c, h, w));
    for b in 0..n {
        for ci in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (ky, kx) = argmax(&x, b, ci, oy, ox, win);
                    let at = [b, ci, oy * win.stride + ky, ox * win.stride + kx];
                    dx[at] = dx[at] + dy[[b, ci, oy, ox]];
                }
            }
        }
    }
    dx
}

/// Average pooling (no padding): the window's sum times 1 / (kh kw).
pub fn avg_pool2d<T: Scalar>(x: ArrayView4<'_, T>, win: Window) -> Array4<T> {
    let (n, c, h, w) = dims(&x);
    let (oh, ow) = win.output(h, w).expect("shapes were inferred");
    let scale = T::one() / T::of((win.kh * win.kw) as f64);
    Array4::from_shape_fn((n, c, oh, ow), |(b, ci, oy, ox)| {
        let mut s = T::zero();
        for ky in 0..win.kh {
            for kx in 0..win.kw {
                s = s + x[[b, ci, oy * win.stride + ky, ox * win.stride + kx]];
            }
        }
        s * scale
    })
}

/// dx of average pooling, for an input of `(h, w)`.
pub fn avg_pool2d_grad<T: Scalar>(
    dy: ArrayView4<'_, T>,
    win: Window,
    (h, w): (usize, usize),
) -> Array4<T> {
    let (n, c, oh, ow) = dims(&dy);
    let scale = T::one() / T::of((win.kh * win.kw) as f64);
    let mut dx = Array4::zeros((n, c, h, w));
    for b in 0..n {
        for ci in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[[b, ci, oy, ox]] * scale;
                    for ky in 0..win.kh {
                        for kx in 0..win.kw {
                            let at = [b, ci, oy * win.stride + ky, ox * win.stride + kx];
                            dx[at] = dx[at] + g;
                        }
                    }
                }
            }
        }
    }
    dx
}
