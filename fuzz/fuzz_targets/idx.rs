//! IDX files, raw or gzip-compressed, through the public reader: every input is parsed into an
//! array whose payload matches its dimensions, or rejected with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|bytes: &[u8]| {
    // Through a file, as users call it: `read_idx` picks raw or gzip from the magic bytes.
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(bytes).expect("writing the input");
    if let Ok(a) = wgtrain::data::read_idx(file.path()) {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
    // The stream path, where the length is unknown (as behind a decompressor).
    if let Ok(a) = wgtrain::data::parse_idx(bytes, None, file.path()) {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
});
