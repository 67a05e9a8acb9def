//! Few labels, then a class for every cell. A lab labels a handful of its cells; every other
//! cell gets the class its most similar labelled cells vote for, with a confidence (the
//! winning class's share of the vote). The vote is the one every retrieval figure here uses
//! ([`crate::metrics`]: the k most similar, weighted by `exp(sim / 0.1)`), so the few-label
//! accuracy and kNN-200 read on one scale.
//!
//! [`few_label_accuracy`] is the standard test of a self-supervised embedding: N labelled
//! originals per class drawn from the atlas (one copy each: a lab labels N different cells),
//! every unseen query cell classified from them, repeated over draws.

use crate::metrics::Labeled;
use crate::nearest::topk;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The temperature of the vote's weights (the same as kNN-200's).
pub const TEMPERATURE: f64 = 0.1;

/// A predicted class and its share of the vote, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote<'a> {
    pub class: &'a str,
    pub confidence: f64,
}

/// The weighted vote of neighbours `(row, similarity)` whose classes are `labels[row]`:
/// `None` without neighbours. Ties go to the smaller class name, so it is deterministic.
pub fn weighted_vote<'a>(nn: &[(usize, f32)], labels: &'a [String]) -> Option<Vote<'a>> {
    let mut score: HashMap<&str, f64> = HashMap::new();
    // weights relative to the best neighbour: exp(1 / 0.1) of the raw similarity would
    // overflow nothing, but the shares read the same and stay exact for any similarity
    let best = nn.first()?.1 as f64;
    for &(j, s) in nn {
        *score.entry(labels[j].as_str()).or_default() += ((s as f64 - best) / TEMPERATURE).exp();
    }
    let total: f64 = score.values().sum();
    let (class, w) = score
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(a.0)))?;
    Some(Vote {
        class,
        confidence: w / total,
    })
}

/// The class of `query` voted by the `k` most similar `labelled` rows that `keep` allows.
pub fn predict<'a>(
    query: &[f32],
    labelled: &Labeled<'a>,
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Option<Vote<'a>> {
    let nn = topk(query, labelled.emb, labelled.dim, k, keep);
    weighted_vote(&nn, labelled.labels)
}

/// Accuracy of classifying unseen cells from N labelled originals per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FewLabel {
    /// Labelled originals per class (fewer where a class has fewer in the atlas).
    pub per_class: usize,
    /// Draws of the labelled set.
    pub draws: usize,
    /// Accuracy over the query cells, mean and SD over the draws.
    pub accuracy: f64,
    pub accuracy_sd: f64,
    /// Accuracy averaged over classes (mean per-class recall), mean over the draws.
    pub balanced: f64,
}

