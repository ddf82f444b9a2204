//! CSV text through `read_csv` and `read_csv_matrix`, with the options taken from the first
//! byte (delimiter, header, task, missing-value policy): a table is read into a dataset whose
//! sizes agree and whose values are all finite, or rejected with an error; never a panic.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use wgtrain::data::tabular::{read_csv, read_csv_matrix, Column, CsvOptions, Delimiter, Task};
use wgtrain::data::Targets;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, text)) = input.split_first() else {
        return;
    };
    let opts = CsvOptions {
        delimiter: match flags & 3 {
            0 => Delimiter::Byte(b','),
            1 => Delimiter::Byte(b';'),
            2 => Delimiter::Byte(b'\t'),
            _ => Delimiter::Whitespace,
        },
        has_header: flags & 4 != 0,
        skip_lines: ((flags >> 3) & 1) as usize,
        comment: (flags & 16 != 0).then_some(b'#'),
        targets: vec![Column::Index(-1)],
        task: if flags & 32 != 0 { Task::Regress } else { Task::Classify },
        drop_missing: flags & 64 != 0,
        class_names: Vec::new(),
    };
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(text).expect("writing the input");
    if let Ok(d) = read_csv(file.path(), &opts) {
        assert_eq!(d.features.len(), d.len() * d.sample_len());
        assert!(d.features.iter().all(|v| v.is_finite()));
        match &d.targets {
            Targets::Classes { labels, classes } => {
                assert!(labels.iter().all(|&l| (l as usize) < *classes))
            }
            Targets::Values { values, .. } => assert!(values.iter().all(|v| v.is_finite())),
        }
    }
    if let Ok(m) = read_csv_matrix(file.path(), &opts) {
        assert!(m.iter().all(|v| v.is_finite()));
    }
});
