//! Checkpoints in safetensors: every parameter under its layer name (`dense_0.weight`),
//! batch normalization's running statistics under theirs (`batch_norm_0.running_mean`),
//! each optimizer state slot the optimizer keeps under the parameter's name and the slot's
//! (`dense_0.weight.m` and `.v` for Adam, `.momentum` for SGD with momentum, none for plain
//! SGD: [`crate::optim::Optimizer::state_slots`]), and the step and epoch counts, loadable
//! from Python's `safetensors`. Checkpoints of earlier versions, which stored `.m` and `.v`
//! for every optimizer, still load. Written to a temporary file, synced, then renamed; a SHA-256 of
//! the tensor bytes in the metadata catches tampering, and a load checks every name, shape
//! and dtype before changing anything. A model fitted on numeric arrays also stores its
//! fitted scaling (`preprocess.features.scale`, `.shift`, and `preprocess.targets.*`) and the
//! data's class names (metadata `wgtrain.classes`, a JSON array), so that `predict_array`
//! after a load scales inputs and names classes as before the save. The model description
//! (metadata `wgtrain.model`: layers, wiring, loss, optimizer, seed, image scaling) lets
//! [`load_model`] rebuild the model from the file alone. The header's keys are written in
//! sorted order, so equal states give byte-identical files.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::functional::NetworkSpec;
use super::model::{Metric, Model, Named};
use super::{Device, Functional, Layer, Loss};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::optim::Optimizer;

const FORMAT: &str = "wgtrain-checkpoint-1";
/// Metadata key of the class names.
const CLASSES_KEY: &str = "wgtrain.classes";
/// Metadata key of the model description (a JSON [`ModelSpec`]).
const MODEL_KEY: &str = "wgtrain.model";

/// What a checkpoint records of a model besides its tensors, so that [`load_model`] can
/// rebuild it: the network (every layer's configuration and the wiring), the loss, the
/// optimizer, the seed (dropout masks follow it), the chosen metrics and how `fit` scaled
/// images.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ModelSpec {
    architecture: String,
    network: NetworkSpec,
    loss: Loss,
    optimizer: Optimizer,
    seed: u64,
    metrics: Option<Vec<Metric>>,
    normalize: Normalize,
    fitted_on_pixels: bool,
}

/// The model description in a checkpoint's header (only the header is read).
fn read_spec(path: &Path) -> Result<ModelSpec> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::data(
            path,
            format!("not a safetensors file (unreadable header): {e}"),
        )
    })?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MODEL_KEY))
        .ok_or_else(|| {
            Error::data(
                path,
                format!(
                    "records no model description (`{MODEL_KEY}`; checkpoints saved before it \
                 load with Model::load into a model compiled the same way)"
                ),
            )
        })?;
    serde_json::from_str(json)
        .map_err(|e| Error::data(path, format!("the model description is not valid: {e}")))
}

/// Opens a checkpoint as a model in one call (Keras' `keras.models.load_model`): rebuilds
/// the network the checkpoint describes (any layers, functional wiring included), compiles
/// it with its loss, optimizer and seed on the default device ([`Device::auto`]), and loads
/// its parameters, optimizer state, step and epoch counts, scaling and class names, so it
/// predicts what the saved model predicted and resumes training bit for bit.
pub fn load_model(path: &Path) -> Result<Model> {
    let spec = read_spec(path)?;
    let convolutional = spec
        .network
        .layers()
        .any(|l| matches!(l, Layer::Conv2d(_) | Layer::Residual(_)));
    load_spec(path, spec, Device::auto(convolutional)?)
}

/// [`load_model`] onto a chosen device.
pub fn load_model_on(path: &Path, device: Device) -> Result<Model> {
    load_spec(path, read_spec(path)?, device)
}

