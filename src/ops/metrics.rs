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
    /// Against real-valued targets (None for class labels): mean |output - target| over every
    /// output, the root of the mean squared error, and the coefficient of determination
    /// 1 - SS_res / SS_tot over every output (one mean for all outputs: for a single output,
    /// scikit-learn's `r2_score`; None when the targets do not vary).
    pub errors: Option<ErrorMetrics>,
}

/// Regression figures (see [`Metrics::errors`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorMetrics {
    pub mae: f32,
    pub rmse: f32,
    pub r2: Option<f32>,
}

/// Sums over every output of steps with real-valued targets, behind [`ErrorMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorSums {
    /// Sum of |output - target|.
    pub abs: f64,
    /// Sum of (output - target)^2.
    pub sq: f64,
    /// Sum of targets.
    pub t: f64,
    /// Sum of squared targets.
    pub t2: f64,
    /// Outputs summed over.
    pub n: u64,
}

impl ErrorSums {
    /// The sums of one step's outputs and targets (same length).
    pub fn of(outputs: &[f32], targets: &[f32]) -> Self {
        let mut s = ErrorSums::default();
        for (&p, &t) in outputs.iter().zip(targets) {
            let d = p - t;
            s.abs += d.abs() as f64;
            s.sq += (d * d) as f64;
            s.t += t as f64;
            s.t2 += (t * t) as f64;
        }
        s.n = outputs.len() as u64;
        s
    }

    fn add(&mut self, o: &ErrorSums) {
        self.abs += o.abs;
        self.sq += o.sq;
        self.t += o.t;
        self.t2 += o.t2;
        self.n += o.n;
    }

    fn metrics(&self) -> Option<ErrorMetrics> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let ss_tot = self.t2 - self.t * self.t / n;
        Some(ErrorMetrics {
            mae: (self.abs / n) as f32,
            rmse: (self.sq / n).sqrt() as f32,
            // Below rounding of the sums, the targets are constant and R^2 is undefined.
            r2: (ss_tot > 1e-12 * self.t2.max(f64::MIN_POSITIVE))
                .then(|| (1.0 - self.sq / ss_tot) as f32),
        })
    }
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
    /// Steps with real-valued targets.
    pub errors: ErrorSums,
}

/// u32 words of the GPU accumulator (shaders/loss.wgsl, `finish_metrics`):
/// `[loss_sum f32, its Kahan compensation f32, correct lo, hi, predictions lo, hi,
///   samples lo, hi, steps, first non-finite step]`, then four Kahan (sum, compensation)
/// pairs for [`ErrorSums`] (abs, sq, t, t2) and its element count (lo, hi).
pub const METRIC_WORDS: usize = 20;

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

    /// Adds another accumulator's totals (a replica's): sums and counts add, the step count
    /// is the larger (replicas take their steps together), and the first non-finite step
    /// is the earliest either saw.
    pub fn merge(&mut self, o: &MetricTotals) {
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.predictions += o.predictions;
        self.samples += o.samples;
        self.steps = self.steps.max(o.steps);
        self.first_non_finite = match (self.first_non_finite, o.first_non_finite) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.errors.add(&o.errors);
    }

    /// Adds the error sums of a step with real-valued targets (after [`Self::add_step`]).
    pub fn add_errors(&mut self, sums: &ErrorSums) {
        self.errors.add(sums);
    }

    /// Decodes the GPU accumulator's words.
    pub fn from_words(w: &[u32; METRIC_WORDS]) -> Self {
        let pair = |i: usize| w[i] as u64 | (w[i + 1] as u64) << 32;
        let kahan = |i: usize| f32::from_bits(w[i]) as f64 - f32::from_bits(w[i + 1]) as f64;
        MetricTotals {
            errors: ErrorSums {
                abs: kahan(10),
                sq: kahan(12),
                t: kahan(14),
                t2: kahan(16),
                n: pair(18),
            },
            loss_sum: kahan(0),
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
            errors: self.errors.metrics(),
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

    #[test]
    fn error_sums_give_mae_rmse_and_r2_by_their_definitions() {
        let (p, t) = ([1.0f32, 2.0, 4.0, 3.0], [1.5f32, 2.0, 3.0, 5.0]);
        let mut totals = MetricTotals::default();
        // Two steps: the figures are over every output, not a mean of per-step figures.
        totals.add_errors(&ErrorSums::of(&p[..1], &t[..1]));
        totals.add_errors(&ErrorSums::of(&p[1..], &t[1..]));
        let e = totals.metrics().errors.unwrap();
        let mean_t = 11.5 / 4.0;
        let ss_tot: f64 = t.iter().map(|&v| (v as f64 - mean_t).powi(2)).sum();
        let ss_res = 0.25 + 0.0 + 1.0 + 4.0;
        assert!((e.mae as f64 - 3.5 / 4.0).abs() < 1e-7);
        assert!((e.rmse as f64 - (ss_res / 4.0f64).sqrt()).abs() < 1e-6);
        assert!((e.r2.unwrap() as f64 - (1.0 - ss_res / ss_tot)).abs() < 1e-6);
        // Constant targets: R^2 is undefined, not a division by zero.
        let c = ErrorSums::of(&[1.0, 2.0], &[3.0, 3.0]).metrics().unwrap();
        assert_eq!(c.r2, None);
        assert_eq!(MetricTotals::default().metrics().errors, None);
    }
}
