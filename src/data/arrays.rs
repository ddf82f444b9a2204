//! Numeric datasets: f32 features of any per-sample shape, with targets that are class indices
//! (any number of classes) or real-valued rows of any width (regression, one-hot or
//! multi-label rows), and the per-feature scaling fitted on a training split.

use ndarray::{Array2, ArrayBase, Data, Dimension, Ix2};

use crate::error::{Error, Result};

/// What each sample is trained towards.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class index per sample, each below `classes`.
    Classes { labels: Vec<u32>, classes: usize },
    /// `width` real values per sample, row-major.
    Values { values: Vec<f32>, width: usize },
}

impl Targets {
    /// Class indices; the class count is one more than the largest label.
    pub fn classes(labels: Vec<u32>) -> Self {
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        Targets::Classes { labels, classes }
    }

    /// Real-valued targets from an array whose first axis is the sample: a 1-D array is one
    /// value per sample, an (n, k) array k values per sample.
    pub fn values<S, D>(y: &ArrayBase<S, D>) -> Self
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        let n = y.shape().first().copied().unwrap_or(0);
        let width: usize = y.shape().iter().skip(1).product();
        let values = y.iter().copied().collect::<Vec<f32>>();
        // An empty array has no rows to take a width from: a width of 1 keeps `validate`
        // reporting "no samples" rather than a width of 0.
        let width = if n == 0 { width.max(1) } else { width };
        Targets::Values { values, width }
    }

    /// Samples the targets cover.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values { values, width } => values.len() / (*width).max(1),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An in-memory numeric dataset: `len` samples of `sample_shape` f32 features each.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayDataset {
    /// (len, sample_shape...), row-major.
    pub features: Vec<f32>,
    /// One sample's shape, e.g. `[30]` for 30 features, `[1, 28, 28]` for an image.
    pub sample_shape: Vec<usize>,
    pub targets: Targets,
    /// A display name per class (classification), e.g. from string labels in a CSV file.
    pub class_names: Vec<String>,
}

