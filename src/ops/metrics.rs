//! Training metrics, defined once for both executors: what a step adds, how the GPU stores
//! the running totals, and what a reader gets back.
//!
//! Counts are integers (exact past 2^24 predictions, where an f32 counter stops counting), and
//! the mean loss is weighted by samples, so a partial last batch weighs what its samples weigh.

/// Metrics accumulated since the last reset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// The loss averaged over samples (each step's mean loss weighted by its batch size).
    pub mean_loss: f32,
    /// Correct predictions over predictions.
    pub accuracy: f32,
    /// Samples (batch rows) seen.
    pub samples: u64,
    pub steps: u64,
    /// The first step (1-based, counted since the last reset) whose loss was NaN or infinite.
    pub first_non_finite: Option<u64>,
}

/// The running totals behind [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricTotals {
    /// Sum over steps of (mean loss x samples).
    pub loss_sum: f64,
    pub correct: u64,
    pub predictions: u64,
    pub samples: u64,
    pub steps: u64,
    /// 1-based step of the first non-finite loss, 0 while every loss was finite.
    pub first_non_finite: u64,
}

/// u32 words of the GPU accumulator (shaders/loss.wgsl, `finish_metrics`):
/// `[loss_sum f32, its Kahan compensation f32, correct lo, hi, predictions lo, hi,
///   samples lo, hi, steps, first non-finite step]`.
pub const METRIC_WORDS: usize = 10;

impl MetricTotals {
    /// Adds one step: its mean loss over `samples` rows and `correct` of `predictions`.
    pub fn add_step(&mut self, loss: f32, samples: u64, correct: u64, predictions: u64) {
        if !loss.is_finite() && self.first_non_finite == 0 {
            self.first_non_finite = self.steps + 1;
        }
        self.loss_sum += loss as f64 * samples as f64;
        self.correct += correct;
        self.predictions += predictions;
        self.samples += samples;
        self.steps += 1;
    }

    /// Decodes the GPU accumulator's words.
    pub fn from_words(w: &[u32; METRIC_WORDS]) -> Self {
        let pair = |i: usize| w[i] as u64 | (w[i + 1] as u64) << 32;
        MetricTotals {
            loss_sum: f32::from_bits(w[0]) as f64 - f32::from_bits(w[1]) as f64,
            correct: pair(2),
            predictions: pair(4),
            samples: pair(6),
            steps: w[8] as u64,
            first_non_finite: w[9] as u64,
        }
    }

    /// What a reader sees.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            mean_loss: (self.loss_sum / self.samples.max(1) as f64) as f32,
            accuracy: (self.correct as f64 / self.predictions.max(1) as f64) as f32,
            samples: self.samples,
            steps: self.steps,
            first_non_finite: (self.first_non_finite > 0).then_some(self.first_non_finite),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_batch_weighs_by_its_samples() {
        let mut t = MetricTotals::default();
        t.add_step(1.0, 100, 50, 100);
        t.add_step(4.0, 50, 25, 50);
        let m = t.metrics();
        assert_eq!(m.mean_loss, 2.0); // (100 + 200) / 150, not (1 + 4) / 2
        assert_eq!(m.accuracy, 0.5);
        assert_eq!((m.samples, m.steps, m.first_non_finite), (150, 2, None));
    }

    #[test]
    fn gpu_words_count_past_f32_precision() {
        let n = (1u64 << 33) + 3;
        let mut w = [0u32; METRIC_WORDS];
        w[0] = 6.0f32.to_bits();
        w[2] = n as u32;
        w[3] = (n >> 32) as u32;
        w[4] = w[2];
        w[5] = w[3];
        w[6] = 3;
        w[8] = 2;
        let t = MetricTotals::from_words(&w);
        assert_eq!((t.correct, t.predictions, t.samples), (n, n, 3));
        assert_eq!(t.metrics().mean_loss, 2.0);
        assert_eq!(t.metrics().accuracy, 1.0);
    }

    #[test]
    fn the_first_non_finite_step_is_kept() {
        let mut t = MetricTotals::default();
        t.add_step(1.0, 1, 1, 1);
        t.add_step(f32::NAN, 1, 1, 1);
        t.add_step(f32::INFINITY, 1, 1, 1);
        assert_eq!(t.metrics().first_non_finite, Some(2));
    }
}
