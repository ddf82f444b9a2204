//! Dropout's counter-based mask: whether element `i` is kept at optimizer step `step` is a
//! hash of (seed, step, i), so the GPU kernel, the CPU reference and the backward pass draw
//! the same mask without storing it, and a resumed run draws the same masks again.

/// Chris Wellons' `lowbias32` integer hash (also in shaders/elementwise.wgsl).
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The per-step key of a dropout op with `seed`.
pub fn dropout_key(seed: u64, step: u64) -> u32 {
    let (seed_lo, seed_hi) = (seed as u32, (seed >> 32) as u32);
    let (step_lo, step_hi) = (step as u32, (step >> 32) as u32);
    lowbias32(seed_lo ^ lowbias32(seed_hi ^ lowbias32(step_lo ^ lowbias32(step_hi))))
}

/// Element `i` is kept when `hash >= threshold`, with `threshold = round(rate * 2^32)`.
pub fn dropout_threshold(rate: f32) -> u32 {
    (rate as f64 * 4_294_967_296.0).round().min(u32::MAX as f64) as u32
}

/// The factor kept elements are multiplied by: `1 / (1 - rate)`, rounded once to f32.
pub fn dropout_scale(rate: f32) -> f32 {
    (1.0 / (1.0 - rate as f64)) as f32
}

/// Whether element `i` survives under `key` and `threshold`.
pub fn dropout_keeps(key: u32, threshold: u32, i: u32) -> bool {
    lowbias32(key ^ lowbias32(i)) >= threshold
}
