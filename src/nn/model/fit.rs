//! Training: `Model::fit` with its configuration (epochs, validation, schedules, clipping,
//! checkpoints, early stopping) and what it returns (per-epoch logs, curves).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::Model;
use crate::data::{Affine, Augment, Loader, LoaderConfig, Normalize, Samples, Scaling, TargetKind};
use crate::error::{Error, Result};
use crate::optim::LrSchedule;

/// Validation samples: a dataset and the indices of it to evaluate.
type Held<'a> = (&'a dyn Samples, Vec<usize>);

/// A figure reported besides the loss, accumulated on the device like the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    /// Correct predictions over predictions: the argmax against the label or one-hot row, or
    /// for one output (binary), the thresholded output against a 0/1 target.
    Accuracy,
    /// Mean absolute error over every output, in the targets' units.
    Mae,
    /// Root mean squared error over every output, in the targets' units.
    Rmse,
    /// Coefficient of determination (1 is perfect, 0 is predicting the mean).
    R2,
}

impl Metric {
    /// The name in logs, `History` columns and curves (`val_` prefixed for validation).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Mae => "mae",
            Metric::Rmse => "rmse",
            Metric::R2 => "r2",
        }
    }

    /// Whether larger values are better (accuracy, R^2).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::R2)
    }
}

/// The figure early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
    Loss,
    /// A compiled metric on the validation data (`val_mae`, `val_r2`, ...).
    Val(Metric),
}

/// Stop when the monitored figure has not improved by more than `min_delta` for `patience`
/// epochs; with `restore_best_weights`, go back to the best epoch's parameters and optimizer
/// state. Keras' `EarlyStopping`, with its defaults: the model keeps the last epoch's weights
/// unless asked to restore the best.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub patience: usize,
    pub min_delta: f32,
    /// Go back to the best epoch when training stops (Keras' `restore_best_weights`; false
    /// by default, as in Keras).
    pub restore_best_weights: bool,
}

impl EarlyStopping {
    /// Watches `monitor` with `patience` epochs, keeping the last epoch's weights.
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        EarlyStopping {
            monitor,
            patience,
            min_delta: 0.0,
            restore_best_weights: false,
        }
    }

    /// Goes back to the best epoch's weights when training stops.
    pub fn restore_best_weights(mut self) -> Self {
        self.restore_best_weights = true;
        self
    }
}

/// How to train.
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Train until this epoch number (Keras semantics, with `initial_epoch`).
    pub epochs: usize,
    /// The epoch to start from when resuming (epochs `initial_epoch..epochs` are trained).
    pub initial_epoch: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Hold out the last fraction of the data for validation, as Keras does.
    pub validation_split: f64,
    /// Validate on this data after every epoch instead (not together with a split); the same
    /// kind of data as the training data.
    pub validation_data: Option<Arc<dyn Samples + Send>>,
    /// What `fit` prints, as Keras' `verbose`: 0 nothing, 1 a progress bar during each epoch
    /// and its figures at the end, 2 (the default) one line of figures per epoch. Only rank
    /// 0 of a distributed job prints.
    pub verbose: u8,
    /// How image pixels become inputs (images only).
    pub normalize: Normalize,
    /// Image augmentation (images only).
    pub augment: Option<Augment>,
    /// Scale numeric features per column, fitted on the training split only (never the
    /// validation split); the fitted map is kept with the model for `evaluate`,
    /// `predict_array` and checkpoints. `None` keeps the model's current scaling, if any.
    pub scale_features: Option<Scaling>,
    /// Scale real-valued targets (regression) the same way; predictions are mapped back.
    pub scale_targets: Option<Scaling>,
    pub early_stopping: Option<EarlyStopping>,
    /// The learning rate by optimizer step (the optimizer's rate is the base).
    pub lr_schedule: LrSchedule,
    /// Scale each step's gradients to a global L2 norm of at most this.
    pub clip_global_norm: Option<f32>,
    /// Save a checkpoint here after every epoch (atomically; a failed epoch leaves the
    /// previous one in place).
    pub checkpoint: Option<PathBuf>,
}

