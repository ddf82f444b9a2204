//! Runs a graph with the `cpu` reference functions, in f32 or f64.

use std::collections::HashMap;

use ndarray::{Array1, ArrayD, Ix1, Ix2, IxDyn};

use super::{Graph, NodeId, Op};
use crate::cpu::{self, Scalar};
use crate::error::{Error, Result};
use crate::gpu::kernels::Epilogue;

/// A node's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<T> {
    Float(ArrayD<T>),
    Labels(Array1<u32>),
}

impl<T: Scalar> Value<T> {
    /// The float array (labels are not floats).
    pub fn float(&self) -> Option<&ArrayD<T>> {
        match self {
            Value::Float(a) => Some(a),
            Value::Labels(_) => None,
        }
    }
}

/// Parameter values and the evaluation of a graph on the CPU.
#[derive(Debug, Clone)]
pub struct CpuRun<T> {
    pub params: HashMap<NodeId, ArrayD<T>>,
}

fn dims2<'a, T: Scalar>(a: &'a ArrayD<T>, what: &str) -> Result<ndarray::ArrayView2<'a, T>> {
    a.view().into_dimensionality::<Ix2>().map_err(|_| {
        Error::shape(
            "cpu graph",
            format!("{what} needs a matrix, got {:?}", a.shape()),
        )
    })
}

impl<T: Scalar> CpuRun<T> {
    /// Parameters initialized from `seed` (parameter `i` draws from seed + i).
    pub fn new(graph: &Graph, seed: u64) -> Self {
        let mut params = HashMap::new();
        for (i, id) in graph.params().into_iter().enumerate() {
            let node = graph.node(id);
            let Op::Param(init) = &node.op else {
                unreachable!("params() returns params")
            };
            let shape: Vec<usize> = node.shape.iter().map(|d| d.resolve(0)).collect();
            let values = init.values(&shape, seed.wrapping_add(i as u64));
            let values = values.into_iter().map(|v| T::of(v as f64)).collect();
            params.insert(
                id,
                ArrayD::from_shape_vec(IxDyn(&shape), values).expect("init fills the shape"),
            );
        }
        CpuRun { params }
    }

    /// Evaluates every node up to and including `last`, given values for the inputs and
    /// labels it reads. Returns each node's value (None for nodes not computed).
    pub fn eval(
        &self,
        graph: &Graph,
        feeds: &HashMap<NodeId, Value<T>>,
        last: NodeId,
    ) -> Result<Vec<Option<Value<T>>>> {
        let batch = feeds
            .values()
            .map(|v| match v {
                Value::Float(a) => a.shape().first().copied().unwrap_or(1),
                Value::Labels(l) => l.len(),
            })
            .next()
            .unwrap_or(1);
        let shapes = graph.concrete_shapes(batch);
        let mut vals: Vec<Option<Value<T>>> = vec![None; last.0 + 1];
        for i in 0..=last.0 {
            let node = &graph.nodes()[i];
            let get = |k: usize| -> Result<&ArrayD<T>> {
                vals[node.inputs[k].0]
                    .as_ref()
                    .and_then(|v| v.float())
                    .ok_or_else(|| {
                        Error::invalid(
                            "cpu graph",
                            format!("{} needs float input {}", node.op.name(), k),
                        )
                    })
            };
            let labels = |k: usize| -> Result<&Array1<u32>> {
                match vals[node.inputs[k].0].as_ref() {
                    Some(Value::Labels(l)) => Ok(l),
                    _ => Err(Error::invalid(
                        "cpu graph",
                        format!("{} needs labels", node.op.name()),
                    )),
                }
            };
            let value = match &node.op {
                Op::Input | Op::Labels => {
                    let v = feeds.get(&NodeId(i)).ok_or_else(|| {
                        Error::invalid(
                            "cpu graph",
                            format!("no value fed for input `{}`", node.name),
                        )
                    })?;
                    let got: Vec<usize> = match v {
                        Value::Float(a) => a.shape().to_vec(),
                        Value::Labels(l) => vec![l.len()],
                    };
                    if got != shapes[i] {
                        return Err(Error::shape(
                            "cpu graph",
                            format!(
                                "input `{}` should be {:?}, got {:?}",
                                node.name, shapes[i], got
                            ),
                        ));
                    }
                    v.clone()
                }
                Op::Param(_) => Value::Float(self.params[&NodeId(i)].clone()),
                Op::MatMul { trans_a, trans_b } => {
                    let (a, b) = (get(0)?, get(1)?);
                    let s = &shapes[i];
                    let mut c = ndarray::Array2::zeros((s[0], s[1]));
                    cpu::gemm(
                        T::one(),
                        dims2(a, "matmul")?,
                        *trans_a,
                        dims2(b, "matmul")?,
                        *trans_b,
                        T::zero(),
                        &mut c,
                        Epilogue::None,
                        None,
                    )?;
                    Value::Float(c.into_dyn())
                }
                Op::BiasAdd => {
                    let mut y = dims2(get(0)?, "bias_add")?.to_owned();
                    let b = get(1)?
                        .view()
                        .into_dimensionality::<Ix1>()
                        .map_err(|_| Error::shape("bias_add", "bias must be a vector"))?;
                    cpu::bias_add(&mut y, b)?;
                    Value::Float(y.into_dyn())
                }
                Op::Activation(act) => Value::Float(cpu::activation_forward(*act, get(0)?.view())),
                Op::ActivationGrad(act) => Value::Float(cpu::activation_backward(
                    *act,
                    get(0)?.view(),
                    get(1)?.view(),
                )?),
                Op::Softmax => {
                    Value::Float(cpu::softmax_forward(dims2(get(0)?, "softmax")?).into_dyn())
                }
                Op::SoftmaxGrad => Value::Float(
                    cpu::softmax_backward(dims2(get(0)?, "softmax")?, dims2(get(1)?, "softmax")?)?
                        .into_dyn(),
                ),
                Op::SoftmaxXent | Op::SoftmaxXentGrad => {
                    let (loss, grad) =
                        cpu::softmax_xent(dims2(get(0)?, "softmax_xent")?, labels(1)?.view())?;
                    Value::Float(if matches!(node.op, Op::SoftmaxXent) {
                        ArrayD::from_elem(IxDyn(&[]), loss)
                    } else {
                        grad.into_dyn()
                    })
                }
                Op::Loss(kind) | Op::LossGrad(kind) => {
                    let (loss, grad) = cpu::pointwise_loss(
                        *kind,
                        dims2(get(0)?, "loss")?,
                        dims2(get(1)?, "loss")?,
                    )?;
                    Value::Float(if matches!(node.op, Op::Loss(_)) {
                        ArrayD::from_elem(IxDyn(&[]), loss)
                    } else {
                        grad.into_dyn()
                    })
                }
                Op::ColumnSum => {
                    Value::Float(cpu::column_sum(dims2(get(0)?, "column_sum")?).into_dyn())
                }
                Op::Add => Value::Float(get(0)? + get(1)?),
                Op::Reshape(_) => {
                    let x = get(0)?;
                    Value::Float(
                        x.to_shape(IxDyn(&shapes[i]))
                            .map_err(|e| Error::shape("reshape", e.to_string()))?
                            .to_owned(),
                    )
                }
            };
            vals[i] = Some(value);
        }
        Ok(vals)
    }

    /// The scalar value of a loss node.
    pub fn scalar(vals: &[Option<Value<T>>], id: NodeId) -> Option<T> {
        vals.get(id.0)?.as_ref()?.float()?.iter().next().copied()
    }
}
