//! Liveness and buffer assignment: which node reads each value last, and which activation
//! buffer ("slot") each value occupies. Pure functions of the graph; the plan creates the
//! buffers afterwards (ARCHITECTURE.md, "The GPU plan").

use std::collections::HashMap;

use crate::graph::{Node, Op, ShapeOp};

/// Every node's readers, in node order.
pub(super) fn readers(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut readers = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for j in &node.inputs {
            readers[j.0].push(i);
        }
    }
    readers
}

/// For every node, the last node that reads its value; `nodes.len()` for values read after
/// the last node (`read_at_end`: the loss and its inputs, which the metrics launch reads, and
/// gradients copied into the arena at the end). A reshape is a view of its input, so the input
/// lives as long as the reshape's readers.
pub(super) fn last_uses(nodes: &[Node], read_at_end: &[usize]) -> Vec<usize> {
    let n = nodes.len();
    let mut last_use: Vec<usize> = (0..n).collect();
    for &i in read_at_end {
        last_use[i] = n;
    }
    for i in (0..n).rev() {
        let end = if matches!(nodes[i].op, Op::Shape(ShapeOp::Reshape(_))) {
            last_use[i].max(i)
        } else {
            i
        };
        for j in &nodes[i].inputs {
            last_use[j.0] = last_use[j.0].max(end);
        }
    }
    last_use
}

/// Activation buffers handed out by size: a request takes the smallest free slot that holds
/// it, else a new slot of exactly its size.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// Elements of each slot.
    pub sizes: Vec<usize>,
    free: Vec<usize>,
}

impl Slots {
    /// A slot for `len` elements.
    pub fn take(&mut self, len: usize) -> usize {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &s)| self.sizes[s] >= len)
            .min_by_key(|(_, &s)| self.sizes[s])
            .map(|(k, _)| k);
        match best {
            Some(k) => self.free.swap_remove(k),
            None => {
                self.sizes.push(len);
                self.sizes.len() - 1
            }
        }
    }

    /// Returns slot `s` for reuse.
    pub fn give_back(&mut self, s: usize) {
        self.free.push(s);
    }
}

/// Where a node's value lives in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    /// The k-th batch input buffer.
    Input(usize),
    /// An element offset in the parameter arena.
    Param(usize),
    /// An element offset in the gradient arena.
    Grad(usize),
    /// An element offset in the buffer arena.
    Buffer(usize),
    /// An activation slot.
    Slot(usize),
}

/// What placement needs to know besides the graph.
pub(super) struct PlaceInput<'a> {
    pub lens: &'a [usize],
    /// Nodes folded into a fused launch: they get no storage.
    pub skip: &'a [bool],
    pub last_use: &'a [usize],
    /// Parameter offsets in the arenas, by node index.
    pub param_offsets: &'a HashMap<usize, usize>,
    /// Buffer offsets in the buffer arena, by node index.
    pub buffer_offsets: &'a HashMap<usize, usize>,
    /// Gradient nodes written straight into the gradient arena, with their offsets.
    pub arena_grad: &'a HashMap<usize, usize>,
    /// For a loss node, the gradient node its launch also writes.
    pub fused_grad: &'a dyn Fn(usize) -> Option<usize>,
}

