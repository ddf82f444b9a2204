//! A small MLP graph and seeded batches, shared by the executor tests.

use std::collections::HashMap;

use ndarray::{Array1, ArrayD, IxDyn};
use wgtrain::graph::{Dim, Graph, Init, NodeId, Value};
use wgtrain::ops::Activation;
use wgtrain::unstable::cpu;

use super::uniform;

pub struct Mlp {
    pub graph: Graph,
    pub x: NodeId,
    pub y: NodeId,
    pub loss: NodeId,
    pub features: usize,
}

pub fn mlp(features: usize, hidden: &[usize], classes: usize, act: Activation) -> Mlp {
    let mut g = Graph::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(features)]);
    let y = g.labels("y");
    let mut h = x;
    let mut width = features;
    for (i, &units) in hidden.iter().chain([&classes]).enumerate() {
        let w = g.param(
            &format!("dense_{i}.weight"),
            &[width, units],
            Init::GlorotUniform,
        );
        let b = g.param(&format!("dense_{i}.bias"), &[units], Init::Zeros);
        let z = g.matmul(h, w).unwrap();
        h = g.bias_add(z, b).unwrap();
        if i < hidden.len() {
            h = g.activation(h, act).unwrap();
        }
        width = units;
    }
    let loss = g.softmax_xent(h, y).unwrap();
    Mlp {
        graph: g,
        x,
        y,
        loss,
        features,
    }
}

pub fn batch(seed: u64, rows: usize, features: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let x = uniform(seed, rows * features, -1.0, 1.0);
    let y = (0..rows)
        .map(|i| ((i as u64 * 7 + seed) % classes as u64) as u32)
        .collect();
    (x, y)
}

pub fn cpu_feeds<T: cpu::Scalar>(m: &Mlp, x: &[f32], y: &[u32]) -> HashMap<NodeId, Value<T>> {
    let rows = y.len();
    let xa = ArrayD::from_shape_vec(
        IxDyn(&[rows, m.features]),
        x.iter().map(|&v| T::of(v as f64)).collect(),
    )
    .unwrap();
    HashMap::from([
        (m.x, Value::Float(xa)),
        (m.y, Value::Labels(Array1::from(y.to_vec()))),
    ])
}
