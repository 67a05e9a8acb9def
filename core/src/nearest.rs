//! Exact nearest neighbours by cosine (dot products of unit rows): the reference every
//! approximate search is measured against, the index's scan for selective filters, and the
//! kNN of the retrieval metrics.

use crate::dot::dot;

/// Exact top-k by cosine (dot on normalised rows): (gallery index, similarity), best first;
/// ties go to the lower index.
pub fn topk(
    query: &[f32],
    gallery: &[f32],
    dim: usize,
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<(usize, f32)> {
    let n = gallery.len() / dim.max(1);
    if k > 0 && k.saturating_mul(8) < n {
        return topk_small(query, gallery, dim, k, keep);
    }
    let mut sims: Vec<(usize, f32)> = gallery
        .chunks_exact(dim)
        .enumerate()
        .filter(|(j, _)| keep(*j))
        .map(|(j, g)| (j, dot(query, g)))
        .collect();
    let k = k.min(sims.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < sims.len() {
        sims.select_nth_unstable_by(k - 1, cmp);
        sims.truncate(k);
    }
    sims.sort_by(cmp);
    sims
}

/// [`topk`] for k much smaller than the gallery: one pass with a k-sized heap, no per-row
/// allocation (an exact search is then bound by memory bandwidth).
fn topk_small(
    query: &[f32],
    gallery: &[f32],
    dim: usize,
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<(usize, f32)> {
    /// Worst kept result on top of the heap: lower similarity, then higher index.
    #[derive(PartialEq)]
    struct Kept(f32, usize);
    impl Eq for Kept {}
    impl PartialOrd for Kept {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Kept {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
        }
    }
    let mut heap = std::collections::BinaryHeap::with_capacity(k + 1);
    let mut offer = |s: f32, j: usize| {
        if heap.len() < k {
            heap.push(Kept(s, j));
        } else if heap.peek().is_some_and(|w: &Kept| s > w.0) {
            heap.pop();
            heap.push(Kept(s, j));
        }
    };
    let rows = gallery.len() / dim;
    let mut j = 0;
    while j + 4 <= rows {
        let r = |i: usize| &gallery[i * dim..(i + 1) * dim];
        let sims = crate::dot::dot4(query, [r(j), r(j + 1), r(j + 2), r(j + 3)]);
        for (o, s) in sims.into_iter().enumerate() {
            if keep(j + o) {
                offer(s, j + o);
            }
        }
        j += 4;
    }
    for j in j..rows {
        if keep(j) {
            offer(dot(query, &gallery[j * dim..(j + 1) * dim]), j);
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|Kept(s, j)| (j, s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_k_heap_agrees_with_the_full_sort_ties_included() {
        // 3-d rows from a few values: many exact ties
        let g: Vec<f32> = (0..600).map(|i| ((i * 7919) % 5) as f32 - 2.0).collect();
        let q = [0.5, -1.0, 0.25];
        for k in [1, 5, 10, 24] {
            let keep = |j: usize| j % 3 != 1;
            let small = topk_small(&q, &g, 3, k, keep);
            let mut all: Vec<(usize, f32)> = (0..200)
                .filter(|&j| keep(j))
                .map(|j| (j, dot(&q, &g[j * 3..j * 3 + 3])))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            assert_eq!(small, all, "k {k}");
            assert_eq!(topk(&q, &g, 3, k, keep), all, "k {k} through topk");
        }
    }
}
