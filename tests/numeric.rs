//! Numeric data end to end: arrays, CSV and .npy into `fit`, regression against closed-form
//! least squares, scikit-learn's real tables on the GPU and the CPU executor, the fitted
//! scaling's statistics and its round trip through checkpoints.

mod common;

use std::path::Path;
use std::sync::Arc;

use ndarray::{Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use wgtrain::data::tabular::{
    read_csv, read_csv_matrix, read_npy, read_npy_dataset, sklearn, Column, CsvOptions, Delimiter,
    Task,
};
use wgtrain::data::{to_categorical, ArrayDataset, Scaling, Targets};
use wgtrain::gpu::GpuContext;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Metric, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer, SgdConfig};

fn devices() -> [Device; 2] {
    static CTX: std::sync::OnceLock<Arc<GpuContext>> = std::sync::OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        Arc::new(
            GpuContext::new().expect("GPU tests need an adapter (install mesa-vulkan-drivers)"),
        )
    });
    [Device::Gpu(ctx.clone()), Device::Cpu]
}

fn sklearn_dir() -> &'static Path {
    Path::new(sklearn::SKLEARN_DATA_DIR)
}

#[allow(clippy::needless_range_loop)] // index arithmetic reads as the textbook algorithm
/// Solves the least-squares problem for [X 1] in f64 by the normal equations (Gaussian
/// elimination with partial pivoting): (weights, bias).
fn least_squares(x: &Array2<f64>, y: &[f64]) -> (Vec<f64>, f64) {
    let (n, f) = x.dim();
    let k = f + 1;
    let col = |i: usize, j: usize| if j < f { x[[i, j]] } else { 1.0 };
    let mut a = vec![vec![0.0; k + 1]; k];
    for i in 0..n {
        for r in 0..k {
            for c in 0..k {
                a[r][c] += col(i, r) * col(i, c);
            }
            a[r][k] += col(i, r) * y[i];
        }
    }
    for p in 0..k {
        let best = (p..k)
            .max_by(|&i, &j| a[i][p].abs().total_cmp(&a[j][p].abs()))
            .unwrap();
        a.swap(p, best);
        for r in 0..k {
            if r != p {
                let m = a[r][p] / a[p][p];
                for c in p..=k {
                    a[r][c] -= m * a[p][c];
                }
            }
        }
    }
    let sol: Vec<f64> = (0..k).map(|r| a[r][k] / a[r][r]).collect();
    (sol[..f].to_vec(), sol[f])
}

fn r2(pred: &[f64], y: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let ss_res: f64 = pred.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}

#[test]
fn a_linear_model_reaches_the_least_squares_solution() {
    let (n, f) = (256, 5);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let x = Array2::from_shape_fn((n, f), |_| rng.random_range(-1.0f32..1.0));
    let w = [0.5f32, -1.5, 2.0, 0.25, -0.75];
    let y = Array1::from_shape_fn(n, |i| {
        (0..f).map(|j| w[j] * x[[i, j]]).sum::<f32>() + 0.3 + rng.random_range(-0.2f32..0.2)
    });
    let (w_ls, b_ls) = least_squares(
        &x.mapv(|v| v as f64),
        &y.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    let data = ArrayDataset::regression(&x, &y).unwrap();
    for device in devices() {
        let name = device.name();
        let mut model = Sequential::new(&[f])
            .dense(Dense::new(1))
            .compile(
                Loss::MeanSquaredError,
                Optimizer::Sgd(SgdConfig::new(0.3)),
                device,
                1,
            )
            .unwrap();
        // Full-batch gradient descent: one step per epoch.
        let cfg = FitConfig {
            shuffle: false,
            ..FitConfig::new(600, n)
        };
        model.fit(&data, &cfg).unwrap();
        // The weights, probed through the model: f(0) = b, f(e_j) - f(0) = w_j.
        let mut probe = Array2::<f32>::zeros((f + 1, f));
        for j in 0..f {
            probe[[j + 1, j]] = 1.0;
        }
        let out = model.predict_array(&probe).unwrap().outputs;
        let b = out[[0, 0]] as f64;
        let got: Vec<f64> = (0..f).map(|j| out[[j + 1, 0]] as f64 - b).collect();
        let norm = w_ls.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = got
            .iter()
            .zip(&w_ls)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err / norm < 1e-3 && (b - b_ls).abs() < 1e-3 * (1.0 + b_ls.abs()),
            "{name}: weights {got:?} bias {b}, least squares {w_ls:?} {b_ls}"
        );
    }
}

