//! Retrieval quality of an embedding, measured with labels (never used to train):
//! kNN accuracy (k=11 majority, k=200 weighted by exp(sim/0.1)), precision@1, MAP@R and
//! k-means NMI. `trainer eval`, the trainer's per-epoch validation and `index eval` all print
//! [`RetrievalReport`] from [`evaluate`], so their numbers are comparable.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A set of L2-normalised embeddings with labels and (optionally) source groups.
#[derive(Debug, Clone, Copy)]
pub struct Labeled<'a> {
    /// Row-major `[n, dim]`.
    pub emb: &'a [f32],
    pub dim: usize,
    pub labels: &'a [String],
    pub groups: Option<&'a [String]>,
}

impl Labeled<'_> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.emb[i * self.dim..(i + 1) * self.dim]
    }
}

/// Which gallery items a query may not retrieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exclude {
    /// Nothing is excluded (query and gallery are different sets of cells).
    Nothing,
    /// Query and gallery are the same set: an item never retrieves itself.
    SelfMatch,
    /// Same set, and no item retrieves another copy of the same original cell.
    SameGroup,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    pub n_query: usize,
    pub n_gallery: usize,
    pub knn11_acc: f64,
    pub knn200_acc: f64,
    pub precision_at_1: f64,
    pub map_at_r: f64,
    pub kmeans_nmi: f64,
    /// Adjusted Rand index of the same k-means clusters ([`ari`]).
    #[serde(default)]
    pub kmeans_ari: f64,
    /// kNN-11 and kNN-200 accuracy averaged over classes (mean per-class recall), so a
    /// class with more copies weighs no more than another.
    #[serde(default)]
    pub knn11_balanced: f64,
    #[serde(default)]
    pub knn200_balanced: f64,
    /// Accuracy per original cell: the majority of its copies' kNN-200 votes against the
    /// cell's class, averaged over originals (needs the queries' source groups; 0 without).
    #[serde(default)]
    pub per_original_acc: f64,
    /// Originals among the queries (0 when the groups are unknown).
    #[serde(default)]
    pub n_originals: usize,
}

impl RetrievalReport {
    /// Each field of `reports` reduced by `f` (a mean, an SD): the counts take its rounded
    /// figure. Every field is listed (no `..`), so a new one cannot be left out.
    pub fn combine(reports: &[RetrievalReport], f: impl Fn(&[f64]) -> f64) -> RetrievalReport {
        let col = |g: fn(&RetrievalReport) -> f64| f(&reports.iter().map(g).collect::<Vec<_>>());
        let count = |g: fn(&RetrievalReport) -> f64| col(g).round().max(0.0) as usize;
        RetrievalReport {
            n_query: count(|r| r.n_query as f64),
            n_gallery: count(|r| r.n_gallery as f64),
            knn11_acc: col(|r| r.knn11_acc),
            knn200_acc: col(|r| r.knn200_acc),
            precision_at_1: col(|r| r.precision_at_1),
            map_at_r: col(|r| r.map_at_r),
            kmeans_nmi: col(|r| r.kmeans_nmi),
            kmeans_ari: col(|r| r.kmeans_ari),
            knn11_balanced: col(|r| r.knn11_balanced),
            knn200_balanced: col(|r| r.knn200_balanced),
            per_original_acc: col(|r| r.per_original_acc),
            n_originals: count(|r| r.n_originals as f64),
        }
    }
}

/// Dot product ([`crate::dot::dot`]: vectorised).
pub use crate::dot::dot;

/// Exact top-k ([`crate::nearest::topk`]).
pub use crate::nearest::topk;

/// The kNN-200 vote ([`crate::classify::weighted_vote`]).
pub use crate::classify::weighted_vote;