/// Classify every `query` cell from `per_class` labelled originals per class of `atlas`
/// (one random copy of each; `atlas.groups` says which rows are copies of one original, and
/// without groups every row is its own original), `draws` times.
pub fn few_label_accuracy(
    atlas: &Labeled,
    query: &Labeled,
    per_class: usize,
    draws: usize,
    seed: u64,
) -> FewLabel {
    assert_eq!(atlas.dim, query.dim, "dimension mismatch");
    // class -> original -> its rows
    let mut originals: BTreeMap<&str, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
    for i in 0..atlas.len() {
        // without groups all of a class's rows sit under one key and are drawn singly
        let g = atlas.groups.map_or("", |g| g[i].as_str());
        originals
            .entry(atlas.labels[i].as_str())
            .or_default()
            .entry(g)
            .or_default()
            .push(i);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut accs = Vec::with_capacity(draws);
    let mut balanced = 0.0;
    for _ in 0..draws.max(1) {
        let chosen = draw(&originals, atlas.groups.is_some(), per_class, &mut rng);
        let (emb, labels): (Vec<f32>, Vec<String>) = {
            let mut e = Vec::with_capacity(chosen.len() * atlas.dim);
            let mut l = Vec::with_capacity(chosen.len());
            for &i in &chosen {
                e.extend_from_slice(atlas.row(i));
                l.push(atlas.labels[i].clone());
            }
            (e, l)
        };
        let labelled = Labeled {
            emb: &emb,
            dim: atlas.dim,
            labels: &labels,
            groups: None,
        };
        let right: Vec<f64> = (0..query.len())
            .map(|q| {
                let v = predict(query.row(q), &labelled, 200, |_| true);
                (v.map(|v| v.class) == Some(query.labels[q].as_str())) as u8 as f64
            })
            .collect();
        accs.push(right.iter().sum::<f64>() / right.len().max(1) as f64);
        balanced += crate::metrics::balanced(&right, query.labels);
    }
    let n = accs.len() as f64;
    let mean = accs.iter().sum::<f64>() / n;
    let var = accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    FewLabel {
        per_class,
        draws: accs.len(),
        accuracy: mean,
        accuracy_sd: var.sqrt(),
        balanced: balanced / n,
    }
}

/// One labelled set: `per_class` originals of each class, one random copy of each.
fn draw(
    originals: &BTreeMap<&str, BTreeMap<&str, Vec<usize>>>,
    grouped: bool,
    per_class: usize,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let mut chosen = Vec::new();
    for rows in originals.values() {
        if grouped {
            let mut groups: Vec<&Vec<usize>> = rows.values().collect();
            groups.shuffle(rng);
            for g in groups.into_iter().take(per_class) {
                chosen.push(g[rng.random_range(0..g.len())]);
            }
        } else {
            // ungrouped: every row is its own original
            let mut all: Vec<usize> = rows.values().flatten().copied().collect();
            all.shuffle(rng);
            chosen.extend(all.into_iter().take(per_class));
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_vote_weighs_the_closer_cells_and_says_how_sure_it_is() {
        let l = labels(&["a", "b", "b"]);
        // one very close "a" outweighs two farther "b"s at temperature 0.1
        let v = weighted_vote(&[(0, 0.95), (1, 0.70), (2, 0.70)], &l).unwrap();
        assert_eq!(v.class, "a");
        let expect = 1.0 / (1.0 + 2.0 * (-2.5f64).exp());
        assert!((v.confidence - expect).abs() < 1e-9, "{}", v.confidence);
        // equal similarity: the majority wins with two thirds of the vote
        let v = weighted_vote(&[(0, 0.8), (1, 0.8), (2, 0.8)], &l).unwrap();
        assert_eq!(v.class, "b");
        assert!((v.confidence - 2.0 / 3.0).abs() < 1e-9);
        assert!(weighted_vote(&[], &l).is_none());
    }

    /// Two classes in two directions, with copies of each original close together.
    fn clusters(n_orig: usize, copies: usize, noise: f32) -> (Vec<f32>, Vec<String>, Vec<String>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut e, mut l, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for o in 0..n_orig {
            let class = o % 2;
            let base = [
                if class == 0 { 1.0 } else { 0.2 } + rng.random_range(-noise..noise),
                if class == 1 { 1.0 } else { 0.2 } + rng.random_range(-noise..noise),
            ];
            for _ in 0..copies {
                let mut v = [
                    base[0] + rng.random_range(-0.05..0.05f32),
                    base[1] + rng.random_range(-0.05..0.05f32),
                ];
                crate::l2_normalize(&mut v);
                e.extend_from_slice(&v);
                l.push(format!("c{class}"));
                g.push(format!("o{o}"));
            }
        }
        (e, l, g)
    }

    #[test]
    fn few_labels_classify_separable_cells_and_fail_on_shuffled_labels() {
        let (ae, al, ag) = clusters(40, 5, 0.2);
        let (qe, ql, _) = clusters(20, 1, 0.2);
        let atlas = Labeled {
            emb: &ae,
            dim: 2,
            labels: &al,
            groups: Some(&ag),
        };
        let query = Labeled {
            emb: &qe,
            dim: 2,
            labels: &ql,
            groups: None,
        };
        let one = few_label_accuracy(&atlas, &query, 1, 10, 7);
        assert_eq!(one.draws, 10);
        assert!(one.accuracy > 0.9, "{one:?}");
        let five = few_label_accuracy(&atlas, &query, 5, 10, 7);
        assert!(five.accuracy >= one.accuracy - 0.02, "{one:?} {five:?}");
        // labels independent of the vectors (original o is labelled (o / 2) % 2, its true
        // class is o % 2): chance, not better
        let shuffled: Vec<String> = (0..al.len())
            .map(|i| format!("c{}", (i / 5 / 2) % 2))
            .collect();
        let noise = Labeled {
            labels: &shuffled,
            ..atlas
        };
        let bad = few_label_accuracy(&noise, &query, 5, 10, 7);
        assert!(bad.accuracy < 0.75, "{bad:?}");
    }

    #[test]
    fn one_copy_per_original_is_labelled() {
        let (ae, al, ag) = clusters(6, 4, 0.2);
        let originals = {
            let mut m: BTreeMap<&str, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
            for i in 0..al.len() {
                m.entry(al[i].as_str())
                    .or_default()
                    .entry(ag[i].as_str())
                    .or_default()
                    .push(i);
            }
            m
        };
        assert_eq!(ae.len(), al.len() * 2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let chosen = draw(&originals, true, 2, &mut rng);
        assert_eq!(chosen.len(), 4);
        let mut groups: Vec<&str> = chosen.iter().map(|&i| ag[i].as_str()).collect();
        groups.sort();
        groups.dedup();
        assert_eq!(
            groups.len(),
            4,
            "two originals per class, never two copies of one"
        );
    }
}
