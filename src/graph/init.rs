//! Seeded parameter initializers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Init {
    Zeros,
    /// A constant value.
    Constant(f32),
    /// U(-l, l) with l = sqrt(6 / (fan_in + fan_out)) (Keras' default for Dense).
    GlorotUniform,
    /// N(0, 2 / (fan_in + fan_out)).
    GlorotNormal,
    /// U(-l, l) with l = sqrt(6 / fan_in) (for ReLU layers).
    HeUniform,
    /// N(0, 2 / fan_in).
    HeNormal,
}

impl Init {
    /// `len` values for a parameter of `shape` (`fan_in = shape[0]`, `fan_out = shape[1]` for
    /// matrices; for convolution kernels (out, in, kh, kw) fan_in = in * kh * kw and
    /// fan_out = out * kh * kw, as Keras; fan_in = fan_out = len otherwise), from `seed`.
    pub fn values(&self, shape: &[usize], seed: u64) -> Vec<f32> {
        let len: usize = shape.iter().product();
        let (fan_in, fan_out) = match shape {
            [a, b] => (*a as f64, *b as f64),
            [o, i, kh, kw] => ((i * kh * kw) as f64, (o * kh * kw) as f64),
            _ => (len as f64, len as f64),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let uniform = |limit: f64, rng: &mut ChaCha8Rng| -> Vec<f32> {
            let d = Uniform::new_inclusive(-limit, limit).expect("a finite, ordered range");
            (0..len).map(|_| d.sample(rng) as f32).collect()
        };
        let normal = |std: f64, rng: &mut ChaCha8Rng| -> Vec<f32> {
            let d = Normal::new(0.0, std).expect("a finite, positive deviation");
            (0..len).map(|_| d.sample(rng) as f32).collect()
        };
        match self {
            Init::Zeros => vec![0.0; len],
            Init::Constant(c) => vec![*c; len],
            Init::GlorotUniform => uniform((6.0 / (fan_in + fan_out)).sqrt(), &mut rng),
            Init::GlorotNormal => normal((2.0 / (fan_in + fan_out)).sqrt(), &mut rng),
            Init::HeUniform => uniform((6.0 / fan_in).sqrt(), &mut rng),
            Init::HeNormal => normal((2.0 / fan_in).sqrt(), &mut rng),
        }
    }
}