fn load_spec(path: &Path, spec: ModelSpec, device: Device) -> Result<Model> {
    let network = Functional::from_spec(&spec.network).map_err(|e| match e {
        Error::InvalidArgument { detail, .. } | Error::Shape { detail, .. } => Error::data(
            path,
            format!("the model it describes does not build: {detail}"),
        ),
        other => other,
    })?;
    // A description is not trusted to size memory: the parameters it asks for must be in
    // the file, which is checked before anything is allocated for them.
    let built = network.build(false, 0)?;
    let graph = &built.graph;
    let wanted = graph.params().iter().try_fold(0usize, |sum, &p| {
        let n = graph
            .node(p)
            .shape
            .iter()
            .try_fold(1usize, |n, d| match d {
                crate::graph::Dim::Fixed(d) => n.checked_mul(*d),
                crate::graph::Dim::Batch => None,
            })?;
        sum.checked_add(n)
    });
    let held = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len()
        / 4;
    if wanted.is_none_or(|w| w as u64 > held) {
        return Err(Error::data(
            path,
            format!(
                "the model it describes has more parameters ({}) than the file holds values \
                 ({held}); the description is damaged",
                wanted.map_or("too many to count".into(), |w| w.to_string())
            ),
        ));
    }
    let mut model = Model::new(
        network,
        spec.architecture,
        spec.loss,
        spec.optimizer,
        device,
        spec.seed,
    )?;
    if let Some(metrics) = &spec.metrics {
        model = model.with_metrics(metrics)?;
    }
    model.load(path)?;
    Ok(model)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The safetensors file `bytes` with its JSON header's keys in sorted order: the metadata map
/// is a `HashMap`, whose order changes from run to run, and equal states must give equal
/// files. The header stays padded to 8 bytes, as the format asks.
fn canonical_header(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("no header length")?;
    let header = bytes.get(8..8 + n).ok_or("a header past the end")?;
    let parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let sorted: BTreeMap<String, serde_json::Value> = parsed
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::Object(m) => serde_json::to_value(
                    m.into_iter()
                        .collect::<BTreeMap<String, serde_json::Value>>(),
                )
                .expect("a map of JSON values is JSON"),
                other => other,
            };
            (k, v)
        })
        .collect();
    let mut text = serde_json::to_string(&sorted).map_err(|e| e.to_string())?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// A model's parameters and optimizer state held in memory (for restoring the best epoch).
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    tensors: HashMap<String, Vec<f32>>,
    step: u64,
    epoch: usize,
}

impl Model {
    /// Copies the parameters, optimizer state and step count to host memory.
    pub(super) fn snapshot(&self) -> Result<Snapshot> {
        let tensors = self
            .tensors()?
            .into_iter()
            .map(|(n, _, v)| (n, v))
            .collect();
        Ok(Snapshot {
            tensors,
            step: self.steps(),
            epoch: self.epoch,
        })
    }

