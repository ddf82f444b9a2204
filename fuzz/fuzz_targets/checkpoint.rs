//! Checkpoints: `Model::load` on arbitrary bytes either restores a state that passed every
//! check or fails leaving the model exactly as it was; `load_model` on them either opens a
//! model or fails; never a panic.
#![no_main]

use std::cell::RefCell;
use std::io::Write;

use libfuzzer_sys::fuzz_target;
use wgtrain::nn::{Dense, Device, Loss, Model, Sequential};
use wgtrain::ops::Activation;
use wgtrain::optim::{AdamConfig, Optimizer};

/// The model the checkpoints are loaded into, built once (the seed corpus holds its files).
fn model() -> Model {
    Sequential::new(&[3])
        .dense(Dense::new(4).activation(Activation::Relu))
        .dense(Dense::new(2))
        .compile(
            Loss::SparseCategoricalCrossentropy,
            Optimizer::Adam(AdamConfig::adam(0.01)),
            Device::Cpu,
            7,
        )
        .expect("the fuzz model compiles")
}

thread_local! {
    /// The model and its saved pristine state (libFuzzer runs inputs on one thread).
    static MODEL: RefCell<Option<(Model, Vec<u8>)>> = const { RefCell::new(None) };
}

fuzz_target!(|bytes: &[u8]| MODEL.with_borrow_mut(|slot| {
    let (model, pristine) = slot.get_or_insert_with(|| {
        let m = model();
        let saved = tempfile::NamedTempFile::new().expect("a temporary file");
        m.save(saved.path()).expect("saving the fuzz model");
        let pristine = std::fs::read(saved.path()).expect("reading it back");
        (m, pristine)
    });
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(bytes).expect("writing the input");
    let before = tempfile::NamedTempFile::new().expect("a temporary file");
    // A model rebuilt from the file's own description, when it has one that holds up.
    let _ = wgtrain::nn::load_model_on(file.path(), Device::Cpu);
    match model.load(file.path()) {
        Ok(()) => {
            // A file that loads is the model's own state: it saves back to a file that loads.
            model.save(before.path()).expect("saving a loaded state");
            model.load(before.path()).expect("reloading a saved state");
            // Back to the pristine state for the next input.
            std::fs::write(before.path(), &*pristine).expect("writing the pristine state");
            model.load(before.path()).expect("restoring the pristine state");
        }
        Err(_) => {
            // A failed load changes nothing.
            model.save(before.path()).expect("saving after a failed load");
            assert_eq!(&std::fs::read(before.path()).expect("reading"), pristine);
        }
    }
}));