/// Measure how well `query` items retrieve gallery items of their own class.
pub fn evaluate(
    gallery: &Labeled,
    query: &Labeled,
    exclude: Exclude,
    seed: u64,
) -> RetrievalReport {
    assert_eq!(gallery.dim, query.dim, "dimension mismatch");
    let dim = gallery.dim;
    let per_query: Vec<QueryScore> = (0..query.len())
        .into_par_iter()
        .map(|i| score_query(gallery, query, i, exclude))
        .collect();
    let n = per_query.len().max(1) as f64;
    let right = |p: Option<&str>, i: usize| (p == Some(query.labels[i].as_str())) as u8 as f64;
    let knn11: Vec<f64> = per_query
        .iter()
        .enumerate()
        .map(|(i, t)| right(t.knn11, i))
        .collect();
    let knn200: Vec<f64> = per_query
        .iter()
        .enumerate()
        .map(|(i, t)| right(t.knn200, i))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
    let n_classes = {
        let mut v: Vec<&String> = query.labels.iter().collect();
        v.sort();
        v.dedup();
        v.len()
    };
    let clusters = kmeans(query.emb, dim, n_classes.max(1), 50, seed);
    let (per_original_acc, n_originals) = match query.groups {
        Some(groups) => {
            let votes: Vec<Option<&str>> = per_query.iter().map(|t| t.knn200).collect();
            per_original(&votes, query.labels, groups)
        }
        None => (0.0, 0),
    };
    RetrievalReport {
        n_query: query.len(),
        n_gallery: gallery.len(),
        knn11_acc: mean(&knn11),
        knn200_acc: mean(&knn200),
        precision_at_1: per_query.iter().map(|t| t.p1).sum::<f64>() / n,
        map_at_r: per_query.iter().map(|t| t.map_r).sum::<f64>() / n,
        kmeans_nmi: nmi(&clusters, query.labels),
        kmeans_ari: ari(&clusters, query.labels),
        knn11_balanced: balanced(&knn11, query.labels),
        knn200_balanced: balanced(&knn200, query.labels),
        per_original_acc,
        n_originals,
    }
}

/// One query's votes and scores.
#[derive(Default)]
struct QueryScore<'a> {
    knn11: Option<&'a str>,
    knn200: Option<&'a str>,
    p1: f64,
    map_r: f64,
}

/// Query `i` against the gallery, without the items `exclude` keeps out of its answers.
fn score_query<'a>(
    gallery: &Labeled<'a>,
    query: &Labeled,
    i: usize,
    exclude: Exclude,
) -> QueryScore<'a> {
    let q = query.row(i);
    let qg = query.groups.map(|g| g[i].as_str());
    let keep = |j: usize| match exclude {
        Exclude::Nothing => true,
        Exclude::SelfMatch => j != i,
        Exclude::SameGroup => {
            j != i
                && match (qg, gallery.groups) {
                    (Some(a), Some(gs)) => gs[j] != a,
                    _ => true,
                }
        }
    };
    let label = query.labels[i].as_str();
    // R = relevant items that may be retrieved
    let r = (0..gallery.len())
        .filter(|&j| keep(j) && gallery.labels[j] == label)
        .count();
    let nn = topk(q, gallery.emb, gallery.dim, r.max(200), keep);
    if nn.is_empty() {
        return QueryScore::default();
    }
    let mut hits = 0usize;
    let mut ap = 0.0;
    for (rank, &(j, _)) in nn.iter().take(r).enumerate() {
        if gallery.labels[j] == label {
            hits += 1;
            ap += hits as f64 / (rank + 1) as f64;
        }
    }
    QueryScore {
        knn11: majority(nn.iter().take(11).map(|&(j, _)| gallery.labels[j].as_str())),
        knn200: weighted_vote(&nn[..nn.len().min(200)], gallery.labels).map(|v| v.class),
        p1: (gallery.labels[nn[0].0] == label) as u8 as f64,
        map_r: if r > 0 { ap / r as f64 } else { 0.0 },
    }
}

/// Mean over classes of the mean of `right` within the class.
pub(crate) fn balanced(right: &[f64], labels: &[String]) -> f64 {
    let mut by: HashMap<&str, (f64, f64)> = HashMap::new();
    for (r, l) in right.iter().zip(labels) {
        let e = by.entry(l.as_str()).or_default();
        e.0 += r;
        e.1 += 1.0;
    }
    if by.is_empty() {
        return 0.0;
    }
    by.values().map(|(s, c)| s / c).sum::<f64>() / by.len() as f64
}

/// Majority of a label per group (ties: the smaller label, so the result is deterministic).
fn majority<'a>(items: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for l in items {
        *count.entry(l).or_default() += 1;
    }
    count
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(l, _)| l)
}

/// Accuracy per original cell: the majority vote of its copies' predictions against the
/// majority class of its copies. Returns (accuracy, number of originals).
pub fn per_original(
    predicted: &[Option<&str>],
    labels: &[String],
    groups: &[String],
) -> (f64, usize) {
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        members.entry(g.as_str()).or_default().push(i);
    }
    let right = members
        .values()
        .filter(|idx| {
            let truth = majority(idx.iter().map(|&i| labels[i].as_str()));
            let vote = majority(idx.iter().filter_map(|&i| predicted[i]));
            vote.is_some() && vote == truth
        })
        .count();
    (right as f64 / members.len().max(1) as f64, members.len())
}

