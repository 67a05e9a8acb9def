//! `index classify`: a lab labels a few of its indexed cells and every other cell gets the
//! class its most similar labelled cells vote for, with a confidence
//! ([`cellspace_core::classify`]: the kNN-200 vote of the retrieval figures). The labelled
//! cells keep their labels; each is also voted on by the labelled cells of *other* originals,
//! which says how well the labels predict each other before anyone trusts the rest.
//!
//! Predictions can be written into the rows (a field and its confidence), through the same
//! locked, atomic save as every edit, so `--where`, the page and exports see them.

use crate::sidecar::Sidecar;
use crate::{CellIndex, Error, Result};
use cellspace_core::classify::predict;
use cellspace_core::metrics::Labeled;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Labelled cells of an index: (row id, class).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    pub ids: Vec<(usize, String)>,
    /// Label-file paths that name no live indexed cell.
    pub unmatched: Vec<String>,
}

/// Read the labels of `file` (a sidecar: CSV with `path` and `class` columns, or JSON lines)
/// against the live rows of `index`. Paths are as indexed, or relative to `root`.
pub fn labels(index: &CellIndex, file: &Path, root: Option<&Path>) -> Result<Labels> {
    let side = Sidecar::load(file)?;
    let (matched, mut unmatched) = side.resolve(index.rows(), root);
    let mut ids = Vec::new();
    for (rows, fields) in matched {
        let Some(class) = fields.get("class") else {
            continue;
        };
        let named = index.rows()[rows[0]].path.clone();
        let live: Vec<usize> = rows
            .into_iter()
            .filter(|&i| !index.rows()[i].removed)
            .collect();
        if live.is_empty() {
            unmatched.push(format!("{named} (removed)"));
        }
        ids.extend(live.into_iter().map(|i| (i, class.clone())));
    }
    if ids.is_empty() {
        return Err(Error::Core(cellspace_core::Error::invalid(
            file,
            format!(
                "no labelled indexed cell: give `path` and `class` columns naming indexed images ({} paths not indexed)",
                unmatched.len()
            ),
        )));
    }
    Ok(Labels { ids, unmatched })
}

/// One cell's class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub id: usize,
    pub path: String,
    pub class: String,
    /// The class's share of the vote, (0, 1]; 1 for a labelled cell.
    pub confidence: f64,
    /// The cell's own label, where it is labelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Every live cell's class, with what a lab reads first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub labelled: usize,
    /// Live cells per class: labelled cells by their label, the rest by prediction (a
    /// differential count of the atlas).
    pub counts: BTreeMap<String, usize>,
    /// Labelled cells whose label the labelled cells of the other originals vote for (None
    /// when no labelled cell has another original to be voted on by).
    pub label_agreement: Option<f64>,
    /// Predicted cells whose confidence is under [`LOW_CONFIDENCE`].
    pub low_confidence: usize,
    pub predictions: Vec<Prediction>,
}

/// Under this share of the vote a prediction is counted as uncertain.
pub const LOW_CONFIDENCE: f64 = 0.5;

/// Classify every live cell of `index` from `labels`, by the `k` most similar labelled cells.
pub fn classify(index: &CellIndex, labels: &Labels, k: usize) -> Result<Classification> {
    let dim = index.model().dim;
    let mut emb = Vec::with_capacity(labels.ids.len() * dim);
    let mut classes = Vec::with_capacity(labels.ids.len());
    let mut label_of = BTreeMap::new();
    for (id, class) in &labels.ids {
        emb.extend_from_slice(&index.vector(*id)?);
        classes.push(class.clone());
        label_of.insert(*id, class.as_str());
    }
    let keys: Vec<&str> = labels
        .ids
        .iter()
        .map(|(id, _)| index.rows()[*id].original_key())
        .collect();
    let labelled = Labeled {
        emb: &emb,
        dim,
        labels: &classes,
        groups: None,
    };
    let (mut agree, mut voted) = (0usize, 0usize);
    let mut predictions = Vec::with_capacity(index.live());
    for (id, row) in index.rows().iter().enumerate() {
        if row.removed {
            continue;
        }
        let v = index.vector(id)?;
        let p = match label_of.get(&id) {
            Some(&label) => {
                // voted on by the labelled cells of the other originals only (not another cell of the
                // same field or its copies either)
                let own = row.original_key();
                if let Some(vote) = predict(&v, &labelled, k, |j| keys[j] != own) {
                    voted += 1;
                    agree += (vote.class == label) as usize;
                }
                Prediction {
                    id,
                    path: row.path.clone(),
                    class: label.to_string(),
                    confidence: 1.0,
                    label: Some(label.to_string()),
                }
            }
            None => {
                let vote = predict(&v, &labelled, k, |_| true)
                    .expect("there is at least one labelled cell");
                Prediction {
                    id,
                    path: row.path.clone(),
                    class: vote.class.to_string(),
                    confidence: vote.confidence,
                    label: None,
                }
            }
        };
        predictions.push(p);
    }
    let mut counts = BTreeMap::new();
    for p in &predictions {
        *counts.entry(p.class.clone()).or_insert(0) += 1;
    }
    Ok(Classification {
        labelled: label_of.len(),
        counts,
        label_agreement: (voted > 0).then(|| agree as f64 / voted as f64),
        low_confidence: predictions
            .iter()
            .filter(|p| p.label.is_none() && p.confidence < LOW_CONFIDENCE)
            .count(),
        predictions,
    })
}

/// Store each prediction in its row: `field` = the class, `field_confidence` = its share of
/// the vote (two decimals). The caller saves the index.
pub fn write(index: &mut CellIndex, c: &Classification, field: &str) {
    let conf = format!("{field}_confidence");
    index.edit_rows(|rows| {
        for p in &c.predictions {
            let m = &mut rows[p.id].meta;
            m.insert(field.to_string(), p.class.clone());
            m.insert(conf.clone(), format!("{:.2}", p.confidence));
        }
    });
}
