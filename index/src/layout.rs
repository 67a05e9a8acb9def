//! The atlas as a map: 2-D coordinates for every cell, from the HNSW graph the index already has.
//!
//! A lab wants to see its whole collection at a glance and pick groups from it. The trainer's
//! t-SNE is quadratic in the cells; this layout is linear. It reuses the graph's layer-0 links
//! (each cell's nearest, diverse neighbours, chosen by the HNSW heuristic) as the kNN graph of
//! a LargeVis / UMAP-style embedding: start from the two principal axes of the embeddings (so
//! the map's global shape is the data's, and a rerun is the same map), then, for every link,
//! pull the two cells together and push the first from a few random cells, with the Cauchy
//! kernel `1 / (1 + d²)` and a learning rate falling to zero. The work is `cells x links x
//! (1 + negatives) x epochs`, with the epochs capped so that 10^6 cells take about as long as
//! the graph itself took to build.
//!
//! Edits keep the map: a removed cell keeps its place and is not drawn; `add` places each new
//! cell at the mean of its linked cells' places and refines only the new cells
//! ([`place_new`]); `compact` keeps every remaining cell's place.

use std::borrow::Cow;

/// Layer-0 links used per cell.
pub const LINKS_PER_CELL: usize = 10;
/// Random cells each link's first cell is pushed from.
const NEGATIVES: usize = 4;
/// Repulsion weight (UMAP's γ).
const GAMMA: f32 = 1.0;
/// Most epochs (small atlases) and fewest (10^6 cells).
const MAX_EPOCHS: usize = 200;
const MIN_EPOCHS: usize = 30;
/// Link updates (attraction and negatives) the epochs are capped by.
const UPDATE_BUDGET: f64 = 6e8;
/// Epochs that refine the cells `add` placed.
const PLACE_EPOCHS: usize = 60;
/// The map's coordinates have this standard deviation after the principal-axes start.
const INIT_SPREAD: f32 = 10.0;

/// What the layout reads of an index: which rows are live, their links and their vectors.
pub trait Cells {
    /// Rows, removed ones included.
    fn rows(&self) -> usize;
    fn live(&self, i: usize) -> bool;
    fn links(&self, i: usize) -> &[u32];
    fn vector(&self, i: usize) -> Cow<'_, [f32]>;
}

/// Coordinates of every row (removed rows too: they keep a place, not drawn).
pub fn layout(cells: &dyn Cells, seed: u64) -> Vec<[f32; 2]> {
    let mut y = principal_axes(cells);
    let edges = edges(cells, |_| true);
    let updates = edges.len() as f64 * (1 + NEGATIVES) as f64;
    let epochs = ((UPDATE_BUDGET / updates.max(1.0)) as usize).clamp(MIN_EPOCHS, MAX_EPOCHS);
    let live: Vec<u32> = (0..cells.rows())
        .filter(|&i| cells.live(i))
        .map(|i| i as u32)
        .collect();
    optimise(&mut y, &edges, &live, epochs, seed, &|_| true);
    y
}

/// Places for rows `from..` (appended after `map` was made), leaving every earlier place as it
/// is: each new row starts at the mean of its linked rows that have a place, then only the new
/// rows move.
pub fn place_new(cells: &dyn Cells, map: &[[f32; 2]], seed: u64) -> Vec<[f32; 2]> {
    let from = map.len();
    let mut y = map.to_vec();
    for i in from..cells.rows() {
        let placed: Vec<[f32; 2]> = cells
            .links(i)
            .iter()
            .map(|&j| j as usize)
            .filter(|&j| j < y.len())
            .map(|j| y[j])
            .collect();
        let n = placed.len().max(1) as f32;
        let mean = placed
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
        // a small offset per row so that rows with the same neighbours do not coincide
        let r = unit(seed ^ i as u64);
        y.push([mean[0] + r[0] * 0.1, mean[1] + r[1] * 0.1]);
    }
    let edges = edges(cells, |i| i >= from);
    let live: Vec<u32> = (0..cells.rows())
        .filter(|&i| cells.live(i))
        .map(|i| i as u32)
        .collect();
    optimise(&mut y, &edges, &live, PLACE_EPOCHS, seed, &|i| i >= from);
    y
}

/// The (live, live) links of the rows `keep` selects, each at most once per direction.
fn edges(cells: &dyn Cells, keep: impl Fn(usize) -> bool) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for i in (0..cells.rows()).filter(|&i| keep(i) && cells.live(i)) {
        for &j in cells.links(i).iter().take(LINKS_PER_CELL) {
            if (j as usize) < cells.rows() && cells.live(j as usize) && j as usize != i {
                out.push((i as u32, j));
            }
        }
    }
    out
}