/// [`evaluate`] for queries of other cells than the gallery's (nothing excluded): the
/// held-out validation, cross-validation, `index eval` and the baselines all measure this
/// way. `query_groups` (the queries' originals) adds the accuracy per original cell.
pub fn evaluate_unseen(
    gallery: &[f32],
    gallery_labels: &[String],
    query: &[f32],
    query_labels: &[String],
    query_groups: Option<&[String]>,
    dim: usize,
    seed: u64,
) -> RetrievalReport {
    evaluate(
        &Labeled {
            emb: gallery,
            dim,
            labels: gallery_labels,
            groups: None,
        },
        &Labeled {
            emb: query,
            dim,
            labels: query_labels,
            groups: query_groups,
        },
        Exclude::Nothing,
        seed,
    )
}

/// Lloyd's k-means with k-means++ seeding; returns the cluster of each row.
pub fn kmeans(data: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Vec<usize> {
    let n = data.len() / dim.max(1);
    if n == 0 {
        return Vec::new();
    }
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let d2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut centers: Vec<Vec<f32>> = vec![row(rng.random_range(0..n)).to_vec()];
    while centers.len() < k.min(n) {
        let dist: Vec<f32> = (0..n)
            .map(|i| {
                centers
                    .iter()
                    .map(|c| d2(row(i), c))
                    .fold(f32::MAX, f32::min)
            })
            .collect();
        let total: f32 = dist.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut t = rng.random::<f32>() * total;
        let mut pick = n - 1;
        for (i, d) in dist.iter().enumerate() {
            t -= d;
            if t <= 0.0 {
                pick = i;
                break;
            }
        }
        centers.push(row(pick).to_vec());
    }
    let mut assign = vec![0usize; n];
    for _ in 0..iters {
        let new: Vec<usize> = (0..n)
            .into_par_iter()
            .map(|i| {
                (0..centers.len())
                    .min_by(|&a, &b| d2(row(i), &centers[a]).total_cmp(&d2(row(i), &centers[b])))
                    .unwrap_or(0)
            })
            .collect();
        let changed = new != assign;
        assign = new;
        let mut sums = vec![vec![0f32; dim]; centers.len()];
        let mut counts = vec![0usize; centers.len()];
        for (i, &c) in assign.iter().enumerate() {
            counts[c] += 1;
            sums[c].iter_mut().zip(row(i)).for_each(|(s, x)| *s += x);
        }
        for (c, s) in sums.into_iter().enumerate() {
            if counts[c] > 0 {
                centers[c] = s.into_iter().map(|x| x / counts[c] as f32).collect();
            }
        }
        if !changed {
            break;
        }
    }
    assign
}

/// Normalised mutual information (arithmetic-mean normalisation, as scikit-learn's default).
pub fn nmi(clusters: &[usize], labels: &[String]) -> f64 {
    let n = clusters.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let mut joint: HashMap<(usize, &str), f64> = HashMap::new();
    let mut pc: HashMap<usize, f64> = HashMap::new();
    let mut pl: HashMap<&str, f64> = HashMap::new();
    for (c, l) in clusters.iter().zip(labels) {
        *joint.entry((*c, l.as_str())).or_default() += 1.0;
        *pc.entry(*c).or_default() += 1.0;
        *pl.entry(l.as_str()).or_default() += 1.0;
    }
    let h = |m: &dyn Fn() -> Vec<f64>| -m().iter().map(|&c| (c / n) * (c / n).ln()).sum::<f64>();
    let hc = h(&|| pc.values().copied().collect());
    let hl = h(&|| pl.values().copied().collect());
    let mi: f64 = joint
        .iter()
        .map(|(&(c, l), &v)| (v / n) * ((v * n) / (pc[&c] * pl[l])).ln())
        .sum();
    if hc + hl == 0.0 {
        1.0
    } else {
        (2.0 * mi / (hc + hl)).clamp(0.0, 1.0)
    }
}

/// Adjusted Rand index of a clustering against labels (Hubert and Arabie 1985): 1 for the
/// same partition, about 0 for a random one.
pub fn ari(clusters: &[usize], labels: &[String]) -> f64 {
    let n = clusters.len() as f64;
    let pairs = |x: f64| x * (x - 1.0) / 2.0;
    let mut joint: HashMap<(usize, &str), f64> = HashMap::new();
    let mut pc: HashMap<usize, f64> = HashMap::new();
    let mut pl: HashMap<&str, f64> = HashMap::new();
    for (c, l) in clusters.iter().zip(labels) {
        *joint.entry((*c, l.as_str())).or_default() += 1.0;
        *pc.entry(*c).or_default() += 1.0;
        *pl.entry(l.as_str()).or_default() += 1.0;
    }
    let index: f64 = joint.values().map(|&v| pairs(v)).sum();
    let a: f64 = pc.values().map(|&v| pairs(v)).sum();
    let b: f64 = pl.values().map(|&v| pairs(v)).sum();
    let expected = a * b / pairs(n).max(1.0);
    let max = (a + b) / 2.0;
    if (max - expected).abs() < 1e-12 {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_is_one_for_the_same_partition_and_near_zero_for_an_unrelated_one() {
        let l: Vec<String> = ["a", "a", "b", "b", "c", "c"].map(String::from).to_vec();
        assert!((ari(&[5, 5, 1, 1, 2, 2], &l) - 1.0).abs() < 1e-12);
        // by hand: 1 agreeing pair of 3 within clusters, expected 0.6 -> (1 - 0.6) / (3 - 0.6)
        assert!((ari(&[0, 0, 1, 2, 1, 2], &l) - 1.0 / 6.0).abs() < 1e-9);
        assert!(ari(&[0, 1, 0, 1, 0, 1], &l) < 0.0);
    }

    fn set(points: &[[f32; 2]], labels: &[&str]) -> (Vec<f32>, Vec<String>) {
        let mut e: Vec<f32> = points.iter().flatten().copied().collect();
        for r in e.chunks_mut(2) {
            crate::l2_normalize(r);
        }
        (e, labels.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn perfect_and_inverted_retrieval() {
        let (e, l) = set(
            &[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]],
            &["a", "a", "b", "b"],
        );
        let s = Labeled {
            emb: &e,
            dim: 2,
            labels: &l,
            groups: None,
        };
        let r = evaluate(&s, &s, Exclude::SelfMatch, 1);
        assert_eq!(r.precision_at_1, 1.0);
        assert_eq!(r.map_at_r, 1.0);
        assert!((r.kmeans_nmi - 1.0).abs() < 1e-9);
        // each item's only same-class neighbour is in its group: excluded, so P@1 drops to 0
        let g: Vec<String> = ["x", "x", "y", "y"].iter().map(|s| s.to_string()).collect();
        let s = Labeled {
            groups: Some(&g),
            ..s
        };
        let r = evaluate(&s, &s, Exclude::SameGroup, 1);
        assert_eq!(r.precision_at_1, 0.0);
    }

    #[test]
    fn balanced_and_per_original_accuracy() {
        // three "a" queries right, one "b" query wrong: plain 0.75, balanced (1 + 0) / 2
        let right = [1.0, 1.0, 1.0, 0.0];
        let labels: Vec<String> = ["a", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert!((balanced(&right, &labels) - 0.5).abs() < 1e-12);
        // original x: 2 of 3 copies voted right -> right; original y: its one copy wrong
        let groups: Vec<String> = ["x", "x", "x", "y"].iter().map(|s| s.to_string()).collect();
        let pred = [Some("a"), Some("b"), Some("a"), Some("a")];
        assert_eq!(per_original(&pred, &labels, &groups), (0.5, 2));
    }

    #[test]
    fn map_at_r_hand_computed() {
        // query a; gallery ranks: a(1.0), b(0.8), a(0.6) -> R=2, only ranks 1..=R count:
        // MAP@R = (P(1)*1 + P(2)*0) / 2 = 0.5 (plain AP would be (1 + 2/3) / 2)
        let g = vec![1.0, 0.0, 0.8, 0.6, 0.6, 0.8];
        let gl: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        let q = vec![1.0, 0.0];
        let ql = vec!["a".to_string()];
        let r = evaluate(
            &Labeled {
                emb: &g,
                dim: 2,
                labels: &gl,
                groups: None,
            },
            &Labeled {
                emb: &q,
                dim: 2,
                labels: &ql,
                groups: None,
            },
            Exclude::Nothing,
            0,
        );
        assert!((r.map_at_r - 0.5).abs() < 1e-9);
        assert_eq!(r.precision_at_1, 1.0);
    }
}
