//! Clusters of the atlas without labels: k-means on the cells' embeddings (k-means++ seeding,
//! [`cellspace_core::metrics::kmeans`]), with each cluster's size and, where the rows carry a
//! class, how the clusters meet the classes (NMI and ARI over the labelled cells, and a
//! cluster x class table). A lab names its clusters by looking at them; the counts per slide
//! or patient ([`counts_by`]) are its differential count.

use crate::{CellIndex, Result};
use cellspace_core::metrics::{ari, kmeans, nmi};
use serde::Serialize;
use std::collections::BTreeMap;

/// The clusters of every live cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clustering {
    pub k: usize,
    /// (row id, cluster) of every live cell.
    pub assignment: Vec<(usize, usize)>,
    /// Cells per cluster.
    pub sizes: Vec<usize>,
    /// Cluster -> class -> cells, over the cells with a class.
    pub classes: BTreeMap<usize, BTreeMap<String, usize>>,
    /// Agreement with the classes, over the cells with one (None without any).
    pub nmi: Option<f64>,
    pub ari: Option<f64>,
}

/// k-means with `k` clusters over the live cells of `index` (`seed` fixes the seeding).
pub fn clusters(index: &CellIndex, k: usize, seed: u64) -> Result<Clustering> {
    let dim = index.model().dim;
    let (live, data) = index.live_vectors()?;
    let assign = kmeans(&data, dim, k.max(1), 100, seed);
    let mut sizes = vec![0; k.max(1)];
    let mut classes: BTreeMap<usize, BTreeMap<String, usize>> = BTreeMap::new();
    let (mut labelled_c, mut labelled_l) = (Vec::new(), Vec::new());
    for (&id, &c) in live.iter().zip(&assign) {
        sizes[c] += 1;
        if let Some(class) = &index.rows()[id].class {
            *classes
                .entry(c)
                .or_default()
                .entry(class.clone())
                .or_default() += 1;
            labelled_c.push(c);
            labelled_l.push(class.clone());
        }
    }
    let known = !labelled_c.is_empty();
    Ok(Clustering {
        k: k.max(1),
        assignment: live.into_iter().zip(assign).collect(),
        sizes,
        classes,
        nmi: known.then(|| nmi(&labelled_c, &labelled_l)),
        ari: known.then(|| ari(&labelled_c, &labelled_l)),
    })
}

/// Cells per value of `by` (a row field: slide, patient, ...) and per value of `of` (class, a
/// prediction or a cluster field): the differential count of each slide. Rows without `by`
/// count under "-".
pub fn counts_by(
    index: &CellIndex,
    by: &str,
    of: impl Fn(usize) -> Option<String>,
) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut t: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (id, row) in index.rows().iter().enumerate() {
        if row.removed {
            continue;
        }
        let key = row.field(by).unwrap_or("-").to_string();
        let value = of(id).unwrap_or_else(|| "-".into());
        *t.entry(key).or_default().entry(value).or_default() += 1;
    }
    t
}

/// Store each cell's cluster in `field` (`c0`, `c1`, ...). The caller saves the index.
pub fn write(index: &mut CellIndex, c: &Clustering, field: &str) {
    index.edit_rows(|rows| {
        for &(id, cluster) in &c.assignment {
            rows[id]
                .meta
                .insert(field.to_string(), format!("c{cluster}"));
        }
    });
}