fn tabular_classifier(features: usize, outputs: usize) -> Sequential {
    Sequential::new(&[features])
        .dense(Dense::new(16).activation(Activation::Relu))
        .dense(Dense::new(outputs))
}

#[test]
fn breast_cancer_reaches_95_percent_on_gpu_and_cpu() {
    let data = sklearn::breast_cancer(sklearn_dir()).expect("python3-sklearn must be installed");
    assert_eq!((data.len(), data.sample_len()), (569, 30));
    assert_eq!(data.class_names, ["malignant", "benign"]);
    let (train, test) = data.split_seeded(0.2, 42).unwrap();
    let mut losses = Vec::new();
    for device in devices() {
        let name = device.name();
        let mut model = tabular_classifier(30, 1)
            .compile(
                Loss::BinaryCrossentropy { from_logits: true },
                Optimizer::Adam(AdamConfig::adam(1e-3)),
                device,
                0,
            )
            .unwrap();
        let cfg = FitConfig {
            scale_features: Some(Scaling::Standard),
            validation_split: 0.2,
            ..FitConfig::new(60, 32)
        };
        let h = model.fit(&train, &cfg).unwrap();
        let last = h.epochs.last().unwrap();
        assert!(last.val_accuracy().is_some(), "{last}");
        let m = model.evaluate(&test, 64).unwrap();
        assert!(m.accuracy >= 0.95, "{name}: test accuracy {}", m.accuracy);
        losses.push(last.loss);
    }
    // Same data, seed and order: the two executors train the same model.
    assert!(
        (losses[0] - losses[1]).abs() <= 1e-3 * losses[1].abs().max(1e-3),
        "GPU {} vs CPU {}",
        losses[0],
        losses[1]
    );
}

#[test]
fn iris_reaches_90_percent_on_gpu_and_cpu() {
    let data = sklearn::iris(sklearn_dir()).expect("python3-sklearn must be installed");
    assert_eq!(data.target_width(), 3);
    let (train, test) = data.split_seeded(0.2, 7).unwrap();
    for device in devices() {
        let name = device.name();
        let mut model = tabular_classifier(4, 3)
            .compile(
                Loss::SparseCategoricalCrossentropy,
                Optimizer::Adam(AdamConfig::adam(1e-2)),
                device,
                0,
            )
            .unwrap();
        let cfg = FitConfig {
            scale_features: Some(Scaling::Standard),
            ..FitConfig::new(100, 16)
        };
        model.fit(&train, &cfg).unwrap();
        let m = model.evaluate(&test, 64).unwrap();
        assert!(m.accuracy >= 0.9, "{name}: test accuracy {}", m.accuracy);
        // One prediction path, scaled as fit scaled: the classes `predict` gives are the ones
        // `evaluate` counted, on a dataset and on its bare features alike.
        let p = model.predict(&test).unwrap();
        let Targets::Classes { labels, .. } = &test.targets else {
            unreachable!("iris has classes")
        };
        let right = p.classes.iter().zip(labels).filter(|(a, b)| a == b).count();
        assert_eq!(right as f32 / test.len() as f32, m.accuracy, "{name}");
        let x = Array2::from_shape_vec((test.len(), 4), test.features.clone()).unwrap();
        assert_eq!(model.predict_array(&x).unwrap(), p, "{name}");
        assert_eq!(
            p.class_name(0),
            Some(&*data.class_names[p.classes[0] as usize])
        );
    }
}

