//! Pictures: a PNG grid of samples with their labels (and predictions, framed green when right
//! and red when wrong), and an image file turned into a model input for prediction.

use std::path::Path;

use image::{imageops, ImageBuffer, Rgb, RgbImage};

use super::Dataset;
use crate::error::{Error, Result};

// A 3x5 bitmap font, one row per u8 (3 low bits, left to right): digits, capitals and a
// little punctuation; lowercase is drawn as capitals.
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
const LETTERS: [[u8; 5]; 26] = [
    [2, 5, 7, 5, 5],
    [6, 5, 6, 5, 6],
    [3, 4, 4, 4, 3],
    [6, 5, 5, 5, 6],
    [7, 4, 6, 4, 7],
    [7, 4, 6, 4, 4],
    [3, 4, 5, 5, 3],
    [5, 5, 7, 5, 5],
    [7, 2, 2, 2, 7],
    [1, 1, 1, 5, 2],
    [5, 5, 6, 5, 5],
    [4, 4, 4, 4, 7],
    [5, 7, 7, 5, 5],
    [6, 5, 5, 5, 5],
    [2, 5, 5, 5, 2],
    [6, 5, 6, 4, 4],
    [2, 5, 5, 6, 3],
    [6, 5, 6, 5, 5],
    [3, 4, 2, 1, 6],
    [7, 2, 2, 2, 2],
    [5, 5, 5, 5, 7],
    [5, 5, 5, 5, 2],
    [5, 5, 7, 7, 5],
    [5, 5, 2, 5, 5],
    [5, 5, 2, 2, 2],
    [7, 1, 2, 4, 7],
];
const SCALE: u32 = 2;
const PAD: u32 = 3;
const TEXT_H: u32 = 5 * SCALE + 4;

fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0'..='9' => DIGITS[ch as usize - '0' as usize],
        'a'..='z' => LETTERS[ch as usize - 'a' as usize],
        'A'..='Z' => LETTERS[ch as usize - 'A' as usize],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '/' => [1, 1, 2, 4, 4],
        ':' => [0, 2, 0, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        _ => [0; 5],
    }
}

/// Width in pixels of `text` drawn by [`draw_text`].
fn text_width(text: &str) -> u32 {
    text.chars().count() as u32 * 4 * SCALE
}

fn draw_text(img: &mut RgbImage, mut x: u32, y: u32, text: &str, color: Rgb<u8>) {
    for ch in text.chars() {
        for (row, bits) in glyph(ch).iter().enumerate() {
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
/// name (the dataset's `class_names`, e.g. Fashion-MNIST's "Sneaker"; the class number when it
/// has none); with `predictions` (one per index) the predicted class is written on a second
/// line and the frame is green when right, red when wrong. Written to a temporary file and
/// renamed.
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
    data.validate()?;
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
    // At most 11 characters of a name fit under an image; longer names are cut.
    let name = |class: u32| -> String {
        match data.class_names.get(class as usize) {
            Some(n) => n.chars().take(11).collect(),
            None => class.to_string(),
        }
    };
    let widest = indices
        .iter()
        .map(|&i| text_width(&name(data.labels[i] as u32)))
        .chain(
            predictions
                .into_iter()
                .flatten()
                .map(|&p| text_width(&name(p))),
        )
        .max()
        .unwrap_or(0);
    let (w, h) = (data.width as u32, data.height as u32);
    let cell_w = (w + 2 * PAD).max(widest + 2 * PAD);
    let lines = if predictions.is_some() { 2 } else { 1 };
    let cell_h = h + 2 * PAD + lines * TEXT_H;
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
        draw_text(&mut img, cx + 1, ty, &name(label), Rgb([255, 255, 255]));
        if let Some(p) = predictions {
            draw_text(&mut img, cx + 1, ty + TEXT_H, &name(p[n]), frame);
        }
    }
    save_png_atomic(&img, path)
}

/// Writes a PNG through a temporary file and a rename, so readers never see half an image.
pub fn save_png_atomic(img: &RgbImage, path: &Path) -> Result<()> {
    crate::atomic_file::write_atomic(path, |file, tmp| {
        let mut out = std::io::BufWriter::new(file);
        img.write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| Error::data(tmp, format!("writing PNG: {e}")))?;
        std::io::Write::flush(&mut out).map_err(|e| Error::io(tmp, e))
    })
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

/// One line of a [`Panel`]: a value per epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub values: Vec<f32>,
    pub color: [u8; 3],
}

/// A titled plot of series against the epoch (`first_epoch`, `first_epoch + 1`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub first_epoch: usize,
    pub series: Vec<Series>,
}