impl ArrayDataset {
    /// A dataset from `x` (first axis: the samples; the rest is one sample's shape) and its
    /// targets, checked with [`ArrayDataset::validate`].
    pub fn new<S, D>(x: &ArrayBase<S, D>, targets: Targets) -> Result<Self>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "features need a sample axis and at least one feature axis; got shape {shape:?} \
                     (for one feature per sample, reshape to (n, 1))"
                ),
            ));
        }
        let data = ArrayDataset {
            features: x.iter().copied().collect(),
            sample_shape: shape[1..].to_vec(),
            targets,
            class_names: Vec::new(),
        };
        data.validate()?;
        Ok(data)
    }

    /// Regression (or one-hot / multi-label rows): `y` holds each sample's target values.
    pub fn regression<S, D, S2, D2>(x: &ArrayBase<S, D>, y: &ArrayBase<S2, D2>) -> Result<Self>
    where
        S: Data<Elem = f32>,
        D: Dimension,
        S2: Data<Elem = f32>,
        D2: Dimension,
    {
        Self::new(x, Targets::values(y))
    }

    /// Classification: `labels` holds each sample's class index, below `classes`.
    pub fn classification<S, D>(x: &ArrayBase<S, D>, labels: &[u32], classes: usize) -> Result<Self>
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        Self::new(
            x,
            Targets::Classes {
                labels: labels.to_vec(),
                classes,
            },
        )
    }

    /// Classification from one-hot rows `y` of shape (samples, classes), as Keras'
    /// `to_categorical` makes them: each row must hold a single 1 and zeros (a row that does
    /// not is named); soft targets (label smoothing, mixup) go through
    /// [`ArrayDataset::regression`] instead.
    pub fn classification_one_hot<S, D, S2>(
        x: &ArrayBase<S, D>,
        y: &ArrayBase<S2, Ix2>,
    ) -> Result<Self>
    where
        S: Data<Elem = f32>,
        D: Dimension,
        S2: Data<Elem = f32>,
    {
        let classes = y.ncols();
        let mut labels = Vec::with_capacity(y.nrows());
        for (i, row) in y.rows().into_iter().enumerate() {
            let ones: Vec<usize> = (0..classes).filter(|&j| row[j] == 1.0).collect();
            let zeros = row.iter().filter(|&&v| v == 0.0).count();
            match ones.as_slice() {
                [c] if zeros == classes - 1 => labels.push(*c as u32),
                _ => {
                    return Err(Error::invalid(
                        "dataset",
                        format!(
                            "row {i} of the one-hot targets is not one-hot: {row}; a row holds a \
                             single 1 and zeros (for soft targets, use ArrayDataset::regression)"
                        ),
                    ))
                }
            }
        }
        Self::classification(x, &labels, classes)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features (model inputs) per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The number of classes (classification) or target values per sample (regression).
    pub fn target_width(&self) -> usize {
        match &self.targets {
            Targets::Classes { classes, .. } => *classes,
            Targets::Values { width, .. } => *width,
        }
    }

    /// Checks what the fields must agree on: a non-empty sample shape, exactly `len *
    /// sample_len` features, targets of a positive width, class indices below the class count
    /// and a name per class when names are given, and no NaN or infinity anywhere (the first
    /// is named by sample and position).
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::invalid("dataset", detail));
        let per_sample = self
            .sample_shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some(f) = per_sample.filter(|&f| f > 0 && !self.sample_shape.is_empty()) else {
            return bad(format!(
                "sample shape {:?} must have at least one feature",
                self.sample_shape
            ));
        };
        match &self.targets {
            Targets::Classes { labels, classes } => {
                if *classes == 0 {
                    return bad("a classification dataset needs at least one class".into());
                }
                if let Some((i, &l)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| l as usize >= *classes)
                {
                    return bad(format!(
                        "label {l} of sample {i} is not below the class count ({classes})"
                    ));
                }
                if !self.class_names.is_empty() && self.class_names.len() != *classes {
                    return bad(format!(
                        "{} class names for {classes} classes",
                        self.class_names.len()
                    ));
                }
            }
            Targets::Values { values, width } => {
                if *width == 0 {
                    return bad("targets of width 0: each sample needs at least one".into());
                }
                if values.len() % width != 0 {
                    return bad(format!(
                        "{} target values do not make whole rows of {width}",
                        values.len()
                    ));
                }
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return bad(format!(
                        "target {} of sample {} is {}",
                        i % width,
                        i / width,
                        values[i]
                    ));
                }
            }
        }
        let n = self.len();
        if n.checked_mul(f) != Some(self.features.len()) {
            return bad(format!(
                "{n} samples of {f} features need {} values, got {}",
                n.checked_mul(f)
                    .map_or("more than addressable".into(), |w| w.to_string()),
                self.features.len()
            ));
        }
        if let Some(i) = self.features.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "feature {} of sample {} is {}",
                i % f,
                i / f,
                self.features[i]
            ));
        }
        Ok(())
    }

    /// A seeded random split holding out `fraction` of the samples (as [`super::Dataset`]'s):
    /// (kept, held out) datasets.
    pub fn split_seeded(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let (keep, out) = super::split_seeded(self.len(), fraction, seed)?;
        Ok((self.select(&keep), self.select(&out)))
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let f = self.sample_len();
        let mut features = Vec::with_capacity(indices.len() * f);
        for &i in indices {
            features.extend_from_slice(&self.features[i * f..(i + 1) * f]);
        }
        let targets = match &self.targets {
            Targets::Classes { labels, classes } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                classes: *classes,
            },
            Targets::Values { values, width } => Targets::Values {
                values: indices
                    .iter()
                    .flat_map(|&i| values[i * width..(i + 1) * width].iter().copied())
                    .collect(),
                width: *width,
            },
        };
        ArrayDataset {
            features,
            sample_shape: self.sample_shape.clone(),
            targets,
            class_names: self.class_names.clone(),
        }
    }
}

/// Class indices as one-hot rows of `classes` columns (Keras' `to_categorical`): row i
/// holds a 1 at column `labels[i]`. A label at or above `classes` is an error naming it.
pub fn to_categorical(labels: &[u32], classes: usize) -> Result<Array2<f32>> {
    let mut y = Array2::zeros((labels.len(), classes));
    for (i, &l) in labels.iter().enumerate() {
        if l as usize >= classes {
            return Err(Error::invalid(
                "to_categorical",
                format!("label {l} of sample {i} is not below the class count ({classes})"),
            ));
        }
        y[[i, l as usize]] = 1.0;
    }
    Ok(y)
}

/// How numeric columns are scaled before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// `(x - mean) / std` per column, with the population std (scikit-learn's StandardScaler);
    /// a constant column is only centred (its std counts as 1).
    Standard,
    /// `(x - min) / (max - min)` per column, into [0, 1]; a constant column is only shifted
    /// (to 0).
    MinMax,
}