#[test]
fn diabetes_regression_matches_least_squares_r2_on_the_same_split() {
    let data = sklearn::diabetes(sklearn_dir()).expect("python3-sklearn must be installed");
    assert_eq!((data.len(), data.sample_len()), (442, 10));
    let (train, test) = data.split_seeded(0.2, 1).unwrap();
    let to_f64 = |d: &ArrayDataset| -> (Array2<f64>, Vec<f64>) {
        let x = Array2::from_shape_vec((d.len(), 10), d.features.clone())
            .unwrap()
            .mapv(|v| v as f64);
        let Targets::Values { values, .. } = &d.targets else {
            panic!("regression targets")
        };
        (x, values.iter().map(|&v| v as f64).collect())
    };
    let (xtr, ytr) = to_f64(&train);
    let (xte, yte) = to_f64(&test);
    let (w, b) = least_squares(&xtr, &ytr);
    let ols_pred: Vec<f64> = xte
        .axis_iter(Axis(0))
        .map(|row| row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b)
        .collect();
    let ols_r2 = r2(&ols_pred, &yte);
    for device in devices() {
        let name = device.name();
        let mut model = Sequential::new(&[10])
            .dense(Dense::new(1))
            .compile(
                Loss::MeanSquaredError,
                Optimizer::Adam(AdamConfig::adam(1e-2)),
                device,
                0,
            )
            .unwrap()
            .with_metrics(&[Metric::Mae, Metric::Rmse, Metric::R2])
            .unwrap();
        let cfg = FitConfig {
            scale_features: Some(Scaling::Standard),
            scale_targets: Some(Scaling::Standard),
            ..FitConfig::new(150, 32)
        };
        let h = model.fit(&train, &cfg).unwrap();
        assert!(h.epochs.last().unwrap().get("r2").is_some());
        let m = model.evaluate(&test, 64).unwrap();
        let e = m.errors.expect("regression metrics");
        // The device's R^2 and MAE agree with those of the predictions, in target units.
        let xte32 = xte.mapv(|v| v as f32);
        let pred: Vec<f64> = model
            .predict_array(&xte32)
            .unwrap()
            .outputs
            .iter()
            .map(|&v| v as f64)
            .collect();
        let ours = r2(&pred, &yte);
        let mae = pred
            .iter()
            .zip(&yte)
            .map(|(p, t)| (p - t).abs())
            .sum::<f64>()
            / yte.len() as f64;
        assert!(
            (e.r2.unwrap() as f64 - ours).abs() < 1e-3,
            "{name}: {e:?} vs r2 {ours}"
        );
        assert!(
            (e.mae as f64 - mae).abs() < 1e-3 * mae,
            "{name}: {e:?} vs mae {mae}"
        );
        assert!(
            ours >= ols_r2 - 0.03,
            "{name}: test R^2 {ours:.4}, least squares {ols_r2:.4}"
        );
    }
}

#[test]
fn standardization_is_fitted_on_the_training_split_only() {
    // The last quarter (Keras' validation split) is offset by 1000: had its rows leaked into
    // the statistics, the mean would move by ~250.
    let n = 400;
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        let base = (i % 10) as f32 + j as f32;
        if i >= 300 {
            base + 1000.0
        } else {
            base
        }
    });
    let y = Array1::from_shape_fn(n, |i| (i % 2) as f32);
    let data = ArrayDataset::regression(&x, &y).unwrap();
    let mut model = Sequential::new(&[2])
        .dense(Dense::new(1))
        .compile(
            Loss::MeanSquaredError,
            Optimizer::Adam(AdamConfig::adam(1e-3)),
            Device::Cpu,
            0,
        )
        .unwrap();
    let cfg = FitConfig {
        scale_features: Some(Scaling::Standard),
        validation_split: 0.25,
        ..FitConfig::new(1, 50)
    };
    model.fit(&data, &cfg).unwrap();
    let a = model.preprocess().features.clone().unwrap();
    let train: Vec<f64> = (0..300).map(|i| (i % 10) as f64).collect();
    let mean = train.iter().sum::<f64>() / 300.0;
    let std = (train.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 300.0).sqrt();
    // scale = 1/std, shift = -mean/std
    assert!((a.scale[0] as f64 - 1.0 / std).abs() < 1e-5, "{a:?}");
    assert!((a.shift[0] as f64 + mean / std).abs() < 1e-5, "{a:?}");
    assert!(
        (a.shift[1] as f64 + (mean + 1.0) / std).abs() < 1e-5,
        "{a:?}"
    );
}