impl FitConfig {
    /// `epochs` epochs of shuffled batches of `batch_size`, inputs scaled to [0, 1].
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        FitConfig {
            epochs,
            initial_epoch: 0,
            batch_size,
            shuffle: true,
            seed: 0,
            validation_split: 0.0,
            validation_data: None,
            verbose: 2,
            normalize: Normalize::Unit,
            augment: None,
            scale_features: None,
            scale_targets: None,
            early_stopping: None,
            lr_schedule: LrSchedule::Constant,
            clip_global_norm: None,
            checkpoint: None,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f32,
    /// The compiled metrics ([`Model::metrics`]), in order.
    pub metrics: Vec<(Metric, f32)>,
    pub val_loss: Option<f32>,
    /// The compiled metrics on the validation data (empty without validation).
    pub val_metrics: Vec<(Metric, f32)>,
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Time the training loop spent waiting for the loader thread.
    pub loader_wait_seconds: f64,
}

impl EpochLog {
    /// A figure by its log name: `loss`, `val_loss`, a metric's name (`accuracy`, `mae`, ...)
    /// or `val_` and a metric's name.
    pub fn get(&self, name: &str) -> Option<f32> {
        let find = |list: &[(Metric, f32)], name: &str| {
            list.iter().find(|(m, _)| m.name() == name).map(|&(_, v)| v)
        };
        match name {
            "loss" => Some(self.loss),
            "val_loss" => self.val_loss,
            _ => match name.strip_prefix("val_") {
                Some(metric) => find(&self.val_metrics, metric),
                None => find(&self.metrics, name),
            },
        }
    }

    /// Training accuracy, when the model reports it.
    pub fn accuracy(&self) -> Option<f32> {
        self.get("accuracy")
    }

    /// Validation accuracy, when the model reports it and there was validation.
    pub fn val_accuracy(&self) -> Option<f32> {
        self.get("val_accuracy")
    }

    /// (name, value) of every figure in log order: loss, metrics, val_loss, val metrics.
    pub fn figures(&self) -> Vec<(String, f32)> {
        let mut out = vec![("loss".to_string(), self.loss)];
        out.extend(self.metrics.iter().map(|(m, v)| (m.name().to_string(), *v)));
        if let Some(l) = self.val_loss {
            out.push(("val_loss".into(), l));
        }
        out.extend(
            self.val_metrics
                .iter()
                .map(|(m, v)| (format!("val_{}", m.name()), *v)),
        );
        out
    }
}

/// `loss 0.4512, accuracy 0.8410[, val_loss .., val_accuracy ..], 41234 samples/s, 1.5 s,
/// loader wait 0.003 s`: what `fit` prints after `epoch i/n: `.
impl std::fmt::Display for EpochLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, v)) in self.figures().iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{name} {v:.4}")?;
        }
        write!(
            f,
            ", {:.0} samples/s, {:.1} s, loader wait {:.3} s",
            self.samples_per_sec, self.seconds, self.loader_wait_seconds
        )
    }
}

/// Per-epoch metrics of a `fit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLog>,
    /// The epoch after which early stopping ended training.
    pub stopped_early: Option<usize>,
    /// The best epoch by the early-stopping monitor.
    pub best_epoch: Option<usize>,
}

impl History {
    /// Samples per second over all epochs (time-weighted), or None before any epoch.
    pub fn samples_per_sec(&self) -> Option<f64> {
        let seconds: f64 = self.epochs.iter().map(|e| e.seconds).sum();
        let samples: f64 = self
            .epochs
            .iter()
            .map(|e| e.samples_per_sec * e.seconds)
            .sum();
        (seconds > 0.0).then(|| samples / seconds)
    }

    /// The column names of [`History::to_csv`]: `epoch`, each figure, then the timings.
    fn columns(&self) -> Vec<String> {
        let mut cols = vec!["epoch".to_string()];
        if let Some(e) = self.epochs.first() {
            cols.extend(e.figures().into_iter().map(|(n, _)| n));
        }
        cols.extend(["seconds", "samples_per_sec", "loader_wait_seconds"].map(String::from));
        cols
    }

