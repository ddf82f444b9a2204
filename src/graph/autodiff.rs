//! Reverse-mode autodiff at compile time: `backward(loss)` appends gradient nodes to the
//! graph, so the backward pass is just more nodes (ARCHITECTURE.md, "Gradients").

use std::collections::HashMap;

use super::{Dim, Graph, NodeId, Op};
use crate::error::{Error, Result};

/// The gradient node of each differentiated node (parameters included).
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    map: HashMap<NodeId, NodeId>,
}

impl Gradients {
    /// The node holding d loss / d `node`, if `node` leads to a parameter.
    pub fn of(&self, node: NodeId) -> Option<NodeId> {
        self.map.get(&node).copied()
    }
}

impl Graph {
    /// Appends the nodes computing d `loss` / d every parameter. `loss` must be a loss node
    /// (a scalar); gradients reaching a node from several uses are summed.
    pub fn backward(&mut self, loss: NodeId) -> Result<Gradients> {
        if !self.contains(loss) {
            return Err(Error::invalid(
                "backward",
                format!("node #{} is not in this graph", loss.0),
            ));
        }
        let root = self.node(loss).clone();
        if !root.shape.is_empty() || !matches!(root.op, Op::SoftmaxXent | Op::Loss(_)) {
            return Err(Error::invalid(
                "backward",
                format!(
                    "`{}` ({}) has shape {:?}; gradients start from a scalar loss node",
                    root.name,
                    root.op.name(),
                    root.shape
                ),
            ));
        }
        // A node needs a gradient when a parameter feeds it.
        let mut needs = vec![false; loss.0 + 1];
        for i in 0..=loss.0 {
            let n = &self.nodes[i];
            needs[i] = matches!(n.op, Op::Param(_)) || n.inputs.iter().any(|j| needs[j.0]);
        }
        let mut contributions: Vec<Vec<NodeId>> = vec![Vec::new(); loss.0 + 1];
        let mut grads = Gradients::default();
        for i in (0..=loss.0).rev() {
            if !needs[i] {
                continue;
            }
            let id = self.id_at(i);
            let node = self.node(id).clone();
            let dy = if id == loss {
                None
            } else {
                let parts = std::mem::take(&mut contributions[i]);
                let Some((&first, rest)) = parts.split_first() else {
                    continue;
                };
                let mut total = first;
                for &p in rest {
                    total = self.add(total, p)?;
                }
                grads.map.insert(id, total);
                Some(total)
            };
            let needs_input = |k: usize| needs[node.inputs[k].0];
            let mut give = |k: usize, g: NodeId| contributions[node.inputs[k].0].push(g);
            let op_name = node.op.name();
            let dy_or = |dy: Option<NodeId>| {
                dy.ok_or_else(|| Error::invalid("backward", format!("{op_name} is not a loss")))
            };
            match &node.op {
                Op::Input | Op::Labels | Op::Param(_) => {}
                Op::MatMul { trans_a, trans_b } => {
                    let (dc, a, b) = (dy_or(dy)?, node.inputs[0], node.inputs[1]);
                    let (ta, tb) = (*trans_a, *trans_b);
                    if needs_input(0) {
                        // d op(A) = dC op(B)^T; for a transposed A, dA is its transpose.
                        let da = if ta {
                            self.matmul_t(b, dc, tb, true)?
                        } else {
                            self.matmul_t(dc, b, false, !tb)?
                        };
                        give(0, da);
                    }
                    if needs_input(1) {
                        let db = if tb {
                            self.matmul_t(dc, a, true, ta)?
                        } else {
                            self.matmul_t(a, dc, !ta, false)?
                        };
                        give(1, db);
                    }
                }
                Op::BiasAdd => {
                    let dy = dy_or(dy)?;
                    if needs_input(0) {
                        give(0, dy);
                    }
                    if needs_input(1) {
                        let db = self.add_op(Op::ColumnSum, &[dy])?;
                        give(1, db);
                    }
                }
                Op::Activation(act) => {
                    let dx = self.add_op(Op::ActivationGrad(*act), &[id, dy_or(dy)?])?;
                    give(0, dx);
                }
                Op::Dropout { rate, seed } => {
                    let dx = self.add_op(
                        Op::Dropout {
                            rate: *rate,
                            seed: *seed,
                        },
                        &[dy_or(dy)?],
                    )?;
                    give(0, dx);
                }
                Op::Softmax => {
                    let dx = self.add_op(Op::SoftmaxGrad, &[id, dy_or(dy)?])?;
                    give(0, dx);
                }
                Op::SoftmaxXent | Op::Loss(_) if dy.is_some() => {
                    return Err(Error::invalid(
                        "backward",
                        format!(
                            "`{}` is used by other nodes; differentiate from the final loss",
                            node.name
                        ),
                    ))
                }
                Op::SoftmaxXent => {
                    if needs_input(1) {
                        return Err(Error::invalid(
                            "backward",
                            "labels cannot be differentiated",
                        ));
                    }
                    let d = self.add_op(Op::SoftmaxXentGrad, &[node.inputs[0], node.inputs[1]])?;
                    give(0, d);
                }
                Op::Loss(kind) => {
                    if needs_input(1) {
                        return Err(Error::invalid(
                            "backward",
                            "loss targets cannot be differentiated",
                        ));
                    }
                    let d = self.add_op(Op::LossGrad(*kind), &[node.inputs[0], node.inputs[1]])?;
                    give(0, d);
                }
                Op::Add => {
                    let dy = dy_or(dy)?;
                    for k in 0..2 {
                        if needs_input(k) {
                            give(k, dy);
                        }
                    }
                }
                Op::Conv2d(win) => {
                    let (dy, x, w) = (dy_or(dy)?, node.inputs[0], node.inputs[1]);
                    if needs_input(0) {
                        let (h, wd) = match self.node(x).shape.as_slice() {
                            [_, _, Dim::Fixed(h), Dim::Fixed(w)] => (*h, *w),
                            _ => unreachable!("conv2d inputs were checked"),
                        };
                        let win = *win;
                        let dx = self.add_op(Op::Conv2dGradInput { win, h, w: wd }, &[dy, w])?;
                        give(0, dx);
                    }
                    if needs_input(1) {
                        let dw = self.add_op(Op::Conv2dGradWeight(*win), &[x, dy])?;
                        give(1, dw);
                    }
                    if needs_input(2) {
                        let db = self.add_op(Op::ChannelSum, &[dy])?;
                        give(2, db);
                    }
                }
                Op::MaxPool2d(win) => {
                    let dx = self.add_op(Op::MaxPool2dGrad(*win), &[node.inputs[0], dy_or(dy)?])?;
                    give(0, dx);
                }
                Op::AvgPool2d(win) => {
                    let (h, w) = match self.node(node.inputs[0]).shape.as_slice() {
                        [_, _, Dim::Fixed(h), Dim::Fixed(w)] => (*h, *w),
                        _ => unreachable!("pooling inputs were checked"),
                    };
                    let win = *win;
                    let dx = self.add_op(Op::AvgPool2dGrad { win, h, w }, &[dy_or(dy)?])?;
                    give(0, dx);
                }
                Op::Reshape(_) => {
                    let back = self.node(node.inputs[0]).shape.clone();
                    let dx = self.add_op(Op::Reshape(back), &[dy_or(dy)?])?;
                    give(0, dx);
                }
                Op::ActivationGrad(_)
                | Op::SoftmaxGrad
                | Op::SoftmaxXentGrad
                | Op::LossGrad(_)
                | Op::ColumnSum
                | Op::Conv2dGradInput { .. }
                | Op::Conv2dGradWeight(_)
                | Op::ChannelSum
                | Op::MaxPool2dGrad(_)
                | Op::AvgPool2dGrad { .. } => {
                    return Err(Error::invalid(
                        "backward",
                        format!(
                            "{} has no derivative here (no second-order gradients)",
                            node.op.name()
                        ),
                    ))
                }
            }
        }
        Ok(grads)
    }
}
