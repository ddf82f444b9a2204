//! Reverse-mode autodiff at compile time: `backward(loss)` appends gradient nodes to the
//! graph, so the backward pass is just more nodes (ARCHITECTURE.md, "Gradients").

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::graph::{LossOp, ShapeOp};

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
        if !root.shape.is_empty()
            || !matches!(
                root.op,
                Op::Loss(LossOp::SoftmaxXent { .. }) | Op::Loss(LossOp::Loss(_))
            )
        {
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
            needs[i] =
                matches!(n.op, Op::Shape(ShapeOp::Param(_))) || n.inputs.iter().any(|j| needs[j.0]);
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
            let mut cx = super::rules::GradArgs {
                id,
                node: &node,
                dy,
                needs: node.inputs.iter().map(|j| needs[j.0]).collect(),
                give: Vec::new(),
            };
            super::rules::backward(self, &mut cx)?;
            for (k, g) in cx.give {
                contributions[node.inputs[k].0].push(g);
            }
        }
        Ok(grads)
    }
}