    /// The history as CSV (Keras' CSVLogger): a header row of `epoch`, every figure by its
    /// log name, `seconds`, `samples_per_sec`, `loader_wait_seconds`; one row per epoch.
    pub fn to_csv(&self) -> String {
        let mut out = self.columns().join(",");
        out.push('\n');
        for e in &self.epochs {
            let mut row = vec![e.epoch.to_string()];
            row.extend(e.figures().into_iter().map(|(_, v)| v.to_string()));
            row.extend(
                [e.seconds, e.samples_per_sec, e.loader_wait_seconds].map(|v| v.to_string()),
            );
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// The history as JSON: `{"epoch": [...], "loss": [...], ...}` with the columns of
    /// [`History::to_csv`] (Keras' `history.history`; NaN as null), plus `stopped_early`
    /// and `best_epoch`.
    pub fn to_json(&self) -> String {
        let number = |v: f64| {
            if v.is_finite() {
                v.to_string()
            } else {
                "null".to_string()
            }
        };
        let mut fields = Vec::new();
        for (k, name) in self.columns().iter().enumerate() {
            let values: Vec<String> = self
                .epochs
                .iter()
                .map(|e| match k {
                    0 => e.epoch.to_string(),
                    _ => {
                        let figures = e.figures();
                        let v = match figures.get(k - 1) {
                            Some((_, v)) => *v as f64,
                            None => [e.seconds, e.samples_per_sec, e.loader_wait_seconds]
                                [k - 1 - figures.len()],
                        };
                        number(v)
                    }
                })
                .collect();
            fields.push(format!("\"{name}\": [{}]", values.join(", ")));
        }
        let opt = |v: Option<usize>| v.map_or("null".to_string(), |v| v.to_string());
        fields.push(format!("\"stopped_early\": {}", opt(self.stopped_early)));
        fields.push(format!("\"best_epoch\": {}", opt(self.best_epoch)));
        format!("{{{}}}\n", fields.join(", "))
    }

    /// Writes [`History::to_csv`] (a `.csv` path) or [`History::to_json`] (any other)
    /// atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        use std::io::Write;
        let text = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            self.to_csv()
        } else {
            self.to_json()
        };
        crate::atomic_file::write_atomic(path, |file, tmp| {
            file.write_all(text.as_bytes())
                .map_err(|e| Error::io(tmp, e))
        })
    }

    /// Saves the curves by epoch as a PNG: one panel for the loss and one per metric, each
    /// with the training series and the validation series when there was one.
    pub fn save_plot(&self, path: &std::path::Path) -> Result<()> {
        use crate::data::picture::{save_line_plots, Panel, Series};
        const TRAIN: [u8; 3] = [31, 119, 180];
        const VAL: [u8; 3] = [255, 127, 14];
        let series =
            |name: &str| -> Vec<f32> { self.epochs.iter().filter_map(|e| e.get(name)).collect() };
        let panel = |name: &str| {
            let mut list = vec![Series {
                label: "train".into(),
                values: series(name),
                color: TRAIN,
            }];
            let val = series(&format!("val_{name}"));
            if !val.is_empty() {
                list.push(Series {
                    label: "val".into(),
                    values: val,
                    color: VAL,
                });
            }
            Panel {
                title: format!("{name} by epoch"),
                first_epoch: self.epochs.first().map_or(1, |e| e.epoch),
                series: list,
            }
        };
        let mut names = vec!["loss"];
        if let Some(e) = self.epochs.first() {
            names.extend(e.metrics.iter().map(|(m, _)| m.name()));
        }
        let panels: Vec<Panel> = names.iter().map(|n| panel(n)).collect();
        save_line_plots(path, &panels)
    }
}

fn non_finite(step: u64, epoch: usize, in_epoch: u64, loss: f32) -> Error {
    Error::invalid(
        "fit",
        format!(
            "the training loss became non-finite ({loss}) at step {step} (epoch {}, batch {in_epoch}). \
             The labels or targets, the input data and their scaling were checked for range and \
             NaN before training (the dataset's validate, the loader), so the likely cause is the \
             optimization: lower the learning rate, clip gradients (clip_global_norm), or scale \
             numeric features and targets (scale_features, scale_targets); for a model built \
             with the graph API, also check inputs fed directly and the parameter \
             initialization. Checkpoints saved after earlier epochs are untouched",
            epoch + 1
        ),
    )
}

impl Model {
    /// Trains on `data` (a [`crate::data::Dataset`] of images or a
    /// [`crate::data::ArrayDataset`] of numeric arrays) as `cfg` says; metrics are
    /// accumulated on the device and read once per epoch.
    ///
    /// In a distributed job (`Device::Mpi`) every rank calls `fit` with the same data and
    /// configuration; each trains on its rows of every batch, and only rank 0 prints and
    /// writes checkpoints. An error on one rank stops every rank with an error naming it.
    pub fn fit<S: Samples>(&mut self, data: &S, cfg: &FitConfig) -> Result<History> {
        let result = self.fit_all(data, cfg);
        if let Err(e) = &result {
            self.exec.abandon(e);
        }
        result
    }