#[test]
fn save_and_load_keep_the_scaling_and_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("fruit.csv");
    std::fs::write(
        &csv,
        "weight,sugar,kind\n150,10,apple\n120,12,pear\n160,9,apple\n110,14,pear\n170,11,apple\n",
    )
    .unwrap();
    let data = read_csv(
        &csv,
        &CsvOptions {
            targets: vec![Column::Name("kind".into())],
            ..CsvOptions::new()
        },
    )
    .unwrap();
    assert_eq!(data.class_names, ["apple", "pear"]);
    let build = || {
        tabular_classifier(2, 2)
            .compile(
                Loss::SparseCategoricalCrossentropy,
                Optimizer::Adam(AdamConfig::adam(1e-2)),
                Device::Cpu,
                0,
            )
            .unwrap()
    };
    let mut model = build();
    let cfg = FitConfig {
        scale_features: Some(Scaling::MinMax),
        ..FitConfig::new(5, 2)
    };
    model.fit(&data, &cfg).unwrap();
    let x = Array2::from_shape_vec((5, 2), data.features.clone()).unwrap();
    let before = model.predict_array(&x).unwrap();
    assert_eq!(before.class_names, ["apple", "pear"]);
    let path = dir.path().join("fruit.safetensors");
    model.save(&path).unwrap();
    let mut loaded = build();
    loaded.load(&path).unwrap();
    assert_eq!(loaded.class_names(), ["apple", "pear"]);
    assert_eq!(loaded.preprocess(), model.preprocess());
    assert_eq!(loaded.predict_array(&x).unwrap(), before);
}