/// A per-column affine map `x * scale + shift`, fitted by a [`Scaling`] on training data.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl Affine {
    /// Fits `scaling` to the rows `rows` of a row-major table of `width` columns (statistics
    /// in f64; only the given rows are read, so a held-out split never leaks into them).
    pub fn fit(scaling: Scaling, table: &[f32], width: usize, rows: &[usize]) -> Result<Self> {
        if rows.is_empty() || width == 0 {
            return Err(Error::invalid(
                "scaling",
                "cannot fit a scaling to no rows or no columns",
            ));
        }
        let column = |j: usize| rows.iter().map(move |&r| table[r * width + j] as f64);
        let n = rows.len() as f64;
        let (mut scale, mut shift) = (Vec::with_capacity(width), Vec::with_capacity(width));
        for j in 0..width {
            let (s, b) = match scaling {
                Scaling::Standard => {
                    let mean = column(j).sum::<f64>() / n;
                    let var = column(j).map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                    let std = var.sqrt();
                    // scikit-learn's rule: a (near-)zero variance column is not divided.
                    let std = if std <= 10.0 * f64::EPSILON * mean.abs().max(1.0) {
                        1.0
                    } else {
                        std
                    };
                    (1.0 / std, -mean / std)
                }
                Scaling::MinMax => {
                    let (lo, hi) = column(j)
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                            (a.min(v), b.max(v))
                        });
                    // A range below the values' own rounding is a constant column.
                    let tiny = 10.0 * f64::EPSILON * lo.abs().max(hi.abs()).max(1.0);
                    let range = if hi - lo > tiny { hi - lo } else { 1.0 };
                    (1.0 / range, -lo / range)
                }
            };
            scale.push(s as f32);
            shift.push(b as f32);
        }
        Ok(Affine { scale, shift })
    }

    /// Columns this map scales.
    pub fn width(&self) -> usize {
        self.scale.len()
    }

    /// Checks that it has `width` finite columns with non-zero scales.
    pub fn check(&self, what: &str, width: usize) -> Result<()> {
        if self.scale.len() != width || self.shift.len() != width {
            return Err(Error::invalid(
                "scaling",
                format!(
                    "{what} has {} scales and {} shifts for {width} columns",
                    self.scale.len(),
                    self.shift.len()
                ),
            ));
        }
        let finite = self.scale.iter().chain(&self.shift).all(|v| v.is_finite());
        if !finite || self.scale.contains(&0.0) {
            return Err(Error::invalid(
                "scaling",
                format!("{what} needs finite values and non-zero scales"),
            ));
        }
        Ok(())
    }

    /// One row mapped.
    pub fn apply_row<'a>(&'a self, row: &'a [f32]) -> impl Iterator<Item = f32> + 'a {
        row.iter()
            .zip(self.scale.iter().zip(&self.shift))
            .map(|(&x, (&s, &b))| x * s + b)
    }

    /// A row-major table mapped in place (`width` = this map's columns).
    pub fn apply(&self, table: &mut [f32]) {
        for row in table.chunks_mut(self.width()) {
            for (x, (&s, &b)) in row.iter_mut().zip(self.scale.iter().zip(&self.shift)) {
                *x = *x * s + b;
            }
        }
    }

    /// A row-major table mapped back (the inverse map) in place.
    pub fn invert(&self, table: &mut [f32]) {
        for row in table.chunks_mut(self.width()) {
            for (x, (&s, &b)) in row.iter_mut().zip(self.scale.iter().zip(&self.shift)) {
                *x = (*x - b) / s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_scaling_matches_its_definition_and_skips_constant_columns() {
        // Two columns over rows 0..4; row 4 is held out and must not move the statistics.
        let table = [1.0, 5.0, 2.0, 5.0, 3.0, 5.0, 4.0, 5.0, 100.0, 7.0];
        let a = Affine::fit(Scaling::Standard, &table, 2, &[0, 1, 2, 3]).unwrap();
        let std = (1.25f64).sqrt(); // population std of 1, 2, 3, 4
        assert!((a.scale[0] as f64 - 1.0 / std).abs() < 1e-6);
        assert!((a.shift[0] as f64 + 2.5 / std).abs() < 1e-6);
        assert_eq!((a.scale[1], a.shift[1]), (1.0, -5.0));
        let mut t = table.to_vec();
        a.apply(&mut t);
        a.invert(&mut t);
        for (x, y) in t.iter().zip(&table) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn min_max_maps_the_training_range_to_unit() {
        let table = [2.0, 4.0, 6.0];
        let a = Affine::fit(Scaling::MinMax, &table, 1, &[0, 1, 2]).unwrap();
        let mut t = table.to_vec();
        a.apply(&mut t);
        assert_eq!(t, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn non_finite_values_are_named_by_sample_and_position() {
        let x = ndarray::arr2(&[[1.0f32, 2.0], [3.0, f32::NAN]]);
        let err = ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32, 2.0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("feature 1 of sample 1 is NaN"), "{err}");
        let x = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
        let err = ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32, f32::INFINITY]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("target 0 of sample 1 is inf"), "{err}");
        let err = ArrayDataset::classification(&x, &[0, 3], 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 3 of sample 1"), "{err}");
        let err = ArrayDataset::regression(&x, &ndarray::arr1(&[1.0f32]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 samples of 2 features need 2 values, got 4"),
            "{err}"
        );
    }
}