    fn fit_all<S: Samples>(&mut self, data: &S, cfg: &FitConfig) -> Result<History> {
        self.check(data)?;
        cfg.lr_schedule.validate()?;
        if cfg.batch_size == 0 {
            return Err(Error::invalid("fit", "batch_size is 0"));
        }
        if cfg.verbose > 2 {
            return Err(Error::invalid(
                "fit",
                format!(
                    "verbose is {}; it is 0 (silent), 1 (a bar) or 2 (a line per epoch)",
                    cfg.verbose
                ),
            ));
        }
        if !(0.0..1.0).contains(&cfg.validation_split) {
            return Err(Error::invalid(
                "fit",
                format!("validation_split {} is not in [0, 1)", cfg.validation_split),
            ));
        }
        let (train, validation): (Vec<usize>, Option<Held<'_>>) = if cfg.validation_split > 0.0 {
            if cfg.validation_data.is_some() {
                return Err(Error::invalid(
                    "fit",
                    "give validation_split or validation_data, not both",
                ));
            }
            let (t, v) = crate::data::split_last(data.len(), cfg.validation_split)?;
            (t, Some((data as &dyn Samples, v)))
        } else if let Some(v) = &cfg.validation_data {
            self.check(&**v)?;
            if v.as_arrays().is_some() != data.as_arrays().is_some()
                || std::mem::discriminant(&v.target_kind())
                    != std::mem::discriminant(&data.target_kind())
            {
                return Err(Error::invalid(
                    "fit",
                    "validation_data is another kind of data than the training data (images \
                         and numeric arrays, class indices and real-valued targets do not mix)",
                ));
            }
            let all = (0..v.len()).collect();
            ((0..data.len()).collect(), Some((&**v as &dyn Samples, all)))
        } else {
            ((0..data.len()).collect(), None)
        };
        if train.is_empty() {
            return Err(Error::invalid(
                "fit",
                "no training samples left after the validation split",
            ));
        }
        self.default_metrics(data.target_kind());
        if let Some(es) = &cfg.early_stopping {
            if es.monitor != Monitor::Loss && validation.is_none() {
                return Err(Error::invalid(
                    "fit",
                    format!(
                        "early stopping on {:?} needs validation_split or validation_data",
                        es.monitor
                    ),
                ));
            }
            let wanted = match es.monitor {
                Monitor::ValAccuracy => Some(Metric::Accuracy),
                Monitor::Val(m) => Some(m),
                _ => None,
            };
            if let Some(m) = wanted.filter(|m| !self.metrics().contains(m)) {
                return Err(Error::invalid(
                    "fit",
                    format!(
                        "early stopping watches val_{} but the model reports {:?}; add it with \
                         Model::set_metrics",
                        m.name(),
                        self.metrics()
                    ),
                ));
            }
        }
        self.exec.agree("training samples", train.len() as u64)?;
        self.fit_preprocess(data, &train, cfg)?;
        self.set_clip(cfg.clip_global_norm)?;
        self.normalize = cfg.normalize.clone();
        self.fitted_on_pixels = data.as_arrays().is_none();
        let loader_cfg = LoaderConfig {
            shuffle: cfg.shuffle,
            seed: cfg.seed,
            drop_last: false,
            prefetch: 4,
            epochs: cfg.epochs.saturating_sub(cfg.initial_epoch),
            first_epoch: cfg.initial_epoch,
            augment: cfg.augment,
            ..self.scaling_config(data, cfg.batch_size, &cfg.normalize)
        };
        // The loader thread borrows `data` inside this scope: nothing is copied.
        std::thread::scope(|scope| {
            let loader = Loader::scoped(scope, data, Some(train), loader_cfg)?;
            self.train_epochs(loader, validation, cfg)
        })
    }

