//! Numeric data from files: CSV (through the `csv` crate; whitespace-separated text too) and
//! NumPy `.npy` / `.npz` (through `ndarray-npy`). Every rejection names the file, and for
//! text the line and the column.

use std::io::Read;
use std::path::Path;

use ndarray::{Array2, ArrayD, IxDyn};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt};

use super::{ArrayDataset, Targets};
use crate::error::{Error, Result};

/// How cells are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    /// One byte, e.g. `b','`, `b';'`, `b'\t'` (quoted cells as RFC 4180).
    Byte(u8),
    /// Runs of spaces and tabs (numpy's `loadtxt`, scikit-learn's diabetes files).
    Whitespace,
}

/// A column, by header name or by 0-based index (negative counts from the end: -1 is last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Name(String),
    Index(i64),
}

/// What the target columns hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One target column of class labels. Whole numbers 0, 1, ... (`3` or `3.0`) are class
    /// indices as they are (labels 1, 2, 10 make classes 1 < 2 < 10 of 11); negative whole
    /// numbers make classes in numeric order, named by their values; any other text is a
    /// class name, mapped to indices in sorted order (kept as the class names). A fraction is
    /// an error (real-valued targets are [`Task::Regress`]), and so is a column holding a
    /// single class unless [`CsvOptions::class_names`] names at least two.
    Classify,
    /// Real-valued targets, one column or several.
    Regress,
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    pub delimiter: Delimiter,
    /// The first row (after `skip_lines`) names the columns.
    pub has_header: bool,
    /// Lines skipped at the start of the file (metadata such as scikit-learn's
    /// `569,30,malignant,benign`).
    pub skip_lines: usize,
    /// Lines starting with this byte are skipped anywhere.
    pub comment: Option<u8>,
    /// The target columns; every other column is a feature.
    pub targets: Vec<Column>,
    pub task: Task,
    /// Drop rows with an empty or NaN cell instead of failing on them.
    pub drop_missing: bool,
    /// Names for class indices (e.g. from a metadata line): every numeric label must have
    /// one (an error names the line of one that has not); ignored for string labels.
    pub class_names: Vec<String>,
}