/// Places every value in node order: inputs in their own buffers, parameters and arena
/// gradients in the arenas, a reshape where its input is, everything else in a slot. A slot
/// is freed once its value's last reader has run, after that reader's output is placed (a
/// launch never writes over its own inputs). Returns each node's location and the slots.
pub(super) fn place(nodes: &[Node], p: &PlaceInput<'_>) -> (Vec<Option<Loc>>, Slots) {
    let n = nodes.len();
    let mut locs: Vec<Option<Loc>> = vec![None; n];
    let mut slots = Slots::default();
    let mut owner: Vec<Option<usize>> = vec![None; n];
    let mut inputs = 0;
    let slot_or_arena =
        |i: usize, slots: &mut Slots, owner: &mut Vec<Option<usize>>| match p.arena_grad.get(&i) {
            Some(&off) => Loc::Grad(off),
            None => {
                let s = slots.take(p.lens[i]);
                owner[i] = Some(s);
                Loc::Slot(s)
            }
        };
    for i in 0..n {
        if locs[i].is_some() || p.skip[i] {
            continue; // a fused loss gradient (placed with its loss), or folded into a GEMM
        }
        locs[i] = Some(match &nodes[i].op {
            Op::Shape(ShapeOp::Input) | Op::Shape(ShapeOp::Labels) => {
                inputs += 1;
                Loc::Input(inputs - 1)
            }
            Op::Shape(ShapeOp::Param(_)) => Loc::Param(p.param_offsets[&i]),
            Op::Shape(ShapeOp::Buffer(_)) => Loc::Buffer(p.buffer_offsets[&i]),
            Op::Shape(ShapeOp::Reshape(_)) => {
                locs[nodes[i].inputs[0].0].expect("inputs come first")
            }
            _ => slot_or_arena(i, &mut slots, &mut owner),
        });
        // The fused gradient is written by the loss's launch: place it now.
        if let Some(g) = (p.fused_grad)(i) {
            locs[g] = Some(slot_or_arena(g, &mut slots, &mut owner));
        }
        // Free the slots whose last reader was this node (after allocating its output).
        for (owned, _) in owner[..i]
            .iter_mut()
            .zip(&p.last_use[..i])
            .filter(|(_, &last)| last == i)
        {
            if let Some(s) = owned.take() {
                slots.give_back(s);
            }
        }
    }
    (locs, slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, Graph, Init};
    use crate::ops::Activation;

    #[test]
    fn slots_take_the_smallest_free_fit() {
        let mut s = Slots::default();
        let (a, b, c) = (s.take(100), s.take(10), s.take(50));
        assert_eq!((a, b, c), (0, 1, 2));
        s.give_back(a);
        s.give_back(c);
        assert_eq!(s.take(40), c, "50 is the smallest that holds 40");
        assert_eq!(s.take(200), 3, "nothing free holds 200: a new slot");
        assert_eq!(s.take(100), a);
        assert_eq!(s.sizes, vec![100, 10, 50, 200]);
    }

    /// A chain x -> tanh -> tanh -> tanh -> sum: each value dies at its reader, so two slots
    /// alternate; a reshape keeps its input alive as long as the reshape's readers.
    #[test]
    fn values_die_at_their_last_reader_and_reshapes_extend_life() {
        let mut g = Graph::new();
        let x = g.input("x", &[Dim::Batch, Dim::Fixed(4)]);
        let a = g.activation(x, Activation::Tanh).unwrap();
        let r = g
            .reshape(a, &[Dim::Batch, Dim::Fixed(2), Dim::Fixed(2)])
            .unwrap();
        let f = g.flatten(r).unwrap();
        let b = g.activation(f, Activation::Tanh).unwrap();
        let c = g.activation(b, Activation::Tanh).unwrap();
        let nodes = g.nodes();
        let last = last_uses(nodes, &[g.index(c)]);
        assert_eq!(last[g.index(x)], g.index(a));
        assert_eq!(
            last[g.index(a)],
            g.index(b),
            "read through two reshapes by b"
        );
        assert_eq!(last[g.index(b)], g.index(c));
        assert_eq!(last[g.index(c)], nodes.len());
        let lens = vec![4; nodes.len()];
        let none = HashMap::new();
        let (locs, slots) = place(
            nodes,
            &PlaceInput {
                lens: &lens,
                skip: &vec![false; nodes.len()],
                last_use: &last,
                param_offsets: &none,
                buffer_offsets: &none,
                arena_grad: &none,
                fused_grad: &|_| None,
            },
        );
        assert_eq!(locs[g.index(x)], Some(Loc::Input(0)));
        assert_eq!(locs[g.index(r)], locs[g.index(a)], "a reshape is a view");
        assert_eq!(locs[g.index(f)], locs[g.index(a)]);
        // a, b and c each need a slot while the one before is still read: a and b coexist,
        // then c takes a's slot once b has read it.
        assert_eq!(locs[g.index(a)], Some(Loc::Slot(0)));
        assert_eq!(locs[g.index(b)], Some(Loc::Slot(1)));
        assert_eq!(locs[g.index(c)], Some(Loc::Slot(0)));
        assert_eq!(slots.sizes, vec![4, 4]);
    }

    #[test]
    fn parameters_and_arena_gradients_take_no_slot() {
        let mut g = Graph::new();
        let x = g.input("x", &[Dim::Batch, Dim::Fixed(3)]);
        let w = g.param("w", &[3, 2], Init::Zeros);
        let z = g.matmul(x, w).unwrap();
        let nodes = g.nodes();
        let last = last_uses(nodes, &[g.index(z)]);
        let offsets = HashMap::from([(g.index(w), 64)]);
        let grads = HashMap::from([(g.index(z), 128)]);
        let (locs, slots) = place(
            nodes,
            &PlaceInput {
                lens: &[6, 6, 4],
                skip: &[false; 3],
                last_use: &last,
                param_offsets: &offsets,
                buffer_offsets: &HashMap::new(),
                arena_grad: &grads,
                fused_grad: &|_| None,
            },
        );
        assert_eq!(
            locs,
            vec![
                Some(Loc::Input(0)),
                Some(Loc::Param(64)),
                Some(Loc::Grad(128))
            ]
        );
        assert!(slots.sizes.is_empty());
    }
}