    /// Fits the numeric scaling `cfg` asks for on the training rows `train` of `data` (never
    /// on held-out rows) and keeps it with the model; also keeps the data's class names.
    fn fit_preprocess<S: Samples + ?Sized>(
        &mut self,
        data: &S,
        train: &[usize],
        cfg: &FitConfig,
    ) -> Result<()> {
        let Some(arrays) = data.as_arrays() else {
            if cfg.scale_features.is_some() || cfg.scale_targets.is_some() {
                return Err(Error::invalid(
                    "fit",
                    "scale_features and scale_targets apply to numeric arrays (ArrayDataset); \
                     images are scaled by `normalize`",
                ));
            }
            return Ok(());
        };
        if cfg.normalize != Normalize::Unit || cfg.augment.is_some() {
            return Err(Error::invalid(
                "fit",
                "`normalize` and `augment` apply to images; numeric arrays are scaled by \
                 scale_features",
            ));
        }
        if let Some(scaling) = cfg.scale_features {
            let f = arrays.sample_len();
            self.preprocess.features = Some(Affine::fit(scaling, &arrays.features, f, train)?);
        }
        if let Some(scaling) = cfg.scale_targets {
            let TargetKind::Values(width) = arrays.target_kind() else {
                return Err(Error::invalid(
                    "fit",
                    "scale_targets applies to real-valued targets; these are class indices",
                ));
            };
            if !self.loss().is_regression() {
                return Err(Error::invalid(
                    "fit",
                    format!(
                        "scale_targets is for regression losses, not {:?}",
                        self.loss()
                    ),
                ));
            }
            if width != 1 {
                return Err(Error::invalid(
                    "fit",
                    format!(
                        "scale_targets supports one target column (these have {width}): with \
                         several, MAE and RMSE could not be reported in the targets' units"
                    ),
                ));
            }
            let crate::data::Targets::Values { values, .. } = &arrays.targets else {
                unreachable!("target_kind said Values")
            };
            self.preprocess.targets = Some(Affine::fit(scaling, values, width, train)?);
        }
        if !arrays.class_names.is_empty() {
            self.class_names = arrays.class_names.clone();
        }
        Ok(())
    }