/// SGD over the links: attraction along each, repulsion from random live rows; only rows
/// `moves` selects are moved.
fn optimise(
    y: &mut [[f32; 2]],
    edges: &[(u32, u32)],
    live: &[u32],
    epochs: usize,
    seed: u64,
    moves: &dyn Fn(usize) -> bool,
) {
    if live.len() < 2 || edges.is_empty() {
        return;
    }
    let mut rng = seed | 1;
    for epoch in 0..epochs {
        let lr = 1.0 - epoch as f32 / epochs as f32;
        for &(i, j) in edges {
            let (i, j) = (i as usize, j as usize);
            let d = [y[i][0] - y[j][0], y[i][1] - y[j][1]];
            let d2 = d[0] * d[0] + d[1] * d[1];
            let c = -2.0 / (1.0 + d2);
            let g = [clip(c * d[0]) * lr, clip(c * d[1]) * lr];
            if moves(i) {
                y[i] = [y[i][0] + g[0], y[i][1] + g[1]];
            }
            if moves(j) {
                y[j] = [y[j][0] - g[0], y[j][1] - g[1]];
            }
            if !moves(i) {
                continue;
            }
            for _ in 0..NEGATIVES {
                rng = xorshift(rng);
                let k = live[(rng % live.len() as u64) as usize] as usize;
                if k == i {
                    continue;
                }
                let d = [y[i][0] - y[k][0], y[i][1] - y[k][1]];
                let d2 = d[0] * d[0] + d[1] * d[1];
                let c = 2.0 * GAMMA / ((0.001 + d2) * (1.0 + d2));
                y[i] = [y[i][0] + clip(c * d[0]) * lr, y[i][1] + clip(c * d[1]) * lr];
            }
        }
    }
}