/// CSV text in `dir` named `name`.
fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn csv_errors_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CsvOptions::new();
    let cases: [(&str, &str, &str); 6] = [
        (
            "ragged.csv",
            "a,b,y\n1,2,0\n3,0\n",
            "line 3 has 2 cells, the table has 3 columns",
        ),
        (
            "text.csv",
            "a,b,y\n1,2,0\n3,x4,1\n",
            "line 3, column 2 (`b`): `x4` is not a number",
        ),
        (
            "empty_cell.csv",
            "a,b,y\n1,,0\n",
            "line 2, column 2 (`b`) is empty or NaN",
        ),
        (
            "nan.csv",
            "a,b,y\n1,2,0\nNaN,2,1\n",
            "line 3, column 1 (`a`) is empty or NaN",
        ),
        ("empty.csv", "", "no header row"),
        ("header_only.csv", "a,b,y\n", "holds no data rows"),
    ];
    for (name, text, want) in cases {
        let p = write(dir.path(), name, text);
        let err = read_csv(&p, &opts).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
    let err = read_csv(&dir.path().join("absent.csv"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.csv"), "{err}");
    let err = read_csv(dir.path(), &opts).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    let p = write(dir.path(), "cols.csv", "a,b,y\n1,2,0\n");
    let err = read_csv(
        &p,
        &CsvOptions {
            targets: vec![Column::Name("price".into())],
            ..CsvOptions::new()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no column `price`"), "{err}");
    // Asked to, rows with missing cells are dropped instead.
    let p = write(
        dir.path(),
        "holes.csv",
        "a,b,y\n1,,0\n3,4,1\nnan,1,0\n5,6,0\n",
    );
    let d = read_csv(
        &p,
        &CsvOptions {
            drop_missing: true,
            ..CsvOptions::new()
        },
    )
    .unwrap();
    assert_eq!(d.features, vec![3.0, 4.0, 5.0, 6.0]);
}

/// Label columns as a Keras user writes them: numbers are classes by value (1 < 2 < 10, never
/// sorted as text), names are sorted names, a fraction or a single class is an error saying
/// what to do, and given class names must cover every label.
#[test]
fn csv_labels_that_look_like_numbers_are_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str, labels: &[&str], opts: &CsvOptions| {
        let text: String = labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{i},{l}\n"))
            .collect();
        let p = write(dir.path(), name, &format!("a,y\n{text}"));
        read_csv(&p, opts)
    };
    let classes = |d: &ArrayDataset| match &d.targets {
        Targets::Classes { labels, classes } => (labels.clone(), *classes),
        Targets::Values { .. } => panic!("class labels expected"),
    };
    let opts = CsvOptions::new();
    for labels in [["1", "2", "10", "2"], ["1.0", "2.0", "10.0", "2.0"]] {
        let d = read("ints.csv", &labels, &opts).unwrap();
        assert_eq!(classes(&d), (vec![1, 2, 10, 2], 11), "{labels:?}");
        assert!(d.class_names.is_empty());
    }
    let d = read("signed.csv", &["1", "-1", "-10", "1"], &opts).unwrap();
    assert_eq!(classes(&d), (vec![2, 1, 0, 2], 3));
    assert_eq!(d.class_names, ["-10", "-1", "1"]);
    let d = read("names.csv", &["pear", "apple", "fig"], &opts).unwrap();
    assert_eq!(classes(&d), (vec![2, 0, 1], 3));
    assert_eq!(d.class_names, ["apple", "fig", "pear"]);
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "fraction.csv",
            &["1", "2.5", "3"],
            "line 3, column `y`: the label `2.5` is not a whole number",
        ),
        (
            "one.csv",
            &["7", "7.0", "7"],
            "holds one class (`7`) in every row",
        ),
        ("one_name.csv", &["cat", "cat"], "holds one class (`cat`)"),
    ];
    for (name, labels, want) in cases {
        let err = read(name, labels, &opts).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains(name), "{name}: {err}");
    }
    assert!(read(
        "fraction.csv",
        &["1", "2.5"],
        &CsvOptions {
            task: Task::Regress,
            ..CsvOptions::new()
        }
    )
    .is_ok());
    let named = CsvOptions {
        class_names: vec!["no".into(), "yes".into()],
        ..CsvOptions::new()
    };
    // Declared names allow a file that holds one of them, and must cover every label.
    let d = read("all_yes.csv", &["1", "1"], &named).unwrap();
    assert_eq!((classes(&d), d.class_names.len()), ((vec![1, 1], 2), 2));
    let err = read("three.csv", &["0", "1", "2"], &named)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 4, column `y`: label 2 has no name among the 2 class names"),
        "{err}"
    );
}

#[test]
fn csv_reads_whitespace_comments_metadata_and_target_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "w.txt",
        "3,2,meta\n# a comment\n1.5   2\t 10 20\n  3 4 30 40\n5 6 50 60\n",
    );
    let d = read_csv(
        &p,
        &CsvOptions {
            delimiter: Delimiter::Whitespace,
            has_header: false,
            skip_lines: 1,
            comment: Some(b'#'),
            targets: vec![Column::Index(2), Column::Index(-1)],
            task: Task::Regress,
            ..CsvOptions::new()
        },
    )
    .unwrap();
    assert_eq!(d.features, vec![1.5, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(
        d.targets,
        Targets::Values {
            values: vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            width: 2
        }
    );
    let p = write(dir.path(), "semi.csv", "x;y\n1;2\n3;4\n");
    let m = read_csv_matrix(
        &p,
        &CsvOptions {
            delimiter: wgtrain::data::tabular::Delimiter::Byte(b';'),
            ..CsvOptions::new()
        },
    )
    .unwrap();
    assert_eq!(m, ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]));
}