const PANEL_W: u32 = 380;
const PANEL_H: u32 = 260;
const LEFT: u32 = 62;
const RIGHT: u32 = 14;
const TOP: u32 = 30;
const BOTTOM: u32 = 28;

/// Saves line plots side by side (e.g. loss and accuracy by epoch, train and validation),
/// with axis ticks and a legend. Non-finite values are skipped. Written atomically.
pub fn save_line_plots(path: &Path, panels: &[Panel]) -> Result<()> {
    if panels.is_empty()
        || panels
            .iter()
            .all(|p| p.series.iter().all(|s| s.values.is_empty()))
    {
        return Err(Error::invalid("save_line_plots", "nothing to plot"));
    }
    let mut img: RgbImage =
        ImageBuffer::from_pixel(PANEL_W * panels.len() as u32, PANEL_H, Rgb([255, 255, 255]));
    for (k, panel) in panels.iter().enumerate() {
        draw_panel(&mut img, k as u32 * PANEL_W, panel);
    }
    save_png_atomic(&img, path)
}

fn draw_panel(img: &mut RgbImage, x0: u32, panel: &Panel) {
    let ink = Rgb([40, 40, 40]);
    let grid = Rgb([225, 225, 225]);
    let (px0, py0) = (x0 + LEFT, TOP);
    let (pw, ph) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    draw_text(img, px0, 8, &panel.title, ink);
    let finite = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite())
    };
    let epochs = panel
        .series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0);
    let (mut lo, mut hi) = finite().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-6 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let margin = (hi - lo) * 0.05;
    let (lo, hi) = (lo - margin, hi + margin);
    let to_y = |v: f32| py0 + ((hi - v) / (hi - lo) * ph as f32).round() as u32;
    let to_x = |e: usize| {
        if epochs <= 1 {
            px0 + pw / 2
        } else {
            px0 + (e as f32 / (epochs - 1) as f32 * pw as f32).round() as u32
        }
    };
    // Horizontal grid lines with value labels.
    for t in 0..=4 {
        let v = lo + (hi - lo) * t as f32 / 4.0;
        let y = to_y(v);
        for x in px0..=px0 + pw {
            img.put_pixel(x, y, grid);
        }
        let label = format!("{v:.3}");
        let lx = px0.saturating_sub(text_width(&label) + 4);
        draw_text(img, lx, y.saturating_sub(5), &label, ink);
    }
    // Axes and epoch ticks (at most about ten labels).
    for y in py0..=py0 + ph {
        img.put_pixel(px0, y, ink);
    }
    for x in px0..=px0 + pw {
        img.put_pixel(x, py0 + ph, ink);
    }
    let every = epochs.div_ceil(10).max(1);
    for e in (0..epochs).step_by(every) {
        let x = to_x(e);
        for y in py0 + ph..py0 + ph + 4 {
            img.put_pixel(x, y, ink);
        }
        let label = (e + panel.first_epoch).to_string();
        draw_text(
            img,
            x.saturating_sub(text_width(&label) / 2),
            py0 + ph + 7,
            &label,
            ink,
        );
    }
    // The series, with the legend on the title's line.
    let mut legend_x = px0 + text_width(&panel.title) + 24;
    for s in &panel.series {
        let color = Rgb(s.color);
        let points: Vec<(u32, u32)> = s
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(e, &v)| (to_x(e), to_y(v)))
            .collect();
        for w in points.windows(2) {
            draw_line(img, w[0], w[1], color);
        }
        for &(x, y) in &points {
            for dy in 0..5 {
                for dx in 0..5 {
                    let (x, y) = ((x + dx).saturating_sub(2), (y + dy).saturating_sub(2));
                    if x < img.width() && y < img.height() {
                        img.put_pixel(x, y, color);
                    }
                }
            }
        }
        for x in legend_x..(legend_x + 16).min(img.width()) {
            for dy in 0..3 {
                img.put_pixel(x, 11 + dy, color);
            }
        }
        draw_text(img, legend_x + 22, 8, &s.label, ink);
        legend_x += 22 + text_width(&s.label) + 16;
    }
}

/// A 2-pixel line from `a` to `b` (Bresenham).
fn draw_line(img: &mut RgbImage, a: (u32, u32), b: (u32, u32), color: Rgb<u8>) {
    let (mut x, mut y) = (a.0 as i64, a.1 as i64);
    let (x1, y1) = (b.0 as i64, b.1 as i64);
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        for (ox, oy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = ((x + ox) as u32, (y + oy) as u32);
            if px < img.width() && py < img.height() {
                img.put_pixel(px, py, color);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}
