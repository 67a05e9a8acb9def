//! Curating the atlas: remove a cell, relabel one, compact. Deleting a node from an HNSW graph
//! would leave its neighbours' links to repair, so a removal is a tombstone ([`crate::Row::removed`]) that every search filters out inside the
//! graph walk; `compact` rebuilds the graph from the rows left. Edits change the index in memory;
//! the caller saves it ([`CellIndex::save`] is atomic, so a kill leaves the old or the new index,
//! never half of one).

use crate::cellindex::{CellIndex, IndexBuilder};
use crate::filter::Condition;
use crate::{Error, Result};
use cellspace_core::dataset::encode_path;
use std::path::Path;

impl CellIndex {
    /// Ids of the live rows indexed under `path`: as recorded, or the file it names on disk.
    pub fn find_path(&self, path: &Path) -> Vec<usize> {
        let given = encode_path(path);
        let canonical = std::fs::canonicalize(path).ok().map(|p| encode_path(&p));
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.removed)
            .filter(|(_, r)| r.path == given || canonical.as_deref() == Some(r.path.as_str()))
            .map(|(i, _)| i)
            .collect()
    }

    /// Ids of the live rows matching every condition.
    pub fn find_where(&self, conditions: &[Condition]) -> Vec<usize> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.removed && conditions.iter().all(|c| c.matches(r)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Tombstone these rows; returns how many were live.
    pub fn remove(&mut self, ids: &[usize]) -> usize {
        let mut n = 0;
        for &id in ids {
            if let Some(r) = self.rows.get_mut(id)
                && !r.removed
            {
                r.removed = true;
                n += 1;
            }
        }
        self.n_removed += n;
        n
    }

    /// Set the class of a live row; returns the previous class.
    pub fn relabel(&mut self, id: usize, class: &str) -> Result<Option<String>> {
        match self.rows.get_mut(id) {
            Some(r) if !r.removed => Ok(r.class.replace(class.to_string())),
            _ => Err(Error::Invalid(format!("row {id} is not a live cell"))),
        }
    }

    /// Rows removed but still in the graph.
    pub fn removed(&self) -> usize {
        self.n_removed
    }

    /// The index rebuilt without its removed rows (row ids change; the graph is new).
    pub fn compact(&self) -> Result<CellIndex> {
        let mut b = IndexBuilder::new(self.model.clone(), self.params)?;
        for (i, r) in self.rows.iter().enumerate() {
            if !r.removed {
                b.push(r.clone(), &self.vector(i)?)?;
            }
        }
        // every remaining cell keeps its place on the map
        if self.map.len() == self.rows.len() {
            b = b.with_map(
                (0..self.rows.len())
                    .filter(|&i| !self.rows[i].removed)
                    .map(|i| self.map[i])
                    .collect(),
            );
        }
        Ok(b.build())
    }
}
