//! Pictures: a PNG grid of samples with their labels (and predictions, framed green when right
//! and red when wrong), and an image file turned into a model input for prediction.

use std::path::Path;

use image::{imageops, ImageBuffer, Rgb, RgbImage};

use super::Dataset;
use crate::error::{Error, Result};

// 3x5 bitmaps of the digits 0-9, one row per u8 (3 low bits, left to right).
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];
const SCALE: u32 = 2;
const PAD: u32 = 3;
const TEXT_H: u32 = 5 * SCALE + 4;

fn draw_number(img: &mut RgbImage, mut x: u32, y: u32, n: u32, color: Rgb<u8>) {
    for ch in n.to_string().bytes() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3u32 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let (px, py) = (x + col * SCALE + dx, y + row as u32 * SCALE + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, color);
                            }
                        }
                    }
                }
            }
        }
        x += 4 * SCALE;
    }
}

/// Saves a grid of the samples at `indices`, `cols` per row, each labelled with its class
/// number; with `predictions` (one per index) the predicted class is written after it and the
/// frame is green when right, red when wrong. Written to a temporary file and renamed.
pub fn save_grid(
    path: &Path,
    data: &Dataset,
    indices: &[usize],
    cols: usize,
    predictions: Option<&[u32]>,
) -> Result<()> {
    if cols == 0 || indices.is_empty() {
        return Err(Error::invalid(
            "save_grid",
            "need at least one sample and one column",
        ));
    }
    if let Some(p) = predictions {
        if p.len() != indices.len() {
            return Err(Error::invalid(
                "save_grid",
                format!("{} predictions for {} samples", p.len(), indices.len()),
            ));
        }
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
        return Err(Error::invalid(
            "save_grid",
            format!("index {bad} outside {} samples", data.len()),
        ));
    }
    let (w, h) = (data.width as u32, data.height as u32);
    let cell_w = (w + 2 * PAD).max(8 * 4 * SCALE);
    let cell_h = h + 2 * PAD + TEXT_H;
    let rows = indices.len().div_ceil(cols) as u32;
    let mut img: RgbImage =
        ImageBuffer::from_pixel(cols as u32 * cell_w, rows * cell_h, Rgb([32, 32, 32]));
    let plane = (w * h) as usize;
    for (n, &i) in indices.iter().enumerate() {
        let (cx, cy) = ((n % cols) as u32 * cell_w, (n / cols) as u32 * cell_h);
        let label = data.labels[i] as u32;
        let frame = match predictions {
            Some(p) if p[n] == label => Rgb([40, 200, 60]),
            Some(_) => Rgb([220, 40, 40]),
            None => Rgb([90, 90, 90]),
        };
        for y in 0..h + 2 * PAD {
            for x in 0..w + 2 * PAD {
                img.put_pixel(cx + x, cy + y, frame);
            }
        }
        let px = data.image(i);
        for y in 0..h {
            for x in 0..w {
                let at = |c: usize| px[c * plane + (y * w + x) as usize];
                let rgb = if data.channels >= 3 {
                    [at(0), at(1), at(2)]
                } else {
                    [at(0); 3]
                };
                img.put_pixel(cx + PAD + x, cy + PAD + y, Rgb(rgb));
            }
        }
        let ty = cy + h + 2 * PAD + 2;
        draw_number(&mut img, cx + 1, ty, label, Rgb([255, 255, 255]));
        if let Some(p) = predictions {
            let offset = (label.to_string().len() as u32 + 1) * 4 * SCALE;
            draw_number(&mut img, cx + 1 + offset, ty, p[n], frame);
        }
    }
    save_png_atomic(&img, path)
}

/// Writes a PNG through a temporary file and a rename, so readers never see half an image.
pub fn save_png_atomic(img: &RgbImage, path: &Path) -> Result<()> {
    let tmp = path.with_extension("png.part");
    let result = img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::data(path, format!("writing PNG: {e}")))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Loads a PNG/JPEG as a model input of `channels` (1 or 3) x `height` x `width` in [0, 1],
/// channel-planar. Grayscale images whose background is light (mean above 1/2) are inverted,
/// since MNIST-style data is light on dark.
pub fn load_for_model(
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<f32>> {
    let img =
        image::open(path).map_err(|e| Error::data(path, format!("not a readable image: {e}")))?;
    let (w, h) = (width as u32, height as u32);
    match channels {
        1 => {
            let gray = imageops::resize(&img.to_luma8(), w, h, imageops::FilterType::Triangle);
            let mut v: Vec<f32> = gray.pixels().map(|p| p.0[0] as f32 / 255.0).collect();
            let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
            if mean > 0.5 {
                v.iter_mut().for_each(|x| *x = 1.0 - *x);
            }
            Ok(v)
        }
        3 => {
            let rgb = imageops::resize(&img.to_rgb8(), w, h, imageops::FilterType::Triangle);
            let plane = width * height;
            let mut v = vec![0.0; 3 * plane];
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    v[c * plane + i] = p.0[c] as f32 / 255.0;
                }
            }
            Ok(v)
        }
        _ => Err(Error::invalid(
            "load_for_model",
            format!("{channels} channels; use 1 or 3"),
        )),
    }
}
