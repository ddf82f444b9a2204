//! Convolution and pooling kernels against the f64 CPU reference, over odd spatial sizes,
//! strides 1 and 2, padding 0/1/2, 1 and 3 channels and kernels 1/3/5, forward and backward.
//! Tolerance: atol 1e-5 * sqrt(terms) + rtol 1e-4 (f32 sums of up to a few thousand terms).

mod common;

use common::*;
use ndarray::{Array1, Array4, ArrayView4};
use wgtrain::gpu::Kernel;
use wgtrain::ops::Window;
use wgtrain::unstable::cpu;
use wgtrain::unstable::kernels::{self, ConvGeom};

fn array4(v: &[f32], shape: (usize, usize, usize, usize)) -> Array4<f64> {
    Array4::from_shape_vec(shape, v.iter().map(|&x| x as f64).collect()).unwrap()
}

fn flat(a: &Array4<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

#[allow(clippy::too_many_arguments)]
fn check_conv(
    n: usize,
    c: usize,
    hw: (usize, usize),
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    seed: u64,
) {
    let ctx = gpu();
    let (h, w) = hw;
    let win = Window::square(k, stride, pad);
    let g = ConvGeom {
        n,
        c,
        h,
        w,
        out,
        win,
    };
    let (oh, ow) = g.output().unwrap();
    let what = format!("n{n} c{c} {h}x{w} out{out} k{k} s{stride} p{pad}");
    let x = uniform(seed, n * c * h * w, -1.0, 1.0);
    let wt = uniform(seed + 1, out * c * k * k, -1.0, 1.0);
    let b = uniform(seed + 2, out, -1.0, 1.0);
    let dy = uniform(seed + 3, n * out * oh * ow, -1.0, 1.0);
    let (gx, gw, gb, gdy) = (
        upload("x", &x),
        upload("w", &wt),
        upload("b", &b),
        upload("dy", &dy),
    );
    let (gy, gdx, gdw, gdb) = (
        zeros("y", n * out * oh * ow),
        zeros("dx", x.len()),
        zeros("dw", wt.len()),
        zeros("db", out),
    );
    kernels::conv2d(ctx, &g, gx.full(), gw.full(), gb.full(), gy.full())
        .unwrap()
        .run(ctx)
        .unwrap();
    kernels::conv2d_grad_input(ctx, &g, gdy.full(), gw.full(), gdx.full())
        .unwrap()
        .run(ctx)
        .unwrap();
    kernels::conv2d_grad_weight(ctx, &g, gx.full(), gdy.full(), gdw.full())
        .unwrap()
        .run(ctx)
        .unwrap();
    kernels::channel_sum(ctx, n, out, oh * ow, gdy.full(), gdb.full())
        .unwrap()
        .run(ctx)
        .unwrap();

    let (xa, wa) = (array4(&x, (n, c, h, w)), array4(&wt, (out, c, k, k)));
    let dya = array4(&dy, (n, out, oh, ow));
    let ba = Array1::from_iter(b.iter().map(|&v| v as f64));
    let terms = (c * k * k).max(n * oh * ow) as f64;
    let atol = 1e-5 * terms.sqrt();
    let y = cpu::conv2d(xa.view(), wa.view(), ba.view(), win);
    assert_close(
        &format!("conv2d {what}"),
        &download(&gy),
        &flat(&y),
        atol,
        1e-4,
    );
    let dx = cpu::conv2d_grad_input(dya.view(), wa.view(), win, (h, w));
    assert_close(
        &format!("grad input {what}"),
        &download(&gdx),
        &flat(&dx),
        atol,
        1e-4,
    );
    let dw = cpu::conv2d_grad_weight(xa.view(), dya.view(), win);
    assert_close(
        &format!("grad weight {what}"),
        &download(&gdw),
        &flat(&dw),
        atol,
        1e-4,
    );
    let db = cpu::channel_sum(dya.view());
    assert_close(
        &format!("grad bias {what}"),
        &download(&gdb),
        &db.to_vec(),
        atol,
        1e-4,
    );
}

#[test]
fn conv2d_forward_and_backward_match_the_reference() {
    let mut seed = 0;
    for &(c, hw) in &[(1, (7, 9)), (3, (5, 5)), (3, (11, 8))] {
        for k in [1, 3, 5] {
            for stride in [1, 2] {
                for pad in [0, 1, 2] {
                    if hw.0 + 2 * pad < k || hw.1 + 2 * pad < k {
                        continue;
                    }
                    seed += 10;
                    check_conv(2, c, hw, 4, k, stride, pad, seed);
                }
            }
        }
    }
    // A batch split into chunks of images (64 images of 32x32 per chunk).
    check_conv(70, 3, (32, 32), 32, 5, 1, 2, 7);
}

#[test]
fn conv2d_rejects_bad_geometry() {
    let ctx = gpu();
    let g = ConvGeom {
        n: 1,
        c: 1,
        h: 3,
        w: 3,
        out: 1,
        win: Window::square(5, 1, 0),
    };
    let (x, w, b, y) = (zeros("x", 9), zeros("w", 25), zeros("b", 1), zeros("y", 9));
    let err = kernels::conv2d(ctx, &g, x.full(), w.full(), b.full(), y.full())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit 3x3"), "{err}");
    let g = ConvGeom {
        win: Window::square(3, 1, 0),
        ..g
    };
    let small = zeros("w", 8);
    let err = kernels::conv2d(ctx, &g, x.full(), small.full(), b.full(), y.full())
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight") && err.contains("needs 9"), "{err}");
}

fn pool_ref(
    x: ArrayView4<'_, f64>,
    dy: ArrayView4<'_, f64>,
    max: bool,
    win: Window,
) -> (Array4<f64>, Array4<f64>) {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    if max {
        (cpu::max_pool2d(x, win), cpu::max_pool2d_grad(x, dy, win))
    } else {
        (
            cpu::avg_pool2d(x, win),
            cpu::avg_pool2d_grad(dy, win, (h, w)),
        )
    }
}

#[test]
fn pooling_forward_and_backward_match_the_reference() {
    let ctx = gpu();
    let mut seed = 500;
    for &(c, (h, w)) in &[(1, (7, 9)), (3, (8, 8)), (2, (5, 11))] {
        for &(kh, kw, stride) in &[(2, 2, 2), (3, 3, 2), (3, 3, 1), (2, 2, 1), (h, w, 1)] {
            for max in [true, false] {
                seed += 1;
                let n = 2;
                let win = Window {
                    kh,
                    kw,
                    stride,
                    pad: 0,
                };
                let g = ConvGeom {
                    n,
                    c,
                    h,
                    w,
                    out: c,
                    win,
                };
                let (oh, ow) = g.output().unwrap();
                let x = uniform(seed, n * c * h * w, -1.0, 1.0);
                let dy = uniform(seed + 1000, n * c * oh * ow, -1.0, 1.0);
                let (gx, gdy) = (upload("x", &x), upload("dy", &dy));
                let (gy, gdx) = (zeros("y", dy.len()), zeros("dx", x.len()));
                Kernel::from(kernels::pool(ctx, &g, max, gx.full(), gy.full()).unwrap())
                    .run(ctx)
                    .unwrap();
                Kernel::from(
                    kernels::pool_grad(ctx, &g, max, gx.full(), gdy.full(), gdx.full()).unwrap(),
                )
                .run(ctx)
                .unwrap();
                let (xa, dya) = (array4(&x, (n, c, h, w)), array4(&dy, (n, c, oh, ow)));
                let (y, dx) = pool_ref(xa.view(), dya.view(), max, win);
                let what = format!(
                    "{} {kh}x{kw}/{stride} over c{c} {h}x{w}",
                    if max { "max" } else { "avg" }
                );
                assert_close(&what, &download(&gy), &flat(&y), 1e-6, 1e-5);
                assert_close(
                    &format!("{what} grad"),
                    &download(&gdx),
                    &flat(&dx),
                    1e-6,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn max_pooling_sends_ties_to_the_first_maximum() {
    let ctx = gpu();
    // One 2x2 window of equal values: only the first element gets the gradient.
    let win = Window::square(2, 2, 0);
    let g = ConvGeom {
        n: 1,
        c: 1,
        h: 2,
        w: 2,
        out: 1,
        win,
    };
    let (gx, gdy, gdx) = (upload("x", &[1.0; 4]), upload("dy", &[5.0]), zeros("dx", 4));
    Kernel::from(kernels::pool_grad(ctx, &g, true, gx.full(), gdy.full(), gdx.full()).unwrap())
        .run(ctx)
        .unwrap();
    assert_eq!(download(&gdx), vec![5.0, 0.0, 0.0, 0.0]);
    let x = Array4::from_elem((1, 1, 2, 2), 1.0f64);
    let dy = Array4::from_elem((1, 1, 1, 1), 5.0f64);
    assert_eq!(
        flat(&cpu::max_pool2d_grad(x.view(), dy.view(), win)),
        vec![5.0, 0.0, 0.0, 0.0]
    );
}