fn clip(x: f32) -> f32 {
    x.clamp(-4.0, 4.0)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A point of the unit square's centred copy, from a seed.
fn unit(seed: u64) -> [f32; 2] {
    let h = cellspace_core::hash::splitmix64(seed);
    let f = |b: u64| (b & 0xffff) as f32 / 65535.0 - 0.5;
    [f(h), f(h >> 16)]
}

/// Each row's projection on the live rows' two principal axes (block power iteration on the
/// covariance, one pass over the vectors per step), scaled to [`INIT_SPREAD`].
fn principal_axes(cells: &dyn Cells) -> Vec<[f32; 2]> {
    let n = cells.rows();
    let live: Vec<usize> = (0..n).filter(|&i| cells.live(i)).collect();
    let Some(&first) = live.first() else {
        return vec![[0.0, 0.0]; n];
    };
    let dim = cells.vector(first).len();
    let mut mean = vec![0f64; dim];
    for &i in &live {
        for (m, x) in mean.iter_mut().zip(cells.vector(i).iter()) {
            *m += *x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= live.len() as f64);
    // two fixed, different start directions: the same map on every run
    let mut q: [Vec<f64>; 2] = [
        (0..dim).map(|d| 1.0 + (d % 7) as f64).collect(),
        (0..dim)
            .map(|d| if d % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
    ];
    orthonormalise(&mut q);
    for _ in 0..8 {
        let mut next = [vec![0f64; dim], vec![0f64; dim]];
        for &i in &live {
            let v = cells.vector(i);
            let c: Vec<f64> = v.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect();
            for (a, qa) in q.iter().enumerate() {
                let p: f64 = c.iter().zip(qa).map(|(x, y)| x * y).sum();
                for (o, x) in next[a].iter_mut().zip(&c) {
                    *o += p * x;
                }
            }
        }
        q = next;
        orthonormalise(&mut q);
    }
    let mut y: Vec<[f32; 2]> = (0..n)
        .map(|i| {
            let v = cells.vector(i);
            let p = |qa: &[f64]| -> f32 {
                v.iter()
                    .zip(&mean)
                    .zip(qa)
                    .map(|((x, m), q)| (*x as f64 - m) * q)
                    .sum::<f64>() as f32
            };
            [p(&q[0]), p(&q[1])]
        })
        .collect();
    let var: f32 = live
        .iter()
        .map(|&i| y[i][0] * y[i][0] + y[i][1] * y[i][1])
        .sum::<f32>()
        / (2 * live.len()) as f32;
    let s = if var > 1e-12 {
        INIT_SPREAD / var.sqrt()
    } else {
        1.0
    };
    for (i, p) in y.iter_mut().enumerate() {
        // cells with one vector (copies) start apart, or attraction has no direction
        let r = unit(i as u64);
        *p = [p[0] * s + r[0] * 0.01, p[1] * s + r[1] * 0.01];
    }
    y
}

/// Gram-Schmidt on two vectors (a zero vector stays zero).
fn orthonormalise(q: &mut [Vec<f64>; 2]) {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let n0 = norm(&q[0]);
    if n0 > 0.0 {
        q[0].iter_mut().for_each(|x| *x /= n0);
    }
    let p: f64 = q[0].iter().zip(&q[1]).map(|(a, b)| a * b).sum();
    let (a, b) = (q[0].clone(), &mut q[1]);
    for (x, y) in b.iter_mut().zip(&a) {
        *x -= p * y;
    }
    let n1 = norm(b);
    if n1 > 0.0 {
        b.iter_mut().for_each(|x| *x /= n1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight groups in 8-d, with each cell linked to its nearest others of any group.
    struct Toy {
        vectors: Vec<Vec<f32>>,
        links: Vec<Vec<u32>>,
        removed: Vec<bool>,
    }

    impl Toy {
        fn new(per: usize) -> Self {
            let mut vectors = Vec::new();
            for g in 0..3 {
                for k in 0..per {
                    let mut v = vec![0f32; 8];
                    v[g] = 1.0;
                    v[3 + k % 5] += 0.05 * (k as f32 / per as f32);
                    vectors.push(v);
                }
            }
            let n = vectors.len();
            let dist = |a: &[f32], b: &[f32]| -> f32 {
                a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
            };
            let links = (0..n)
                .map(|i| {
                    let mut by: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                    by.sort_by(|&a, &b| {
                        dist(&vectors[i], &vectors[a]).total_cmp(&dist(&vectors[i], &vectors[b]))
                    });
                    by.into_iter().take(8).map(|j| j as u32).collect()
                })
                .collect();
            Self {
                vectors,
                links,
                removed: vec![false; n],
            }
        }
    }

    impl Cells for Toy {
        fn rows(&self) -> usize {
            self.vectors.len()
        }
        fn live(&self, i: usize) -> bool {
            !self.removed[i]
        }
        fn links(&self, i: usize) -> &[u32] {
            &self.links[i]
        }
        fn vector(&self, i: usize) -> Cow<'_, [f32]> {
            Cow::Borrowed(&self.vectors[i])
        }
    }

    fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    /// Cells of one group lie closer to each other than to any other group's, on the map.
    fn groups_separate(y: &[[f32; 2]], per: usize) -> bool {
        let centre = |g: usize| {
            let s = y[g * per..(g + 1) * per]
                .iter()
                .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
            [s[0] / per as f32, s[1] / per as f32]
        };
        let c: Vec<[f32; 2]> = (0..3).map(centre).collect();
        (0..3 * per).all(|i| {
            let g = i / per;
            (0..3).all(|h| h == g || dist(y[i], c[g]) < dist(y[i], c[h]))
        })
    }

    #[test]
    fn groups_of_the_embedding_are_groups_on_the_map_and_the_map_repeats() {
        let toy = Toy::new(40);
        let y = layout(&toy, 7);
        assert_eq!(y.len(), 120);
        assert!(y.iter().flatten().all(|v| v.is_finite()));
        assert!(groups_separate(&y, 40));
        assert_eq!(layout(&toy, 7), y, "the same index gives the same map");
    }

    #[test]
    fn new_cells_land_among_their_neighbours_and_old_ones_stay() {
        let toy = Toy::new(40);
        let mut first = Toy::new(40);
        // the map of the first 100 rows, then 20 more appended (the last group's tail)
        first.vectors.truncate(100);
        first.removed.truncate(100);
        first.links = first
            .links
            .iter()
            .take(100)
            .map(|l| l.iter().copied().filter(|&j| j < 100).collect())
            .collect();
        let before = layout(&first, 3);
        let after = place_new(&toy, &before, 3);
        assert_eq!(&after[..100], &before[..], "placed cells do not move");
        assert!(groups_separate(&after, 40), "new cells join their group");
    }

    #[test]
    fn removed_cells_keep_a_place_and_pull_nothing() {
        let mut toy = Toy::new(30);
        toy.removed[5] = true;
        let y = layout(&toy, 1);
        assert!(y[5].iter().all(|v| v.is_finite()));
        assert!(groups_separate(&y, 30));
    }
}
