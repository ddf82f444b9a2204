//! Property tests for the parsers: arbitrary or mutated bytes are either parsed consistently
//! or rejected with an error, never a panic, and valid files round-trip.

use std::path::Path;

use proptest::prelude::*;
use wgtrain::data::{cifar10, parse_idx};

fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn idx_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let len = bytes.len() as u64;
        if let Ok(a) = parse_idx(&bytes[..], Some(len), Path::new("fuzz")) {
            prop_assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
        }
        // The same bytes as a stream of unknown length (the gzip path).
        let _ = parse_idx(&bytes[..], None, Path::new("fuzz"));
    }

    #[test]
    fn idx_round_trips_and_mutations_are_caught(
        dims in proptest::collection::vec(1u32..6, 1..4),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let n: u32 = dims.iter().product();
        let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let file = idx(&dims, &payload);
        let ok = parse_idx(&file[..], Some(file.len() as u64), Path::new("p")).unwrap();
        prop_assert_eq!(ok.data, payload);
        // Any truncation is an error.
        let short = &file[..cut.index(file.len())];
        prop_assert!(parse_idx(short, Some(short.len() as u64), Path::new("p")).is_err());
        prop_assert!(parse_idx(short, None, Path::new("p")).is_err());
        // A flipped header byte is either rejected or still self-consistent.
        let mut bad = file.clone();
        let at = flip.index(4 + 4 * dims.len());
        bad[at] ^= 0x5a;
        if let Ok(a) = parse_idx(&bad[..], Some(bad.len() as u64), Path::new("p")) {
            prop_assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
        }
    }

    #[test]
    fn cifar_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..(3 * cifar10::RECORD))) {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        match cifar10::parse_records(&bytes, Path::new("fuzz"), &mut images, &mut labels) {
            Ok(()) => {
                prop_assert_eq!(bytes.len() % cifar10::RECORD, 0);
                prop_assert_eq!(images.len(), labels.len() * (cifar10::RECORD - 1));
                prop_assert!(labels.iter().all(|&l| l < 10));
            }
            Err(_) => prop_assert!(images.is_empty() && labels.is_empty(), "nothing half-loaded"),
        }
    }
}