/// A version-1 .npy file written by hand: magic, version, header length, the header dict
/// padded with spaces to a multiple of 64 bytes and ended by a newline, then the data.
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_files_of_every_numeric_dtype_load_and_others_are_named() {
    use ndarray_npy::WriteNpyExt;
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, w: &dyn Fn(&mut std::fs::File)| {
        let p = dir.path().join(name);
        w(&mut std::fs::File::create(&p).unwrap());
        p
    };
    let x = save("x.npy", &|f| {
        ndarray::arr2(&[[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0]])
            .write_npy(f)
            .unwrap()
    });
    let y = save("y.npy", &|f| {
        ndarray::arr1(&[0i64, 2, 1]).write_npy(f).unwrap()
    });
    let d = read_npy_dataset(&x, &y, Task::Classify).unwrap();
    assert_eq!(d.features, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(
        d.targets,
        Targets::Classes {
            labels: vec![0, 2, 1],
            classes: 3
        }
    );
    let u = save("u.npy", &|f| ndarray::arr1(&[7u8, 9]).write_npy(f).unwrap());
    assert_eq!(
        read_npy(&u).unwrap().into_raw_vec_and_offset().0,
        vec![7.0, 9.0]
    );
    // A dtype that is not a number, a truncated file and too few labels.
    let c = dir.path().join("c.npy");
    std::fs::write(&c, npy_bytes("<c8", "(2,)", &[0; 16])).unwrap();
    let err = read_npy(&c).unwrap_err().to_string();
    assert!(err.contains("c.npy") && err.contains("dtype"), "{err}");
    let t = dir.path().join("t.npy");
    let full = std::fs::read(&x).unwrap();
    std::fs::write(&t, &full[..full.len() - 4]).unwrap();
    let err = read_npy(&t).unwrap_err().to_string();
    assert!(err.contains("t.npy") && err.contains("truncated"), "{err}");
    let short = save("s.npy", &|f| {
        ndarray::arr1(&[0i64, 1]).write_npy(f).unwrap()
    });
    let err = read_npy_dataset(&x, &short, Task::Classify)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 target rows for 3 samples"), "{err}");
}

#[test]
fn targets_that_do_not_fit_the_loss_are_rejected_before_training() {
    let x = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
    let compile = |loss: Loss, outputs: usize| {
        Sequential::new(&[2])
            .dense(Dense::new(outputs))
            .compile(
                loss,
                Optimizer::Adam(AdamConfig::adam(1e-3)),
                Device::Cpu,
                0,
            )
            .unwrap()
    };
    let cfg = FitConfig::new(1, 2);
    let bce = ArrayDataset::regression(&x, &ndarray::arr1(&[0.0f32, 5.0])).unwrap();
    let err = compile(Loss::BinaryCrossentropy { from_logits: true }, 1)
        .fit(&bce, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets in [0, 1]") && err.contains("sample 1"),
        "{err}"
    );
    let soft = ArrayDataset::regression(&x, &ndarray::arr2(&[[0.5f32, 0.5], [0.0, 1.0]])).unwrap();
    let err = compile(
        Loss::CategoricalCrossentropy {
            label_smoothing: 0.0,
        },
        2,
    )
    .fit(&soft, &cfg)
    .unwrap_err()
    .to_string();
    assert!(err.contains("one-hot") && err.contains("sample 0"), "{err}");
    let err = compile(Loss::SparseCategoricalCrossentropy, 2)
        .fit(&soft, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CategoricalCrossentropy for one-hot"), "{err}");
    let wide = ArrayDataset::regression(&x, &ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]])).unwrap();
    let err = compile(Loss::MeanSquaredError, 1)
        .fit(&wide, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 outputs, the targets have 2 values"),
        "{err}"
    );
}

/// A loss that cannot train on the model's outputs is refused at compile, naming the fix
/// (Keras accepts both and trains on garbage).
#[test]
fn a_loss_that_cannot_train_on_the_outputs_is_refused() {
    let compile = |net: Sequential, loss| {
        net.compile(loss, Optimizer::Sgd(SgdConfig::new(0.1)), Device::Cpu, 0)
    };
    let bce = Loss::BinaryCrossentropy { from_logits: false };
    let err = compile(tabular_classifier(4, 1), bce)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("expects probabilities") && err.contains("Activation::Sigmoid"),
        "{err}"
    );
    let sigmoid = Sequential::new(&[4]).dense(Dense::new(1).activation(Activation::Sigmoid));
    assert!(compile(sigmoid, bce).is_ok());
    assert!(compile(
        tabular_classifier(4, 1),
        Loss::BinaryCrossentropy { from_logits: true }
    )
    .is_ok());
    for loss in [
        Loss::SparseCategoricalCrossentropy,
        Loss::CategoricalCrossentropy {
            label_smoothing: 0.0,
        },
    ] {
        let err = compile(tabular_classifier(4, 1), loss)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("over one output"), "{err}");
    }
}

