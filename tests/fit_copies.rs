//! `fit` and `evaluate` stream a borrowed dataset: they never copy it. A counting allocator
//! (this file is its own test binary, with one test) records the largest single allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use wgtrain::data::Dataset;
use wgtrain::nn::{Dense, Device, FitConfig, Loss, Sequential};
use wgtrain::optim::{Optimizer, SgdConfig};

struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

#[test]
fn fit_and_evaluate_do_not_copy_the_dataset() {
    // 4,000 images of 28x28: 3.1 MB of pixels. The largest batch (validation, 256 rows) takes
    // 0.8 MB as f32; a copy of the dataset would allocate the 3.1 MB at once.
    let (n, side) = (4000, 28);
    let data = Dataset {
        images: (0..n * side * side).map(|i| (i % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        channels: 1,
        height: side,
        width: side,
        num_classes: 10,
        class_names: (0..10).map(|d| d.to_string()).collect(),
    };
    let mut model = Sequential::new(&[side, side])
        .flatten()
        .dense(Dense::new(10))
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Sgd(SgdConfig::new(0.01)),
            Device::Cpu,
            0,
        )
        .unwrap();
    let cfg = FitConfig {
        validation_split: 0.25,
        verbose: 0,
        ..FitConfig::new(1, 32)
    };
    LARGEST.store(0, Ordering::Relaxed);
    model.fit(&data, &cfg).unwrap();
    model.evaluate(&data, 32).unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < data.images.len(),
        "an allocation of {largest} bytes during fit/evaluate: the {} bytes of pixels were copied",
        data.images.len()
    );
}
