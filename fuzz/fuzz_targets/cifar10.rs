//! CIFAR-10: the binary batch records and the `.tar.gz` archive they come in. The first byte
//! picks which; the rest is the input. Errors are fine, panics are not, and a parse that
//! succeeds yields one label below 10 per 3,072 pixels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wgtrain::data::cifar10;

fuzz_target!(|input: &[u8]| {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        match cifar10::parse_records(bytes, Path::new("fuzz.bin"), &mut images, &mut labels) {
            Ok(()) => {
                assert_eq!(images.len(), labels.len() * (cifar10::RECORD - 1));
                assert!(labels.iter().all(|&l| l < 10));
            }
            // Nothing is appended on error.
            Err(_) => assert!(images.is_empty() && labels.is_empty()),
        }
    } else {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let archive = dir.path().join("cifar-10-binary.tar.gz");
        std::fs::write(&archive, bytes).expect("writing the input");
        let out = dir.path().join("out");
        let _ = cifar10::extract(&archive, &out);
        // Whatever happened, no temporary file is left behind.
        if let Ok(entries) = std::fs::read_dir(&out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(!name.ends_with(".part"), "left behind: {name}");
            }
        }
    }
});
