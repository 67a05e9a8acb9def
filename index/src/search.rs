//! [`CellIndex::search`]: the k most similar cells that a [`Filter`] allows.
//!
//! The filter runs inside the HNSW search ([`crate::graph`]), so removed rows and rows
//! that fail a condition never take a result slot. When few rows match (under
//! [`EXACT_BELOW_ROWS`] rows or 1/[`EXACT_BELOW_SHARE`] of the index) a graph walk would mostly
//! visit rows it must skip, so those rows are scanned exactly instead. Whenever the graph
//! returns fewer than k allowed cells although k exist, the exact scan answers: a filtered
//! query always returns k results when k rows (k distinct cells with `distinct`) match.

use crate::Result;
use crate::cellindex::{CellIndex, Hit};
use crate::filter::Filter;

/// Filters matching at most this many rows are answered by exact search.
pub const EXACT_BELOW_ROWS: usize = 2048;
/// ... or at most this share (1/N) of the index.
pub const EXACT_BELOW_SHARE: usize = 20;

impl CellIndex {
    /// The `k` most similar cells that `filter` allows, best first. `ef` overrides the index's
    /// default search breadth.
    pub fn search(
        &self,
        query: &[f32],
        filter: &Filter,
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Hit>> {
        Ok(self.hits(self.search_ids(query, filter, k, ef)?))
    }

    /// [`CellIndex::search`] as (row id, similarity) pairs, without the rows' fields.
    pub fn search_ids(
        &self,
        query: &[f32],
        filter: &Filter,
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<(usize, f32)>> {
        crate::cellindex::check_dim(&self.model, query)?;
        let g = &self.graph;
        if g.is_empty() {
            return Ok(Vec::new());
        }
        let allowed = if filter.conditions.is_empty() {
            let excluded = filter.exclude.iter();
            self.live()
                - excluded
                    .filter(|&&i| i < self.len() && !self.rows[i].removed)
                    .count()
        } else {
            (0..self.len())
                .filter(|&i| filter.allows(i, &self.rows[i]))
                .count()
        };
        let k = k.min(allowed);
        if k == 0 {
            return Ok(Vec::new());
        }
        let selective =
            allowed <= EXACT_BELOW_ROWS || allowed.saturating_mul(EXACT_BELOW_SHARE) < self.len();
        if !selective {
            let allows = |id: u32| filter.allows(id as usize, &self.rows[id as usize]);
            let all_live = filter.is_open() && allowed == self.len();
            let mut fetch = if filter.distinct {
                (k * 4).min(allowed)
            } else {
                k
            };
            loop {
                let ef = ef.unwrap_or(self.params.hnsw.ef_search).max(fetch);
                let allow: Option<&dyn Fn(u32) -> bool> =
                    if all_live { None } else { Some(&allows) };
                // the int8 store re-ranks the whole beam with exact rows
                let want = if self.vectors.as_f32().is_some() {
                    fetch
                } else {
                    ef
                };
                let found = self.rerank(query, g.search(&self.vectors, query, want, ef, allow))?;
                let kept = self.distinct(found, filter.distinct, k);
                if kept.len() >= k {
                    return Ok(kept);
                }
                if fetch >= allowed {
                    break; // the graph could not reach k allowed cells: scan them
                }
                fetch = (fetch * 2).min(allowed);
            }
        }
        let n = if filter.distinct { allowed } else { k };
        let exact = self.scan(query, n, |i| filter.allows(i, &self.rows[i]))?;
        Ok(self.distinct(exact, filter.distinct, k))
    }

    /// The best `n` rows that `keep` accepts by a scan of every row: exact for the f32 store;
    /// for int8, the best `4 n` (at least 64) by their codes, re-ranked with exact rows.
    fn scan(
        &self,
        query: &[f32],
        n: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Result<Vec<(usize, f32)>> {
        let dim = self.model.dim;
        if let Some(all) = self.vectors.as_f32() {
            return Ok(cellspace_core::metrics::topk(query, all, dim, n, keep));
        }
        let Some((codes, _)) = self.vectors.codes() else {
            return Ok(Vec::new());
        };
        let prepared = self.vectors.prepare(query);
        let mut sims: Vec<(usize, f32)> = codes
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(i, c)| (i, cellspace_core::dot::dot_i8(&prepared, c)))
            .collect();
        let m = (4 * n).max(64).min(sims.len());
        if m < sims.len() && m > 0 {
            sims.select_nth_unstable_by(m - 1, |a, b| b.1.total_cmp(&a.1));
            sims.truncate(m);
        }
        let mut exact = self.rerank(query, sims)?;
        exact.truncate(n);
        Ok(exact)
    }

    /// Candidates scored exactly, best first (the f32 store's scores already are).
    fn rerank(&self, query: &[f32], found: Vec<(usize, f32)>) -> Result<Vec<(usize, f32)>> {
        if self.vectors.as_f32().is_some() {
            return Ok(found);
        }
        let mut exact = found
            .into_iter()
            .map(|(i, _)| Ok((i, cellspace_core::dot::dot(query, &self.vectors.row(i)?))))
            .collect::<Result<Vec<_>>>()?;
        exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(exact)
    }

    /// The first `k` of `found` (best first), one per original cell when `distinct`.
    fn distinct(&self, found: Vec<(usize, f32)>, distinct: bool, k: usize) -> Vec<(usize, f32)> {
        let mut seen = std::collections::HashSet::new();
        found
            .into_iter()
            .filter(|(id, _)| !distinct || seen.insert(self.rows[*id].cell_key()))
            .take(k)
            .collect()
    }

    fn hits(&self, found: Vec<(usize, f32)>) -> Vec<Hit> {
        found
            .into_iter()
            .enumerate()
            .map(|(rank, (id, similarity))| {
                let r = &self.rows[id];
                Hit {
                    rank: rank + 1,
                    id,
                    similarity,
                    path: r.path.clone(),
                    class: r.class.clone(),
                    group: r.group.clone(),
                    cell: r.cell,
                    meta: r.meta.clone(),
                }
            })
            .collect()
    }

    /// Top-k over the rows not removed by a scan of the store: exact on the f32 store; on the
    /// int8 store the codes' best, re-ranked with the exact rows (nearly, not always, the exact
    /// top-k: recall is measured against [`crate::ops::recall_at`]'s exact scan instead).
    pub fn scan_top(&self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        if self.n_removed == 0 {
            // no row to skip: do not touch the rows at all (bandwidth goes to the vectors)
            return self.scan(query, k, |_| true);
        }
        self.scan(query, k, |i| !self.rows[i].removed)
    }
}
