//! Fusion: patterns of nodes that one GEMM launch computes with an epilogue. Each rule looks
//! at one node and, when its pattern matches, names the node the GEMM writes (the target),
//! the nodes it absorbs, and the epilogue. Rules run in order over every node; a rule sees
//! what earlier matches absorbed (ARCHITECTURE.md, "The GPU plan").
//!
//! A rule may absorb a value only when nothing else reads it: no backward rule reads the
//! intermediate values these patterns remove (ReLU's gradient uses its output, matmul's its
//! inputs), and `pinned` values (read after the last node, or living in the gradient arena)
//! are never absorbed.

use crate::graph::{DenseOp, ElementwiseOp, Node, Op};
use crate::ops::{Activation, Epilogue};

/// A GEMM that computes a fused node: the matmul it starts from, the node in the epilogue's
/// bias slot (a bias vector, or the ReLU output for a ReLU gradient), and the epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fused {
    pub matmul: usize,
    pub bias: usize,
    pub epilogue: Epilogue,
}

/// The result of fusion: nodes folded into a fused launch (no launch or storage of their
/// own), and the fused launch that computes each target node.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fusion {
    pub skip: Vec<bool>,
    pub fused: Vec<Option<Fused>>,
}

/// What a rule sees.
pub(super) struct Graph<'a> {
    pub nodes: &'a [Node],
    pub readers: &'a [Vec<usize>],
    pub pinned: &'a [bool],
}

/// A rule's match: the fused launch writes `target` and absorbs `absorbed`.
struct Match {
    target: usize,
    fused: Fused,
    absorbed: Vec<usize>,
}