    /// Writes a snapshot back (shapes were checked when it was taken or loaded).
    pub(super) fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        let get = |name: &str| -> Result<&[f32]> {
            snap.tensors
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| Error::invalid("restore", format!("snapshot lacks `{name}`")))
        };
        let params = self.built.params.clone();
        self.epoch = snap.epoch;
        let slots = self.optimizer.state_slots();
        for (name, p) in &params {
            self.exec.write_param(*p, get(name)?)?;
            let state = slots
                .iter()
                .map(|slot| get(&format!("{name}.{slot}")).map(<[f32]>::to_vec))
                .collect::<Result<Vec<_>>>()?;
            self.exec.write_state(*p, &state)?;
        }
        for (name, b) in &self.built.buffers.clone() {
            self.exec.write_buffer(*b, get(name)?)?;
        }
        self.exec.set_steps(snap.step)?;
        Ok(())
    }

    /// The model's tensors by checkpoint name, in name order: parameters, optimizer state and
    /// buffers (batch normalization's running statistics).
    fn tensors(&self) -> Result<Vec<Named>> {
        let mut out = Vec::new();
        for (name, p) in &self.built.params {
            let shape: Vec<usize> =
                self.built.graph.concrete_shapes(1)[self.built.graph.index(*p)].clone();
            let (values, state) = (self.exec.read_param(*p)?, self.exec.read_state(*p)?);
            out.push((name.clone(), shape.clone(), values));
            for (slot, state) in self.optimizer.state_slots().iter().zip(state) {
                out.push((format!("{name}.{slot}"), shape.clone(), state));
            }
        }
        for (name, b) in &self.built.buffers {
            let shape: Vec<usize> =
                self.built.graph.concrete_shapes(1)[self.built.graph.index(*b)].clone();
            out.push((name.clone(), shape, self.exec.read_buffer(*b)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every parameter, then every buffer, by name in layer order, with its shape (Keras'
    /// `get_weights`, named): `dense_0.weight`, ..., `batch_norm_0.running_var`. Optimizer
    /// state is left out.
    pub fn weights(&self) -> Result<Vec<Named>> {
        let shapes = self.built.graph.concrete_shapes(1);
        let shape = |id| shapes[self.built.graph.index(id)].clone();
        let mut out = Vec::new();
        for (name, p) in &self.built.params {
            out.push((name.clone(), shape(*p), self.exec.read_param(*p)?));
        }
        for (name, b) in &self.built.buffers {
            out.push((name.clone(), shape(*b), self.exec.read_buffer(*b)?));
        }
        Ok(out)
    }

    /// Sets parameters and buffers by name (Keras' `set_weights`, named): every name must
    /// be one of [`Model::weights`]' with its shape and finite values (a buffer named
    /// `running_var` non-negative). Names left out keep their values. Nothing changes
    /// unless every entry passes.
    pub fn set_weights(&mut self, weights: &[Named]) -> Result<()> {
        let shapes = self.built.graph.concrete_shapes(1);
        let mut writes = Vec::with_capacity(weights.len());
        for (name, shape, values) in weights {
            let found = self
                .built
                .params
                .iter()
                .map(|(n, id)| (n, *id, true))
                .chain(self.built.buffers.iter().map(|(n, id)| (n, *id, false)))
                .find(|(n, _, _)| *n == name);
            let Some((_, id, is_param)) = found else {
                return Err(Error::invalid(
                    "set_weights",
                    format!("the model has no weight named `{name}`"),
                ));
            };
            let want = &shapes[self.built.graph.index(id)];
            if shape != want || values.len() != want.iter().product::<usize>() {
                return Err(Error::Shape {
                    op: "set_weights",
                    detail: format!(
                        "`{name}` has shape {want:?}; got shape {shape:?} with {} values",
                        values.len()
                    ),
                });
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    "set_weights",
                    format!("`{name}`[{i}] is {}", values[i]),
                ));
            }
            if name.ends_with("running_var") && values.iter().any(|&v| v < 0.0) {
                return Err(Error::invalid(
                    "set_weights",
                    format!("`{name}` holds a negative variance"),
                ));
            }
            writes.push((id, is_param, values));
        }
        for (id, is_param, values) in writes {
            if is_param {
                self.exec.write_param(id, values)?;
            } else {
                self.exec.write_buffer(id, values)?;
            }
        }
        Ok(())
    }

    pub(super) fn steps(&self) -> u64 {
        self.exec.steps()
    }

    /// Writes a checkpoint to `path` atomically: through a temporary file unique to this save
    /// in the same directory, synced, then renamed (another process saving another checkpoint
    /// there at the same time never shares it); on failure `path` is untouched.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = self.tensors()?;
        for (which, map) in [
            ("features", &self.preprocess.features),
            ("targets", &self.preprocess.targets),
        ] {
            if let Some(a) = map {
                for (part, v) in [("scale", &a.scale), ("shift", &a.shift)] {
                    tensors.push((
                        format!("preprocess.{which}.{part}"),
                        vec![v.len()],
                        v.clone(),
                    ));
                }
            }
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let counters = format!("step={};epoch={}", self.steps(), self.epoch);
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, s, v)| (n, s, f32_bytes(&v)))
            .collect();
        let mut digest = Sha256::new();
        digest.update(counters.as_bytes());
        for (name, _, data) in &bytes {
            digest.update(name.as_bytes());
            digest.update(data);
        }
        let digest: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let views = bytes
            .iter()
            .map(|(n, s, d)| {
                Ok((
                    n.clone(),
                    safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d)?,
                ))
            })
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| Error::data(path, format!("building the checkpoint: {e}")))?;
        // One metadata entry with a fixed field order, so equal states give equal files.
        let mut meta = HashMap::from([(
            "wgtrain".to_string(),
            format!(
                "format={FORMAT};{counters};arch={};sha256={digest}",
                self.architecture()
            ),
        )]);
        let spec = ModelSpec {
            architecture: self.architecture.clone(),
            network: self.network.spec(),
            loss: self.loss,
            optimizer: self.optimizer,
            seed: self.seed,
            metrics: self.metrics_chosen.then(|| self.metrics.clone()),
            normalize: self.normalize.clone(),
            fitted_on_pixels: self.fitted_on_pixels,
        };
        let spec = serde_json::to_string(&spec)
            .map_err(|e| Error::data(path, format!("writing the model description: {e}")))?;
        meta.insert(MODEL_KEY.to_string(), spec);
        if !self.class_names.is_empty() {
            let names = serde_json::to_string(&self.class_names)
                .map_err(|e| Error::data(path, format!("writing the class names: {e}")))?;
            meta.insert(CLASSES_KEY.to_string(), names);
        }
        let serialized = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::data(path, format!("serializing the checkpoint: {e}")))?;
        let serialized = canonical_header(serialized)
            .map_err(|e| Error::data(path, format!("serializing the checkpoint: {e}")))?;
        crate::atomic_file::write_atomic(path, |file, tmp| {
            file.write_all(&serialized).map_err(|e| Error::io(tmp, e))
        })
    }

    /// Restores parameters, optimizer state and step count from a checkpoint written by
    /// [`Model::save`] for the same architecture. Nothing changes unless every check passes.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::data(
                path,
                format!("not a valid safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::data(path, format!("unreadable header: {e}")))?;
        let entry = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("wgtrain"))
            .cloned()
            .unwrap_or_default();
        let class_names: Vec<String> =
            match meta.metadata().as_ref().and_then(|m| m.get(CLASSES_KEY)) {
                None => Vec::new(),
                Some(json) => serde_json::from_str(json).map_err(|e| {
                    Error::data(
                        path,
                        format!(
                        "the class names in `{CLASSES_KEY}` are not a JSON list of strings: {e}"
                    ),
                    )
                })?,
            };
        // How fit scaled images, when the file records it (checked before anything changes).
        let spec: Option<ModelSpec> = match meta.metadata().as_ref().and_then(|m| m.get(MODEL_KEY))
        {
            None => None,
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                Error::data(path, format!("the model description is not valid: {e}"))
            })?),
        };
        let meta: HashMap<&str, &str> = entry
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if meta.get("format") != Some(&FORMAT) {
            return Err(Error::data(
                path,
                format!("not a wgtrain checkpoint (no `wgtrain` metadata of format {FORMAT})"),
            ));
        }
        let step: u64 = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::data(path, "the checkpoint has no step count"))?;
        let epoch: usize = meta
            .get("epoch")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::data(path, "the checkpoint has no epoch count"))?;
        // Compare names, shapes and dtypes with the model before reading any value.
        let expected = self.tensors()?;
        let mut problems = Vec::new();
        let mut present: Vec<&str> = st.names().into_iter().collect();
        present.sort();
        // The architecture, when the file records it (earlier files do not): a model whose
        // tensors happen to have the same shapes but compute something else is not this one.
        if let Some(saved) = meta.get("arch") {
            let ours = self.architecture();
            if *saved != ours {
                let (a, b): (Vec<&str>, Vec<&str>) =
                    (saved.split('|').collect(), ours.split('|').collect());
                let k = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
                let at = |v: &[&str]| v.get(k).copied().unwrap_or("nothing").to_string();
                let what = match k {
                    0 => "the input".to_string(),
                    k => format!("layer {}", k - 1),
                };
                problems.push(format!(
                    "another architecture: at {what} the checkpoint has {}, this model has {}",
                    at(&a),
                    at(&b)
                ));
            }
        }
        // Earlier versions stored every optimizer's state as `.m` and `.v`: a slot missing
        // under its own name is read from `.m` (first slot) or `.v` (second).
        let slots = self.optimizer.state_slots();
        let legacy = |name: &str| -> Option<String> {
            self.built.params.iter().find_map(|(param, _)| {
                let slot = name.strip_prefix(param.as_str())?.strip_prefix('.')?;
                let k = slots.iter().position(|s| *s == slot)?;
                Some(format!("{param}.{}", ["m", "v"].get(k)?))
            })
        };
        let source = |name: &str| -> String {
            match (st.tensor(name), legacy(name)) {
                (Err(_), Some(old)) if st.tensor(&old).is_ok() => old,
                _ => name.to_string(),
            }
        };
        for (name, shape, _) in &expected {
            match st.tensor(&source(name)) {
                Err(_) => problems.push(format!("missing `{name}`")),
                Ok(t) if t.dtype() != Dtype::F32 => {
                    problems.push(format!("`{name}` is {:?}, expected F32", t.dtype()))
                }
                Ok(t) if t.shape() != shape.as_slice() => problems.push(format!(
                    "`{name}` has shape {:?}, the model has {shape:?}",
                    t.shape()
                )),
                Ok(_) => {}
            }
        }
        let read = |name: &str| -> Vec<f32> {
            st.tensor(name)
                .expect("present")
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let sources: Vec<String> = expected.iter().map(|(n, _, _)| source(n)).collect();
        // The fitted scaling: complete (scale and shift) and of the model's widths.
        let mut preprocess = super::Preprocess::default();
        for (which, width) in [("features", self.features()), ("targets", self.outputs())] {
            let name = |part: &str| format!("preprocess.{which}.{part}");
            let (scale, shift) = (st.tensor(&name("scale")), st.tensor(&name("shift")));
            let (scale, shift) = match (scale, shift) {
                (Err(_), Err(_)) => continue,
                (Ok(a), Ok(b)) => (a, b),
                _ => {
                    problems.push(format!("`{}` comes without its pair", which));
                    continue;
                }
            };
            if [&scale, &shift]
                .iter()
                .any(|t| t.dtype() != Dtype::F32 || t.shape() != [width])
            {
                problems.push(format!(
                    "`preprocess.{which}` must be two F32 tensors of shape [{width}]"
                ));
                continue;
            }
            let map = crate::data::Affine {
                scale: read(&name("scale")),
                shift: read(&name("shift")),
            };
            if let Err(e) = map.check(&format!("preprocess.{which}"), width) {
                problems.push(e.to_string());
                continue;
            }
            match which {
                "features" => preprocess.features = Some(map),
                _ => preprocess.targets = Some(map),
            }
        }
        for name in &present {
            if sources.iter().any(|n| n == name) || name.starts_with("preprocess.") {
                continue;
            }
            // An earlier version's `.m` / `.v` for a slot this optimizer does not keep is
            // accepted only when it holds nothing (dropping state would change training).
            let old_slot = self.built.params.iter().any(|(param, _)| {
                [".m", ".v"]
                    .iter()
                    .any(|suffix| *name == format!("{param}{suffix}"))
            });
            if !old_slot {
                problems.push(format!("unexpected `{name}`"));
            } else if read(name).iter().any(|&x| x != 0.0) {
                problems.push(format!(
                    "`{name}` holds optimizer state that {:?} does not keep",
                    self.optimizer
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::data(
                path,
                format!("does not match the model: {}", problems.join("; ")),
            ));
        }
        // Over every tensor in the file, in name order, as `save` wrote it.
        let mut digest = Sha256::new();
        digest.update(format!("step={step};epoch={epoch}").as_bytes());
        for name in &present {
            digest.update(name.as_bytes());
            digest.update(st.tensor(name).expect("present").data());
        }
        let digest: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if meta.get("sha256") != Some(&digest.as_str()) {
            return Err(Error::data(path, "the tensor data or counters do not match the checkpoint's SHA-256: the file was modified or damaged"));
        }
        let tensors: HashMap<String, Vec<f32>> = expected
            .iter()
            .zip(&sources)
            .map(|((name, _, _), source)| (name.clone(), read(source)))
            .collect();
        // Values training could not have produced: the next fit would fail far from here.
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let values = &tensors[name];
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                problems.push(format!("`{name}`[{i}] is {}", values[i]));
            } else if name.ends_with(".running_var") {
                if let Some(i) = values.iter().position(|&v| v < 0.0) {
                    problems.push(format!(
                        "`{name}`[{i}] is {}: a variance is never negative",
                        values[i]
                    ));
                }
            } else if name.ends_with(".v") && slots.contains(&"v") {
                if let Some(i) = values.iter().position(|&v| v < 0.0) {
                    problems.push(format!(
                        "`{name}`[{i}] is {}: a second moment is never negative",
                        values[i]
                    ));
                }
            }
        }
        // Adam's bias correction takes the step count as an f64.
        if step > 1 << 53 {
            problems.push(format!(
                "step count {step} is beyond any training run (at most 2^53)"
            ));
        }
        if !problems.is_empty() {
            return Err(Error::data(
                path,
                format!("holds invalid values: {}", problems.join("; ")),
            ));
        }
        self.restore(&Snapshot {
            tensors,
            step,
            epoch,
        })?;
        self.preprocess = preprocess;
        self.class_names = class_names;
        if let Some(spec) = spec {
            self.normalize = spec.normalize;
            self.fitted_on_pixels = spec.fitted_on_pixels;
        }
        Ok(())
    }
}