#[test]
fn one_hot_rows_train_like_their_class_indices() {
    // Categorical cross-entropy on one-hot rows computes exactly what the sparse form does on
    // the indices.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let x = Array2::from_shape_fn((64, 3), |_| rng.random_range(-1.0f32..1.0));
    let labels: Vec<u32> = (0..64).map(|i| (i % 4) as u32).collect();
    let onehot = Array2::from_shape_fn((64, 4), |(i, j)| (labels[i] as usize == j) as u8 as f32);
    // Keras' to_categorical, and one-hot rows read back as the classes they encode.
    assert_eq!(to_categorical(&labels, 4).unwrap(), onehot);
    let err = to_categorical(&[0, 4], 4).unwrap_err().to_string();
    assert!(err.contains("label 4 of sample 1"), "{err}");
    let sparse = ArrayDataset::classification(&x, &labels, 4).unwrap();
    assert_eq!(
        ArrayDataset::classification_one_hot(&x, &onehot).unwrap(),
        sparse
    );
    let mut soft = onehot.clone();
    soft[[5, 1]] = 0.5;
    let err = ArrayDataset::classification_one_hot(&x, &soft)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 5 of the one-hot targets is not one-hot"),
        "{err}"
    );
    let dense = ArrayDataset::regression(&x, &onehot).unwrap();
    let run = |data: &ArrayDataset| {
        let mut m = tabular_classifier(3, 4)
            .compile(
                Loss::CategoricalCrossentropy {
                    label_smoothing: 0.0,
                },
                Optimizer::Adam(AdamConfig::adam(1e-2)),
                Device::Cpu,
                0,
            )
            .unwrap();
        m.fit(data, &FitConfig::new(3, 16)).unwrap()
    };
    let (a, b) = (run(&sparse), run(&dense));
    assert_eq!(a.epochs.last().unwrap().loss, b.epochs.last().unwrap().loss);
    assert_eq!(
        a.epochs.last().unwrap().accuracy(),
        b.epochs.last().unwrap().accuracy()
    );
}

