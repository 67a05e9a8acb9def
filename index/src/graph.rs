//! The HNSW graph of an index: built, searched and stored in flat arrays.
//!
//! hnswlib's layout and algorithm: every node's layer-0 links in one `u32` array with `2 M`
//! slots per node, the few upper-layer lists beside it, the index's own vector slice (no
//! second copy), a visited list reused across queries by a generation stamp, the next vector
//! prefetched while the current one is scored, and hnswlib's neighbour-selection heuristic.
//! Indexes of formats 1 and 2 hold an hnsw_rs graph instead; [`crate::legacy_hnsw`] converts
//! it into this one when they are opened.

use crate::search_layer::{Scored, Visited, greedy, search_layer};
use crate::store::Vectors;
use std::collections::BinaryHeap;
use std::sync::Mutex;

/// The graph (node id = row id).
#[derive(Debug)]
pub struct Graph {
    /// Links per node at layer 0 (2 M) and above (M).
    pub(crate) m0: usize,
    pub(crate) m: usize,
    pub(crate) ef_construction: usize,
    /// Top layer of each node.
    pub(crate) levels: Vec<u8>,
    /// Layer-0 links: node i's are `links0[i * m0..][..len0[i]]`.
    pub(crate) links0: Vec<u32>,
    pub(crate) len0: Vec<u16>,
    /// Upper-layer links: `upper[i][l - 1]` for nodes whose level is l >= 1 (empty otherwise).
    pub(crate) upper: Vec<Vec<Vec<u32>>>,
    pub(crate) entry: u32,
    pub(crate) max_level: u8,
    /// Visited lists, reused by concurrent searches.
    visited: Mutex<Vec<Visited>>,
}

