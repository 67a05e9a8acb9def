//! Queries by example: "more like these, less like those". A lab picks a few cells that show
//! what it is after (a granule pattern, a nucleus shape) and a few that do not.
//!
//! The rule is qdrant's *average vector* recommend: `query = 2 · mean(like) − mean(unlike)`,
//! normalised, then one ordinary search. Chosen over qdrant's *best score* (each candidate
//! scored by its best positive against its best negative) because it is one HNSW search, so
//! every filter, `--distinct` and the graph's speed at 10^6 cells hold unchanged, and because
//! the mean of a few cells of one type is a cleaner prototype of that type than any one of
//! them (the few-label classifier votes the same way, [`cellspace_core::classify`]).
//! The examples' own cells (their copies and their original's other copies) are never
//! answered: a lab asking for more like its selection wants cells it has not picked.

use crate::{CellIndex, Error, Result};
use std::collections::HashSet;

/// One example cell: a row of the index, or an image's vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    Row(usize),
    Vector(Vec<f32>),
}

/// `id:N` names an indexed cell; anything else is an image path.
pub fn parse_id(s: &str) -> Option<usize> {
    s.strip_prefix("id:")?.trim().parse().ok()
}

/// The query vector of the average-vector rule, unit length.
pub fn recommend_vector(like: &[&[f32]], unlike: &[&[f32]]) -> Result<Vec<f32>> {
    let Some(first) = like.first() else {
        return Err(Error::Invalid(
            "a query by example needs at least one cell to be like".into(),
        ));
    };
    let dim = first.len();
    if like.iter().chain(unlike).any(|v| v.len() != dim) {
        return Err(Error::Invalid("examples of different dimensions".into()));
    }
    let mean = |vs: &[&[f32]]| -> Vec<f32> {
        let mut m = vec![0f32; dim];
        for v in vs {
            for (a, b) in m.iter_mut().zip(v.iter()) {
                *a += b / vs.len() as f32;
            }
        }
        m
    };
    let pos = mean(like);
    let mut q: Vec<f32> = if unlike.is_empty() {
        pos
    } else {
        let neg = mean(unlike);
        pos.iter().zip(&neg).map(|(p, n)| 2.0 * p - n).collect()
    };
    let norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm < 1e-6 {
        return Err(Error::Invalid(
            "the examples cancel out (the cells to be like are the cells to be unlike)".into(),
        ));
    }
    q.iter_mut().for_each(|x| *x /= norm);
    Ok(q)
}

/// The vectors of `examples` and the rows a query by them never answers (each indexed
/// example's cell: its copies and its original's other copies).
pub fn resolve(index: &CellIndex, examples: &[Example]) -> Result<(Vec<Vec<f32>>, HashSet<usize>)> {
    let mut vectors = Vec::with_capacity(examples.len());
    let mut exclude = HashSet::new();
    for e in examples {
        match e {
            Example::Row(id) => {
                let row = index
                    .rows()
                    .get(*id)
                    .filter(|r| !r.removed)
                    .ok_or_else(|| Error::Invalid(format!("id:{id} is not a live indexed cell")))?;
                exclude.extend(crate::ops::same_cell(index, &row.sha256));
                vectors.push(index.vector(*id)?.into_owned());
            }
            Example::Vector(v) => vectors.push(v.clone()),
        }
    }
    Ok((vectors, exclude))
}

/// The `k` cells nearest the average-vector query of `like` and `unlike` that `filter` allows,
/// never the examples' own cells.
pub fn search(
    index: &CellIndex,
    like: &[Example],
    unlike: &[Example],
    mut filter: crate::Filter,
    k: usize,
    ef: Option<usize>,
) -> Result<Vec<crate::Hit>> {
    let (like, mut exclude) = resolve(index, like)?;
    let (unlike, also) = resolve(index, unlike)?;
    exclude.extend(also);
    fn refs(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(Vec::as_slice).collect()
    }
    let v = recommend_vector(&refs(&like), &refs(&unlike))?;
    filter.exclude.extend(exclude);
    index.search(&v, &filter, k, ef)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_vector_leans_away_from_the_unlike_cells() {
        let a = [1.0f32, 0.0, 0.0];
        let b = [0.0f32, 1.0, 0.0];
        let q = recommend_vector(&[&a], &[]).unwrap();
        assert_eq!(q, vec![1.0, 0.0, 0.0]);
        // 2a - b, normalised
        let q = recommend_vector(&[&a], &[&b]).unwrap();
        let s = 5f32.sqrt();
        assert!((q[0] - 2.0 / s).abs() < 1e-6 && (q[1] + 1.0 / s).abs() < 1e-6);
        assert!(recommend_vector(&[], &[&b]).is_err());
        let half = [0.5f32, 0.0, 0.0];
        assert!(
            recommend_vector(&[&half], &[&a]).is_err(),
            "2 * a/2 - a = 0"
        );
        assert_eq!(parse_id("id:12"), Some(12));
        assert_eq!(parse_id("cells/id:12.png"), None);
    }
}