type Rule = fn(&Graph<'_>, &Fusion, usize) -> Option<Match>;

/// The rules, in the order they run.
const RULES: [(&str, Rule); 2] = [
    ("matmul + bias_add (+ relu)", bias_epilogue),
    ("matmul + relu_grad", relu_grad_epilogue),
];

/// Applies every rule to every node. `last_use` is extended so a fused GEMM's operands live
/// until the fused launch runs.
pub(super) fn fuse(g: &Graph<'_>, last_use: &mut [usize]) -> Fusion {
    let n = g.nodes.len();
    let mut fusion = Fusion {
        skip: vec![false; n],
        fused: vec![None; n],
    };
    for (_, rule) in RULES {
        for i in 0..n {
            let Some(m) = rule(g, &fusion, i) else {
                continue;
            };
            for &a in &m.absorbed {
                fusion.skip[a] = true;
            }
            fusion.fused[m.target] = Some(m.fused);
            // The matmul's operands are now read where the fused node runs.
            for a in &g.nodes[m.fused.matmul].inputs {
                last_use[a.0] = last_use[a.0].max(m.target);
            }
        }
    }
    fusion
}

/// A matmul read only by a bias-add (itself read only by a ReLU) becomes one GEMM with a bias
/// (+ ReLU) epilogue writing the last node.
fn bias_epilogue(g: &Graph<'_>, _: &Fusion, i: usize) -> Option<Match> {
    let nodes = g.nodes;
    if !matches!(nodes[i].op, Op::Dense(DenseOp::MatMul { .. })) || g.pinned[i] {
        return None;
    }
    let &[j] = g.readers[i].as_slice() else {
        return None;
    };
    if !matches!(nodes[j].op, Op::Dense(DenseOp::BiasAdd)) || nodes[j].inputs[0].0 != i {
        return None;
    }
    let bias = nodes[j].inputs[1].0;
    if let &[k] = g.readers[j].as_slice() {
        if nodes[k].op == Op::Elementwise(ElementwiseOp::Activation(Activation::Relu))
            && !g.pinned[j]
        {
            return Some(Match {
                target: k,
                fused: Fused {
                    matmul: i,
                    bias,
                    epilogue: Epilogue::BiasRelu,
                },
                absorbed: vec![i, j],
            });
        }
    }
    Some(Match {
        target: j,
        fused: Fused {
            matmul: i,
            bias,
            epilogue: Epilogue::Bias,
        },
        absorbed: vec![i],
    })
}

/// A matmul read only by a ReLU gradient (as its dy) becomes one GEMM whose epilogue applies
/// the gradient's mask, with the ReLU output in the bias slot.
fn relu_grad_epilogue(g: &Graph<'_>, fusion: &Fusion, i: usize) -> Option<Match> {
    let nodes = g.nodes;
    if nodes[i].op != Op::Elementwise(ElementwiseOp::ActivationGrad(Activation::Relu)) {
        return None;
    }
    let (y, dy) = (nodes[i].inputs[0].0, nodes[i].inputs[1].0);
    if !matches!(nodes[dy].op, Op::Dense(DenseOp::MatMul { .. }))
        || g.pinned[dy]
        || fusion.skip[dy]
        || g.readers[dy].as_slice() != [i]
    {
        return None;
    }
    Some(Match {
        target: i,
        fused: Fused {
            matmul: dy,
            bias: y,
            epilogue: Epilogue::ReluGrad,
        },
        absorbed: vec![dy],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::plan::liveness::{last_uses, readers};
    use crate::graph::{Dim, Graph as G, Init};

    /// Fuses a differentiated 2-layer MLP (ReLU hidden layer, softmax cross-entropy) with
    /// nothing pinned.
    fn mlp() -> (G, Fusion, Vec<usize>) {
        let mut g = G::new();
        let x = g.input("x", &[Dim::Batch, Dim::Fixed(6)]);
        let y = g.labels("y");
        let w1 = g.param("w1", &[6, 5], Init::Zeros);
        let b1 = g.param("b1", &[5], Init::Zeros);
        let w2 = g.param("w2", &[5, 3], Init::Zeros);
        let b2 = g.param("b2", &[3], Init::Zeros);
        let h = g.matmul(x, w1).unwrap();
        let h = g.bias_add(h, b1).unwrap();
        let h = g.activation(h, Activation::Relu).unwrap();
        let z = g.matmul(h, w2).unwrap();
        let z = g.bias_add(z, b2).unwrap();
        let loss = g.softmax_xent(z, y).unwrap();
        g.backward(loss).unwrap();
        let nodes = g.nodes();
        let readers = readers(nodes);
        let pinned = vec![false; nodes.len()];
        let mut last = last_uses(nodes, &[]);
        let before = last.clone();
        let fusion = fuse(
            &Graph {
                nodes,
                readers: &readers,
                pinned: &pinned,
            },
            &mut last,
        );
        assert!(last.iter().zip(&before).all(|(a, b)| a >= b));
        (g, fusion, last)
    }

    #[test]
    fn forward_layers_become_gemms_with_bias_epilogues() {
        let (g, f, last) = mlp();
        let nodes = g.nodes();
        // matmul 6, bias_add 7, relu 8: one GEMM writing the ReLU.
        assert_eq!(
            nodes[8].op,
            Op::Elementwise(ElementwiseOp::Activation(Activation::Relu))
        );
        assert_eq!(
            f.fused[8],
            Some(Fused {
                matmul: 6,
                bias: 3,
                epilogue: Epilogue::BiasRelu
            })
        );
        assert!(f.skip[6] && f.skip[7] && !f.skip[8]);
        // matmul 9, bias_add 10 (the logits): a GEMM with a bias epilogue.
        assert_eq!(f.fused[10].map(|x| x.epilogue), Some(Epilogue::Bias));
        // x and w1 are now read by the fused node 8.
        assert!(last[0] >= 8 && last[2] >= 8);
    }

    #[test]
    fn the_relu_gradient_absorbs_its_matmul() {
        let (g, f, _) = mlp();
        let nodes = g.nodes();
        let relu_grad = nodes
            .iter()
            .position(|n| n.op == Op::Elementwise(ElementwiseOp::ActivationGrad(Activation::Relu)))
            .expect("the backward pass has a ReLU gradient");
        let fused = f.fused[relu_grad].expect("fused with dY W2^T");
        assert_eq!(fused.epilogue, Epilogue::ReluGrad);
        assert_eq!(fused.bias, 8, "the ReLU's output fills the bias slot");
        assert!(matches!(
            nodes[fused.matmul].op,
            Op::Dense(DenseOp::MatMul { .. })
        ));
        assert!(f.skip[fused.matmul]);
    }

    #[test]
    fn pinned_or_shared_values_are_not_absorbed() {
        let (g, _, _) = mlp();
        let nodes = g.nodes();
        let readers = readers(nodes);
        let mut pinned = vec![false; nodes.len()];
        pinned[6] = true; // the first matmul's output is read after the step
        let mut last = last_uses(nodes, &[]);
        let f = fuse(
            &Graph {
                nodes,
                readers: &readers,
                pinned: &pinned,
            },
            &mut last,
        );
        assert!(!f.skip[6] && f.fused[7].is_none() && f.fused[8].is_none());
        assert_eq!(f.fused[10].map(|x| x.epilogue), Some(Epilogue::Bias));
    }
}
