//! NumPy files: bytes through `read_npy` (as a `.npy`) and `read_npz` (as a `.npz` archive),
//! chosen by the first byte. An array is returned with as many values as its shape says, or
//! an error; never a panic or an allocation the file cannot back.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use wgtrain::data::tabular::{read_npy, read_npz};

fuzz_target!(|input: &[u8]| {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(bytes).expect("writing the input");
    let result = if which % 2 == 0 {
        read_npy(file.path())
    } else {
        read_npz(file.path(), "x")
    };
    if let Ok(a) = result {
        assert_eq!(a.len(), a.shape().iter().product::<usize>());
    }
});