/// The examples run as the README shows them, on the full data: the tabular trainer on each
/// of scikit-learn's tables and the three Keras tutorials.
#[test]
fn tabular_and_tutorial_examples_run_on_the_full_data() {
    let out = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| -> String {
        let o = std::process::Command::new(common::example(name))
            .args(args)
            .output()
            .expect("the example runs");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{name} {args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout
    };
    let dir = out.path().to_str().unwrap();
    for (dataset, want) in [
        ("breast-cancer", "accuracy"),
        ("iris", "accuracy"),
        ("diabetes", "r2"),
    ] {
        let stdout = run(
            "tabular",
            &["--dataset", dataset, "--epochs", "20", "--out", dir],
        );
        let test = stdout
            .lines()
            .find(|l| l.starts_with("test:"))
            .unwrap_or("");
        assert!(test.contains(want), "{dataset}: {stdout}");
        let csv = std::fs::read_to_string(out.path().join("history.csv")).unwrap();
        assert_eq!(csv.lines().count(), 21, "{csv}");
        assert!(
            csv.lines().next().unwrap().contains(&format!("val_{want}")),
            "{csv}"
        );
    }
    // A CSV of the user's own, by target name.
    let csv = out.path().join("own.csv");
    let mut text = String::from("a,b,price\n");
    for i in 0..50 {
        text.push_str(&format!("{},{},{}\n", i, i % 7, 2 * i + 3 * (i % 7)));
    }
    std::fs::write(&csv, text).unwrap();
    let stdout = run(
        "tabular",
        &[
            "--csv",
            csv.to_str().unwrap(),
            "--target",
            "price",
            "--task",
            "regress",
            "--epochs",
            "5",
            "--out",
            dir,
        ],
    );
    assert!(stdout.contains("test: loss"), "{stdout}");
    let stdout = run("keras_binary", &[]);
    assert!(stdout.contains("test: loss"), "{stdout}");
    let stdout = run("keras_regression", &[]);
    assert!(stdout.contains("epoch 10/10: loss"), "{stdout}");
    let stdout = run("keras_multiclass", &[]);
    assert!(stdout.contains("test: loss"), "{stdout}");
}

#[test]
fn resuming_on_arrays_is_bit_exact() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
    let x = Array2::from_shape_fn((96, 4), |_| rng.random_range(-3.0f32..3.0));
    let y = Array2::from_shape_fn((96, 1), |(i, _)| x[[i, 0]] * 2.0 - x[[i, 3]] + 10.0);
    let data = ArrayDataset::regression(&x, &y).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for device in devices() {
        let name = device.name();
        let build = || {
            Sequential::new(&[4])
                .dense(Dense::new(8).activation(Activation::Tanh))
                .dense(Dense::new(1))
                .compile(
                    Loss::Huber,
                    Optimizer::Adam(AdamConfig::adam(1e-2)),
                    device.clone(),
                    3,
                )
                .unwrap()
        };
        let cfg = |epochs: usize, initial: usize| FitConfig {
            scale_features: Some(Scaling::Standard),
            scale_targets: Some(Scaling::MinMax),
            validation_split: 0.25,
            initial_epoch: initial,
            seed: 11,
            ..FitConfig::new(epochs, 16)
        };
        let (straight, split, resumed) = (
            dir.path().join("straight"),
            dir.path().join("split"),
            dir.path().join("resumed"),
        );
        let mut a = build();
        let ha = a.fit(&data, &cfg(4, 0)).unwrap();
        a.save(&straight).unwrap();
        let mut b = build();
        b.fit(&data, &cfg(2, 0)).unwrap();
        b.save(&split).unwrap();
        let mut c = build();
        c.load(&split).unwrap();
        let hc = c.fit(&data, &cfg(4, c.epoch())).unwrap();
        c.save(&resumed).unwrap();
        assert_eq!(ha.epochs[3].loss, hc.epochs[1].loss, "{name}");
        assert_eq!(
            ha.epochs[3].get("val_mae"),
            hc.epochs[1].get("val_mae"),
            "{name}"
        );
        assert!(
            std::fs::read(&straight).unwrap() == std::fs::read(&resumed).unwrap(),
            "{name}: the resumed checkpoint differs from the uninterrupted one"
        );
    }
}

/// A layer-normalized MLP trains the same on both executors and learns breast cancer.
#[test]
fn a_layer_norm_mlp_trains_alike_on_gpu_and_cpu() {
    let data = sklearn::breast_cancer(sklearn_dir()).expect("python3-sklearn must be installed");
    let (train, test) = data.split_seeded(0.2, 3).unwrap();
    let mut losses = Vec::new();
    for device in devices() {
        let name = device.name();
        let net = Sequential::new(&[30])
            .dense(Dense::new(16))
            .layer_norm()
            .push(wgtrain::nn::Layer::Activation(Activation::Relu))
            .dense(Dense::new(1));
        assert!(
            net.summary().contains("layer_norm_0 (LayerNorm)"),
            "{}",
            net.summary()
        );
        let mut model = net
            .compile(
                Loss::BinaryCrossentropy { from_logits: true },
                Optimizer::Adam(AdamConfig::adam(1e-3)),
                device,
                0,
            )
            .unwrap();
        let cfg = FitConfig {
            scale_features: Some(Scaling::Standard),
            ..FitConfig::new(30, 32)
        };
        let h = model.fit(&train, &cfg).unwrap();
        let m = model.evaluate(&test, 64).unwrap();
        assert!(m.accuracy >= 0.93, "{name}: test accuracy {}", m.accuracy);
        losses.push(h.epochs.last().unwrap().loss);
    }
    assert!(
        (losses[0] - losses[1]).abs() <= 1e-3 * losses[1].abs().max(1e-3),
        "GPU {} vs CPU {}",
        losses[0],
        losses[1]
    );
}