impl CsvOptions {
    /// Comma-separated with a header row; the last column is a class label.
    pub fn new() -> Self {
        CsvOptions {
            delimiter: Delimiter::Byte(b','),
            has_header: true,
            skip_lines: 0,
            comment: None,
            targets: vec![Column::Index(-1)],
            task: Task::Classify,
            drop_missing: false,
            class_names: Vec::new(),
        }
    }
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// A file's text, gunzipped when it starts with the gzip magic (`.csv.gz`).
fn read_text(path: &Path) -> Result<String> {
    if path.is_dir() {
        return Err(Error::data(path, "is a directory, not a data file"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("not a readable gzip file: {e}")))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| {
        Error::data(
            path,
            format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// A text table: the header (or `column 0`, `column 1`, ... without one) and the rows, each
/// with the 1-based line it came from.
struct Table {
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

fn read_table(path: &Path, opts: &CsvOptions) -> Result<Table> {
    let text = read_text(path)?;
    // (line number, line) after skipping metadata and comments.
    let kept = text
        .lines()
        .enumerate()
        .skip(opts.skip_lines)
        .filter(|(_, l)| !l.trim().is_empty())
        .filter(|(_, l)| opts.comment.is_none_or(|c| !l.as_bytes().starts_with(&[c])))
        .map(|(i, l)| (i + 1, l));
    let mut records: Vec<(usize, Vec<String>)> = Vec::new();
    match opts.delimiter {
        Delimiter::Whitespace => {
            for (line, l) in kept {
                records.push((line, l.split_whitespace().map(str::to_string).collect()));
            }
        }
        Delimiter::Byte(d) => {
            // The csv crate parses quoting; each kept line is one record (a quoted cell with a
            // line break is not supported: numeric tables have none).
            for (line, l) in kept {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(d)
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(l.as_bytes());
                let mut rec = csv::StringRecord::new();
                reader
                    .read_record(&mut rec)
                    .map_err(|e| Error::data(path, format!("line {line}: not valid CSV: {e}")))?;
                records.push((line, rec.iter().map(|c| c.trim().to_string()).collect()));
            }
        }
    }
    let mut records = records.into_iter();
    let header = if opts.has_header {
        let (_, h) = records
            .next()
            .ok_or_else(|| Error::data(path, "is empty: no header row"))?;
        h
    } else {
        Vec::new()
    };
    let rows: Vec<(usize, Vec<String>)> = records.collect();
    let width = if opts.has_header {
        header.len()
    } else {
        rows.first().map_or(0, |(_, r)| r.len())
    };
    if rows.is_empty() {
        return Err(Error::data(path, "holds no data rows"));
    }
    for (line, r) in &rows {
        if r.len() != width {
            return Err(Error::data(
                path,
                format!(
                    "line {line} has {} cells, the table has {width} columns",
                    r.len()
                ),
            ));
        }
    }
    let header = if opts.has_header {
        header
    } else {
        (0..width).map(|j| format!("column {j}")).collect()
    };
    Ok(Table { header, rows })
}

impl Table {
    /// The index of `col`.
    fn index(&self, col: &Column, path: &Path) -> Result<usize> {
        let w = self.header.len() as i64;
        match col {
            Column::Name(name) => self.header.iter().position(|h| h == name).ok_or_else(|| {
                Error::data(
                    path,
                    format!("has no column `{name}`; its columns are {:?}", self.header),
                )
            }),
            Column::Index(i) => {
                let j = if *i < 0 { w + i } else { *i };
                if (0..w).contains(&j) {
                    Ok(j as usize)
                } else {
                    Err(Error::data(
                        path,
                        format!("has {w} columns; column index {i} is outside them"),
                    ))
                }
            }
        }
    }
}

fn is_missing(cell: &str) -> bool {
    cell.is_empty() || cell.eq_ignore_ascii_case("nan") || cell.eq_ignore_ascii_case("na")
}

/// The error for an empty or NaN cell at `line`, column `col`.
fn missing_cell(path: &Path, line: usize, col: usize, header: &[String]) -> Error {
    Error::data(
        path,
        format!(
            "line {line}, column {} (`{}`) is empty or NaN; fill it in, or set drop_missing to \
             skip such rows",
            col + 1,
            header[col]
        ),
    )
}

/// Parses a numeric cell, naming where it is on failure.
fn number(cell: &str, line: usize, col: usize, header: &[String], path: &Path) -> Result<f32> {
    let v: f64 = cell.parse().map_err(|_| {
        Error::data(
            path,
            format!(
                "line {line}, column {} (`{}`): `{cell}` is not a number",
                col + 1,
                header[col]
            ),
        )
    })?;
    if !v.is_finite() || v.abs() > f32::MAX as f64 {
        return Err(Error::data(
            path,
            format!(
                "line {line}, column {} (`{}`): {cell} is not a finite f32",
                col + 1,
                header[col]
            ),
        ));
    }
    Ok(v as f32)
}

/// Reads a CSV file into a dataset: the target columns `opts.targets`, the rest features.
///
/// ```no_run
/// use wgtrain::data::tabular::{read_csv, Column, CsvOptions, Task};
/// let data = read_csv(
///     std::path::Path::new("houses.csv"),
///     &CsvOptions { targets: vec![Column::Name("price".into())], task: Task::Regress, ..CsvOptions::new() },
/// )?;
/// # Ok::<(), wgtrain::Error>(())
/// ```
pub fn read_csv(path: &Path, opts: &CsvOptions) -> Result<ArrayDataset> {
    let table = read_table(path, opts)?;
    let mut target_cols = Vec::new();
    for c in &opts.targets {
        let j = table.index(c, path)?;
        if target_cols.contains(&j) {
            return Err(Error::data(
                path,
                format!("target column {c:?} is named twice"),
            ));
        }
        target_cols.push(j);
    }
    if target_cols.is_empty() {
        return Err(Error::invalid("read_csv", "no target column given"));
    }
    if opts.task == Task::Classify && target_cols.len() != 1 {
        return Err(Error::invalid(
            "read_csv",
            format!(
                "classification takes one label column, {} were given",
                target_cols.len()
            ),
        ));
    }
    let feature_cols: Vec<usize> = (0..table.header.len())
        .filter(|j| !target_cols.contains(j))
        .collect();
    if feature_cols.is_empty() {
        return Err(Error::data(
            path,
            "has no feature columns besides the targets",
        ));
    }
    let mut features = Vec::new();
    let mut values = Vec::new();
    let mut labels_text = Vec::new();
    for (line, row) in &table.rows {
        let missing = feature_cols
            .iter()
            .chain(&target_cols)
            .find(|&&j| is_missing(&row[j]));
        if let Some(&j) = missing {
            if opts.drop_missing {
                continue;
            }
            return Err(missing_cell(path, *line, j, &table.header));
        }
        for &j in &feature_cols {
            features.push(number(&row[j], *line, j, &table.header, path)?);
        }
        match opts.task {
            Task::Regress => {
                for &j in &target_cols {
                    values.push(number(&row[j], *line, j, &table.header, path)?);
                }
            }
            Task::Classify => labels_text.push((*line, row[target_cols[0]].clone())),
        }
    }
    let n = features.len() / feature_cols.len();
    if n == 0 {
        return Err(Error::data(
            path,
            "has no rows left after dropping missing values",
        ));
    }
    let x = Array2::from_shape_vec((n, feature_cols.len()), features).expect("rows of equal width");
    let data = match opts.task {
        Task::Regress => {
            let width = target_cols.len();
            ArrayDataset::new(&x, Targets::Values { values, width })?
        }
        Task::Classify => {
            let column = &table.header[target_cols[0]];
            let (labels, classes, names) =
                class_indices(&labels_text, &opts.class_names, column, path)?;
            let mut d = ArrayDataset::new(&x, Targets::Classes { labels, classes })?;
            d.class_names = names;
            d
        }
    };
    Ok(data)
}

/// A label column's (line, text) cells as class indices, the class count and the class
/// names. Whole non-negative numbers (`3`, `3.0`) are class indices as they are, named by
/// `declared` when given (every label must then have a name); other whole numbers (`-1`) are
/// classes in numeric order, named by their values; any other text is a name, in sorted
/// order. A fraction (`2.5`) is refused (a real-valued target belongs to `Task::Regress`),
/// and so is a column of a single class unless `declared` names at least two.
fn class_indices(
    cells: &[(usize, String)],
    declared: &[String],
    column: &str,
    path: &Path,
) -> Result<(Vec<u32>, usize, Vec<String>)> {
    let at = |line: usize, what: String| {
        Error::data(path, format!("line {line}, column `{column}`: {what}"))
    };
    let numbers: Option<Vec<f64>> = cells
        .iter()
        .map(|(_, t)| t.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect();
    let (labels, classes, names) = match numbers {
        Some(values) => {
            if let Some(k) = values.iter().position(|v| v.fract() != 0.0) {
                let (line, text) = &cells[k];
                return Err(at(
                    *line,
                    format!(
                        "the label `{text}` is not a whole number; class labels are integers or \
                         names (for real-valued targets, read the column with task: \
                         Task::Regress)"
                    ),
                ));
            }
            if values.iter().all(|&v| (0.0..=u32::MAX as f64).contains(&v)) {
                let labels: Vec<u32> = values.iter().map(|&v| v as u32).collect();
                if !declared.is_empty() {
                    if let Some(k) = labels.iter().position(|&l| l as usize >= declared.len()) {
                        return Err(at(
                            cells[k].0,
                            format!(
                                "label {} has no name among the {} class names given ({})",
                                labels[k],
                                declared.len(),
                                declared.join(", ")
                            ),
                        ));
                    }
                }
                let top = labels.iter().max().map_or(0, |&m| m as usize + 1);
                (labels, top.max(declared.len()), declared.to_vec())
            } else {
                let mut distinct = values.clone();
                distinct.sort_by(f64::total_cmp);
                distinct.dedup();
                let labels = values
                    .iter()
                    .map(|v| {
                        distinct
                            .binary_search_by(|d| d.total_cmp(v))
                            .expect("listed") as u32
                    })
                    .collect();
                let names = distinct.iter().map(|v| format!("{v}")).collect::<Vec<_>>();
                (labels, names.len(), names)
            }
        }
        None => {
            let mut names: Vec<String> = cells.iter().map(|(_, t)| t.clone()).collect();
            names.sort();
            names.dedup();
            let labels = cells
                .iter()
                .map(|(_, t)| names.binary_search(t).expect("every name is listed") as u32)
                .collect();
            (labels, names.len(), names)
        }
    };
    let first = labels.first().copied();
    if declared.len() < 2 && labels.iter().all(|&l| Some(l) == first) {
        return Err(Error::data(
            path,
            format!(
                "column `{column}` holds one class (`{}`) in every row, and a classifier learns \
                 nothing from one class; if this file is part of a larger set, name every class \
                 with class_names",
                cells.first().map_or("", |(_, t)| t.as_str())
            ),
        ));
    }
    Ok((labels, classes, names))
}

/// Reads a CSV file of numbers only (every column), e.g. a feature or a target file.
pub fn read_csv_matrix(path: &Path, opts: &CsvOptions) -> Result<Array2<f32>> {
    let table = read_table(path, opts)?;
    let width = table.header.len();
    let mut values = Vec::with_capacity(table.rows.len() * width);
    let mut rows = 0;
    for (line, row) in &table.rows {
        if let Some(j) = row.iter().position(|c| is_missing(c)) {
            if opts.drop_missing {
                continue;
            }
            return Err(missing_cell(path, *line, j, &table.header));
        }
        for (j, cell) in row.iter().enumerate() {
            values.push(number(cell, *line, j, &table.header, path)?);
        }
        rows += 1;
    }
    Array2::from_shape_vec((rows, width), values)
        .map_err(|e| Error::data(path, format!("building the array: {e}")))
}

/// Converts an array of any supported element type to f32 (integers and f64 rounded to the
/// nearest f32).
fn npy_to_f32(bytes: &[u8], what: &dyn Fn(String) -> Error) -> Result<ArrayD<f32>> {
    macro_rules! try_as {
        ($($t:ty),*) => {
            $(
                match ArrayD::<$t>::read_npy(bytes) {
                    Ok(a) => return Ok(a.mapv(|v| v as f32)),
                    Err(ReadNpyError::WrongDescriptor(_)) => {}
                    Err(e) => return Err(what(npy_error(e))),
                }
            )*
        };
    }
    match ArrayD::<f32>::read_npy(bytes) {
        Ok(a) => return Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(what(npy_error(e))),
    }
    try_as!(f64, i64, i32, i16, i8, u64, u32, u16, u8);
    match ArrayD::<bool>::read_npy(bytes) {
        Ok(a) => Ok(a.mapv(|v| v as u8 as f32)),
        Err(ReadNpyError::WrongDescriptor(d)) => Err(what(format!(
            "holds elements of dtype {d}; wgtrain reads float, integer and bool arrays"
        ))),
        Err(e) => Err(what(npy_error(e))),
    }
}

fn npy_error(e: ReadNpyError) -> String {
    match e {
        ReadNpyError::MissingData => {
            "is truncated: the data are shorter than the header says".into()
        }
        ReadNpyError::ExtraBytes(n) => format!("has {n} bytes after the data the header declares"),
        other => format!("is not a readable .npy array: {other}"),
    }
}

/// Reads a `.npy` file as f32 (f32, f64, integer and bool arrays are converted).
pub fn read_npy(path: &Path) -> Result<ArrayD<f32>> {
    if path.is_dir() {
        return Err(Error::data(path, "is a directory, not a .npy file"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    npy_to_f32(&bytes, &|m| Error::data(path, m))
}

/// Reads the array `name` of a `.npz` archive as f32 (as [`read_npy`]).
pub fn read_npz(path: &Path, name: &str) -> Result<ArrayD<f32>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(file)
        .map_err(|e| Error::data(path, format!("is not a readable .npz archive: {e}")))?;
    let names = npz
        .names()
        .map_err(|e| Error::data(path, format!("is not a readable .npz archive: {e}")))?;
    let entry = [name.to_string(), format!("{name}.npy")]
        .into_iter()
        .find(|n| names.contains(n))
        .ok_or_else(|| Error::data(path, format!("has no array `{name}`; it holds {names:?}")))?;
    // The raw bytes of the entry, so that every dtype goes through one conversion.
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::data(path, format!("is not a readable .npz archive: {e}")))?;
    let mut bytes = Vec::new();
    zip.by_name(&entry)
        .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
        .map_err(|e| Error::data(path, format!("reading `{entry}`: {e}")))?;
    npy_to_f32(&bytes, &|m| {
        Error::data(path, format!("array `{name}` {m}"))
    })
}

/// A numeric dataset from `.npy` files: `x` (samples first) and `y` (class indices with
/// [`Task::Classify`], real values with [`Task::Regress`]).
pub fn read_npy_dataset(x: &Path, y: &Path, task: Task) -> Result<ArrayDataset> {
    let features = read_npy(x)?;
    let targets = read_npy(y)?;
    dataset_from(features, targets, task, &|m| Error::data(y, m))
}

/// A numeric dataset from the arrays `x` and `y` of one `.npz` archive.
pub fn read_npz_dataset(path: &Path, x: &str, y: &str, task: Task) -> Result<ArrayDataset> {
    let features = read_npz(path, x)?;
    let targets = read_npz(path, y)?;
    dataset_from(features, targets, task, &|m| {
        Error::data(path, format!("array `{y}`: {m}"))
    })
}

fn dataset_from(
    x: ArrayD<f32>,
    y: ArrayD<f32>,
    task: Task,
    err: &dyn Fn(String) -> Error,
) -> Result<ArrayDataset> {
    if x.ndim() < 2 {
        return Err(err(format!(
            "the features have shape {:?}; they need a sample axis and at least one feature axis",
            x.shape()
        )));
    }
    let n = x.shape()[0];
    if y.shape().first() != Some(&n) {
        return Err(err(format!(
            "{} target rows for {n} samples",
            y.shape().first().copied().unwrap_or(0)
        )));
    }
    let targets = match task {
        Task::Regress => Targets::values(&y),
        Task::Classify => {
            if y.len() != n {
                return Err(err(format!(
                    "class labels need one value per sample, got shape {:?}",
                    y.shape()
                )));
            }
            let mut labels = Vec::with_capacity(n);
            for (i, &v) in y.iter().enumerate() {
                if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f32 {
                    return Err(err(format!(
                        "label {v} of sample {i} is not a class index (0, 1, 2, ...)"
                    )));
                }
                labels.push(v as u32);
            }
            Targets::classes(labels)
        }
    };
    let x = x.into_dimensionality::<IxDyn>().expect("dynamic");
    ArrayDataset::new(&x, targets)
}

/// The small real datasets scikit-learn ships, read from its installed data folder (Debian's
/// `python3-sklearn` puts them in [`sklearn::SKLEARN_DATA_DIR`]).
pub mod sklearn {
    use std::path::{Path, PathBuf};

    use super::{read_csv, read_csv_matrix, Column, CsvOptions, Delimiter, Task};
    use crate::data::ArrayDataset;
    use crate::error::{Error, Result};

    /// Where Debian's `python3-sklearn` installs the data files.
    pub const SKLEARN_DATA_DIR: &str = "/usr/lib/python3/dist-packages/sklearn/datasets/data";

    fn file(dir: &Path, name: &str) -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::data(
                &p,
                "missing; install scikit-learn's data (`apt-get install python3-sklearn`) or \
                 point to a folder holding it",
            ))
        }
    }

    /// A classification file in scikit-learn's format: a first line `n,features,class
    /// names...`, then rows of features and a class index.
    fn classification(dir: &Path, name: &str) -> Result<ArrayDataset> {
        let path = file(dir, name)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let meta: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
        let counts: Option<(usize, usize)> = match meta.as_slice() {
            [n, f, ..] => n.trim().parse().ok().zip(f.trim().parse().ok()),
            _ => None,
        };
        let Some((n, features)) = counts else {
            return Err(Error::data(
                &path,
                "line 1 is not scikit-learn's `samples,features,class names...` header",
            ));
        };
        let data = read_csv(
            &path,
            &CsvOptions {
                has_header: false,
                skip_lines: 1,
                targets: vec![Column::Index(-1)],
                task: Task::Classify,
                class_names: meta[2..].iter().map(|s| s.trim().to_string()).collect(),
                ..CsvOptions::new()
            },
        )?;
        if data.len() != n || data.sample_len() != features {
            return Err(Error::data(
                &path,
                format!(
                    "line 1 declares {n} samples of {features} features, the file holds {} of {}",
                    data.len(),
                    data.sample_len()
                ),
            ));
        }
        Ok(data)
    }

    /// Breast cancer Wisconsin: 569 samples, 30 features, classes malignant (0) and benign (1).
    pub fn breast_cancer(dir: &Path) -> Result<ArrayDataset> {
        classification(dir, "breast_cancer.csv")
    }

    /// Iris: 150 samples, 4 features, 3 classes.
    pub fn iris(dir: &Path) -> Result<ArrayDataset> {
        classification(dir, "iris.csv")
    }

    /// Diabetes (the raw, unscaled version): 442 samples, 10 features, a disease progression
    /// target; two whitespace-separated gzip files.
    pub fn diabetes(dir: &Path) -> Result<ArrayDataset> {
        let opts = CsvOptions {
            delimiter: Delimiter::Whitespace,
            has_header: false,
            ..CsvOptions::new()
        };
        let x = read_csv_matrix(&file(dir, "diabetes_data_raw.csv.gz")?, &opts)?;
        let y_path = file(dir, "diabetes_target.csv.gz")?;
        let y = read_csv_matrix(&y_path, &opts)?;
        if y.dim() != (x.nrows(), 1) {
            return Err(Error::data(
                &y_path,
                format!(
                    "{:?} targets for {} samples (one column expected)",
                    y.dim(),
                    x.nrows()
                ),
            ));
        }
        ArrayDataset::regression(&x, &y)
    }
}