    /// `fit`'s epochs over `loader`'s batches, validating on `validation` after each.
    fn train_epochs(
        &mut self,
        mut loader: Loader,
        validation: Option<Held<'_>>,
        cfg: &FitConfig,
    ) -> Result<History> {
        let base_lr = self.optimizer.lr();
        let mut lr = f32::NAN;
        let mut best: Option<(f32, usize)> = None;
        let mut best_state = None;
        let mut waited = 0;
        let per_epoch = loader.batches_per_epoch();
        let mut history = History::default();
        let (bar_shown, lines) = match (self.is_root(), cfg.verbose) {
            (false, _) | (true, 0) => (false, false),
            (true, 1) => (true, true),
            _ => (false, true),
        };
        self.take_metrics()?;
        for epoch in cfg.initial_epoch..cfg.epochs {
            let bar = if bar_shown {
                let bar = indicatif::ProgressBar::new(per_epoch as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
                    )
                    .expect("the progress template is valid")
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            let start = Instant::now();
            let first_step = self.steps();
            let mut wait = 0.0;
            for b in 0..per_epoch {
                let t = Instant::now();
                let batch = loader.next_batch().ok_or_else(|| Error::Loader {
                    detail: "ran out of batches".into(),
                })??;
                wait += t.elapsed().as_secs_f64();
                let scheduled = cfg.lr_schedule.lr_at(base_lr, self.steps());
                if scheduled != lr {
                    self.set_lr(scheduled)?;
                    lr = scheduled;
                }
                self.run_batch(
                    true,
                    batch.len,
                    &batch.inputs,
                    &batch.labels,
                    &batch.targets,
                )?;
                loader.recycle(batch);
                bar.inc(1);
                // A cheap look at the running figures (5 floats) for the bar, and to stop
                // soon after the loss stops being finite.
                if (b + 1) % 100 == 0 || b + 1 == per_epoch {
                    let m = self.peek_metrics()?;
                    if let Some(k) = m.first_non_finite {
                        bar.abandon();
                        return Err(non_finite(first_step + k, epoch, k, m.mean_loss));
                    }
                    if bar_shown {
                        let mut msg = format!("loss {:.4}", m.mean_loss);
                        for (metric, v) in self.named(&m) {
                            msg.push_str(&format!(" {} {v:.4}", metric.name()));
                        }
                        bar.set_message(msg);
                    }
                }
            }
            let m = self.take_metrics()?;
            bar.finish_and_clear();
            if let Some(k) = m.first_non_finite {
                return Err(non_finite(first_step + k, epoch, k, m.mean_loss));
            }
            let seconds = start.elapsed().as_secs_f64();
            let (val_loss, val_metrics) = match &validation {
                None => (None, Vec::new()),
                Some((vdata, indices)) => {
                    let v = self.evaluate_indices(
                        *vdata,
                        indices.clone(),
                        cfg.batch_size.max(256),
                        &cfg.normalize,
                    )?;
                    (Some(v.mean_loss), self.named(&v))
                }
            };
            self.epoch = epoch + 1;
            history.epochs.push(EpochLog {
                epoch: epoch + 1,
                loss: m.mean_loss,
                metrics: self.named(&m),
                val_loss,
                val_metrics,
                seconds,
                // Every rank's samples (the metrics are summed over ranks).
                samples_per_sec: m.samples as f64 / seconds,
                loader_wait_seconds: wait,
            });
            if lines {
                let e = history.epochs.last().expect("just pushed");
                println!("epoch {}/{}: {e}", e.epoch, cfg.epochs);
            }
            if let Some(path) = cfg.checkpoint.as_ref().filter(|_| self.is_root()) {
                self.save(path)?;
            }
            if let Some(es) = &cfg.early_stopping {
                // Compare on a "lower is better" scale (accuracy and R^2 negated).
                let e = history.epochs.last().expect("just pushed");
                let watched = |m: Metric| {
                    let v = e.get(&format!("val_{}", m.name())).unwrap_or(f32::NAN);
                    let v = if m.higher_is_better() { -v } else { v };
                    if v.is_nan() {
                        f32::INFINITY
                    } else {
                        v
                    }
                };
                let score = match es.monitor {
                    Monitor::ValLoss => val_loss.unwrap_or(f32::INFINITY),
                    Monitor::ValAccuracy => watched(Metric::Accuracy),
                    Monitor::Val(m) => watched(m),
                    Monitor::Loss => m.mean_loss,
                };
                if best.is_none_or(|(b, _)| score < b - es.min_delta) {
                    best = Some((score, epoch + 1));
                    waited = 0;
                    if es.restore_best_weights {
                        best_state = Some(self.snapshot()?);
                    }
                } else {
                    waited += 1;
                    if waited >= es.patience {
                        history.stopped_early = Some(epoch + 1);
                        break;
                    }
                }
            }
        }
        history.best_epoch = best.map(|(_, e)| e);
        let last = history.epochs.last().map(|e| e.epoch);
        if let (Some(state), Some(b)) = (&best_state, history.best_epoch) {
            if Some(b) != last {
                self.restore(state)?;
            }
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::{EpochLog, History, Metric};

    fn log() -> EpochLog {
        EpochLog {
            epoch: 2,
            loss: 0.45123,
            metrics: vec![(Metric::Accuracy, 0.84)],
            val_loss: None,
            val_metrics: vec![],
            seconds: 1.54,
            samples_per_sec: 41234.4,
            loader_wait_seconds: 0.0031,
        }
    }

    #[test]
    fn epoch_log_prints_validation_figures_only_when_present() {
        let mut e = log();
        assert_eq!(
            e.to_string(),
            "loss 0.4512, accuracy 0.8400, 41234 samples/s, 1.5 s, loader wait 0.003 s"
        );
        e.val_loss = Some(0.5);
        e.val_metrics = vec![(Metric::Accuracy, 0.8)];
        assert_eq!(
            e.to_string(),
            "loss 0.4512, accuracy 0.8400, val_loss 0.5000, val_accuracy 0.8000, \
             41234 samples/s, 1.5 s, loader wait 0.003 s"
        );
        assert_eq!(e.get("val_accuracy"), Some(0.8));
        assert_eq!(e.get("mae"), None);
    }

    #[test]
    fn history_writes_csv_and_json_with_the_metric_names() {
        let mut e = log();
        e.metrics = vec![(Metric::Mae, 1.5), (Metric::R2, 0.25)];
        e.val_loss = Some(2.0);
        e.val_metrics = vec![(Metric::Mae, 2.5), (Metric::R2, f32::NAN)];
        let h = History {
            epochs: vec![e],
            stopped_early: None,
            best_epoch: Some(2),
        };
        let csv = h.to_csv();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "epoch,loss,mae,r2,val_loss,val_mae,val_r2,seconds,samples_per_sec,\
                 loader_wait_seconds"
            )
        );
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("2,0.45123,1.5,0.25,2,2.5,NaN,1.54,"),
            "{row}"
        );
        let json = h.to_json();
        assert!(json.contains("\"val_mae\": [2.5]"), "{json}");
        assert!(json.contains("\"val_r2\": [null]"), "{json}");
        assert!(json.contains("\"best_epoch\": 2"), "{json}");
    }
}
