//! What the page's map draws: every live cell's place and one coloured value per cell (class,
//! source group, cluster or any sidecar field), with a legend of counts per value: the map is
//! also the atlas's count per type, per cluster or per slide.
//!
//! Edits made from the map go through the same lock, open, edit and atomic save as `index
//! relabel` and `index remove` ([`edit_saved`]); a page editing a map it loaded before the atlas
//! changed is refused, not applied to other cells (row ids of a rebuilt or compacted index
//! name other cells).

use crate::{CellIndex, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Legend entries kept by name; rarer values are counted under [`OTHER`].
pub const LEGEND_MAX: usize = 24;
pub const OTHER: &str = "(other)";
pub const NONE: &str = "(none)";

/// The page's map: parallel arrays over the live cells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapView {
    pub by: String,
    /// Identifies the atlas these ids belong to; an edit must name it ([`version`]).
    pub version: String,
    pub ids: Vec<usize>,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    /// Index into `legend` of each cell's value.
    pub value: Vec<u16>,
    pub legend: Vec<LegendEntry>,
    /// The map was laid out now, for an index saved before maps (`index add` or `compact`
    /// saves one).
    pub laid_out_now: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub count: usize,
}

/// The map of `index` coloured by `value_of(row id)` (None: [`NONE`]).
pub fn view(
    index: &CellIndex,
    map: &[[f32; 2]],
    by: &str,
    version: &str,
    value_of: impl Fn(usize) -> Option<String>,
) -> MapView {
    let ids: Vec<usize> = (0..index.len())
        .filter(|&i| !index.rows()[i].removed)
        .collect();
    let values: Vec<String> = ids
        .iter()
        .map(|&i| value_of(i).unwrap_or_else(|| NONE.into()))
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in &values {
        *counts.entry(v).or_default() += 1;
    }
    let mut order: Vec<(&str, usize)> = counts.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: HashMap<&str, u16> = order
        .iter()
        .take(LEGEND_MAX)
        .enumerate()
        .map(|(k, (v, _))| (*v, k as u16))
        .collect();
    let mut legend: Vec<LegendEntry> = order
        .iter()
        .take(LEGEND_MAX)
        .map(|(v, n)| LegendEntry {
            name: v.to_string(),
            count: *n,
        })
        .collect();
    let rest: usize = order.iter().skip(LEGEND_MAX).map(|(_, n)| n).sum();
    if rest > 0 {
        legend.push(LegendEntry {
            name: OTHER.into(),
            count: rest,
        });
    }
    let other = legend.len().saturating_sub(1) as u16;
    MapView {
        by: by.to_string(),
        version: version.to_string(),
        x: ids.iter().map(|&i| map[i][0]).collect(),
        y: ids.iter().map(|&i| map[i][1]).collect(),
        value: values
            .iter()
            .map(|v| named.get(v.as_str()).copied().unwrap_or(other))
            .collect(),
        ids,
        legend,
        laid_out_now: false,
    }
}

/// A fingerprint of which cell each row id is and what it holds: the model (its ONNX and
/// preprocessing), row count, and each row's file, cell, class and tombstone. Any save that
/// renumbers or edits rows changes it, and so does a rebuild with another model (whose
/// vectors the page's model could not search).
pub fn version(index: &CellIndex) -> String {
    let m = index.model();
    let model = format!("{}|{}", m.onnx_sha256, m.preprocess_sha256);
    let mut h = cellspace_core::hash::stable_hash(model.as_bytes(), 0);
    for r in index.rows() {
        let key = format!("{}|{:?}|{:?}|{}", r.sha256, r.cell, r.class, r.removed);
        h = cellspace_core::hash::stable_hash(key.as_bytes(), h);
    }
    format!("{}-{h:016x}", index.len())
}

/// An edit of a selection of cells.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Edit {
    Relabel(String),
    Remove,
}

/// Lock the index in `dir`, open it, check that it is the atlas `version` named, apply `edit`
/// to `ids` (every one a live cell) and save it atomically; returns the saved index.
pub fn edit_saved(dir: &Path, version: &str, ids: &[usize], edit: &Edit) -> Result<CellIndex> {
    let _lock = crate::ops::lock(dir)?;
    let mut index = CellIndex::open(dir)?;
    check_version(&self::version(&index), version)?;
    if ids.is_empty() {
        return Err(Error::Invalid("no cells selected".into()));
    }
    if let Some(&bad) = ids
        .iter()
        .find(|&&i| index.rows().get(i).is_none_or(|r| r.removed))
    {
        return Err(Error::Invalid(format!("cell {bad} is not a live cell")));
    }
    match edit {
        Edit::Relabel(class) if class.trim().is_empty() => {
            return Err(Error::Invalid("an empty class name".into()));
        }
        Edit::Relabel(class) => {
            for &i in ids {
                index.relabel(i, class.trim())?;
            }
        }
        Edit::Remove => {
            index.remove(ids);
        }
    }
    index.save(dir)?;
    Ok(index)
}

/// The error of a request naming an atlas `version` that is not `current`'s.
pub fn check_version(current: &str, version: &str) -> Result<()> {
    if current == version {
        Ok(())
    } else {
        Err(Error::Conflict(
            "the atlas changed since this map was loaded (another edit, add or compact): reload the map and select again".into(),
        ))
    }
}
