//! The two walks of an HNSW search, shared by insertion and queries: the greedy descent through
//! an upper layer and the beam search of one layer (hnswlib's `searchBaseLayerST`), with a
//! filter applied as hnswlib applies it: every node is walked through, only allowed ones become
//! results.

use crate::graph::{Graph, Results};
use crate::store::Vectors;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// (cosine distance, node), ordered by distance then node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scored(pub f32, pub u32);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// Nodes seen in one walk: a mark per node equal to the walk's stamp (no clearing per walk).
#[derive(Debug, Default)]
pub(crate) struct Visited {
    stamp: u32,
    marks: Vec<u32>,
}

impl Visited {
    /// Forget every mark (a new walk over `n` nodes).
    pub fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.stamp = 1;
        }
    }

    /// Mark `i`; true when it was not marked in this walk.
    #[inline]
    pub fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        let fresh = *m != self.stamp;
        *m = self.stamp;
        fresh
    }
}

/// Greedy walk at `layer` from `ep` to the node closest to `query`: (node, distance).
/// `query` is [`Vectors::prepare`]d.
pub(crate) fn greedy(g: &Graph, v: &Vectors, query: &[f32], mut ep: u32, layer: u8) -> (u32, f32) {
    let mut d_ep = v.dist(query, ep);
    let mut changed = true;
    while changed {
        changed = false;
        for &nb in g.links(ep, layer) {
            let d = v.dist(query, nb);
            if d < d_ep {
                (ep, d_ep) = (nb, d);
                changed = true;
            }
        }
    }
    (ep, d_ep)
}

/// Beam search of width `ef` at `layer` from `entries`: the best allowed nodes found, closest
/// first. `query` is [`Vectors::prepare`]d.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_layer(
    g: &Graph,
    v: &Vectors,
    query: &[f32],
    entries: &[u32],
    ef: usize,
    layer: u8,
    allow: Option<&dyn Fn(u32) -> bool>,
    visited: &mut Visited,
) -> Vec<Scored> {
    visited.start(g.len());
    let allowed = |i: u32| allow.is_none_or(|f| f(i));
    let mut candidates = BinaryHeap::new(); // closest on top
    let mut results = Results::new(); // worst on top
    for &ep in entries {
        if visited.insert(ep) {
            let d = v.dist(query, ep);
            candidates.push(Reverse(Scored(d, ep)));
            if allowed(ep) {
                results.push(Scored(d, ep));
            }
        }
    }
    while let Some(Reverse(Scored(d, node))) = candidates.pop() {
        if results.len() >= ef && results.peek().is_some_and(|w| d > w.0) {
            break;
        }
        let links = g.links(node, layer);
        if let Some(&first) = links.first() {
            v.prefetch(first);
        }
        for (j, &nb) in links.iter().enumerate() {
            if let Some(&next) = links.get(j + 1) {
                v.prefetch(next);
            }
            if !visited.insert(nb) {
                continue;
            }
            let d = v.dist(query, nb);
            if results.len() < ef || results.peek().is_some_and(|w| d < w.0) {
                candidates.push(Reverse(Scored(d, nb)));
                if allowed(nb) {
                    results.push(Scored(d, nb));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
    }
    results.into_sorted_vec()
}