impl Graph {
    pub fn new(m: usize, ef_construction: usize) -> Self {
        Self {
            m0: 2 * m,
            m,
            ef_construction,
            levels: Vec::new(),
            links0: Vec::new(),
            len0: Vec::new(),
            upper: Vec::new(),
            entry: 0,
            max_level: 0,
            visited: Mutex::new(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Links of `node` at `layer`.
    pub(crate) fn links(&self, node: u32, layer: u8) -> &[u32] {
        let i = node as usize;
        if layer == 0 {
            &self.links0[i * self.m0..i * self.m0 + self.len0[i] as usize]
        } else {
            self.upper[i]
                .get(layer as usize - 1)
                .map_or(&[], Vec::as_slice)
        }
    }

    pub(crate) fn set_links(&mut self, node: u32, layer: u8, links: &[u32]) {
        let i = node as usize;
        if layer == 0 {
            let n = links.len().min(self.m0);
            self.links0[i * self.m0..i * self.m0 + n].copy_from_slice(&links[..n]);
            self.len0[i] = n as u16;
        } else {
            self.upper[i][layer as usize - 1] = links.to_vec();
        }
    }

    /// Append `q` to `node`'s links at `layer` in place; false when they already hold `max`.
    fn push_link(&mut self, node: u32, layer: u8, q: u32, max: usize) -> bool {
        let i = node as usize;
        if layer == 0 {
            let len = self.len0[i] as usize;
            if len >= max {
                return false;
            }
            self.links0[i * self.m0 + len] = q;
            self.len0[i] += 1;
        } else {
            let links = &mut self.upper[i][layer as usize - 1];
            if links.len() >= max {
                return false;
            }
            links.push(q);
        }
        true
    }

    pub(crate) fn take_visited(&self) -> Visited {
        self.visited
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default()
    }

    pub(crate) fn give_visited(&self, v: Visited) {
        if let Ok(mut pool) = self.visited.lock() {
            pool.push(v);
        }
    }

    /// Insert the rows `self.len()..v.len()` (in order).
    pub fn insert_rows(&mut self, v: &Vectors) {
        let n = v.len();
        let ml = 1.0 / (self.m.max(2) as f64).ln();
        while self.len() < n {
            // the level of a node is drawn from a hash of its id: the same graph whether rows
            // arrive in one build or over many `add`s and reloads
            let u = (cellspace_core::hash::splitmix64(self.len() as u64) >> 11) as f64
                / (1u64 << 53) as f64;
            let level = ((-u.max(f64::MIN_POSITIVE).ln() * ml) as usize).min(15) as u8;
            self.insert(v, level);
        }
    }

    fn insert(&mut self, v: &Vectors, level: u8) {
        let q = self.len() as u32;
        self.levels.push(level);
        self.links0.extend(std::iter::repeat_n(0, self.m0));
        self.len0.push(0);
        self.upper.push(vec![Vec::new(); level as usize]);
        if q == 0 {
            (self.entry, self.max_level) = (0, level);
            return;
        }
        let row = v.graph_row(q as usize);
        let query = v.prepare(&row);
        let mut ep = self.entry;
        for layer in (level + 1..=self.max_level).rev() {
            ep = greedy(self, v, &query, ep, layer).0;
        }
        let mut visited = self.take_visited();
        for layer in (0..=level.min(self.max_level)).rev() {
            let found = search_layer(
                self,
                v,
                &query,
                &[ep],
                self.ef_construction,
                layer,
                None,
                &mut visited,
            );
            let max = if layer == 0 { self.m0 } else { self.m };
            let next_ep = found.first().map_or(ep, |s| s.1);
            let ids: Vec<u32> = self
                .heuristic(v, found, self.m)
                .iter()
                .map(|s| s.1)
                .collect();
            self.set_links(q, layer, &ids);
            for &nb in &ids {
                if !self.push_link(nb, layer, q, max) {
                    // full: keep the best spread of its links and the new node
                    let nb_row = v.graph_row(nb as usize);
                    let nb_query = v.prepare(&nb_row);
                    let cands: Vec<Scored> = self
                        .links(nb, layer)
                        .iter()
                        .chain([&q])
                        .map(|&o| Scored(v.dist(&nb_query, o), o))
                        .collect();
                    let kept: Vec<u32> = self
                        .heuristic(v, cands, max)
                        .into_iter()
                        .map(|s| s.1)
                        .collect();
                    self.set_links(nb, layer, &kept);
                }
            }
            ep = next_ep;
        }
        self.give_visited(visited);
        if level > self.max_level {
            (self.entry, self.max_level) = (q, level);
        }
    }

    /// hnswlib's neighbour selection: closest first, skipping a candidate that is closer to an
    /// already chosen neighbour than to the new node (keeps links spread in all directions).
    fn heuristic(&self, v: &Vectors, mut cands: Vec<Scored>, max: usize) -> Vec<Scored> {
        cands.sort();
        if cands.len() <= max {
            return cands;
        }
        let mut chosen: Vec<Scored> = Vec::with_capacity(max);
        for c in cands {
            if chosen.len() >= max {
                break;
            }
            let row = v.graph_row(c.1 as usize);
            let cq = v.prepare(&row);
            if chosen.iter().all(|s| v.dist(&cq, s.1) > c.0) {
                chosen.push(c);
            }
        }
        chosen
    }

    /// Up to `k` (row, cosine similarity) pairs, best first, among rows `allow` accepts, with
    /// a beam of `ef` (at least `k`) at layer 0.
    /// The similarities are the graph's: exact for the f32 store, from the codes for int8.
    pub fn search(
        &self,
        v: &Vectors,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(usize, f32)> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let query = v.prepare(query);
        let mut ep = self.entry;
        for layer in (1..=self.max_level).rev() {
            ep = greedy(self, v, &query, ep, layer).0;
        }
        let mut visited = self.take_visited();
        let found = search_layer(self, v, &query, &[ep], ef.max(k), 0, allow, &mut visited);
        self.give_visited(visited);
        found
            .into_iter()
            .take(k)
            .map(|Scored(d, i)| (i as usize, 1.0 - d))
            .collect()
    }

    /// Bytes held by the links (the vectors are the index's).
    pub fn memory_bytes(&self) -> usize {
        self.links0.len() * 4
            + self.len0.len() * 2
            + self.levels.len()
            + self
                .upper
                .iter()
                .map(|u| 24 + u.iter().map(|l| 24 + l.len() * 4).sum::<usize>())
                .sum::<usize>()
    }
}

/// Results heap helper for [`crate::search_layer`]: the worst result on top.
pub(crate) type Results = BinaryHeap<Scored>;
