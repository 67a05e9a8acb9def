//! `index remove`, `relabel` and `compact`: curating the atlas from the command line. Each
//! locks the index, edits it and saves it atomically ([`index::edit`]).

use anyhow::{Result, bail};
use cellspace_core::outcome::{OK, PARTIAL};
use std::path::{Path, PathBuf};

/// Tombstone the cells at `paths` and those matching `conditions`; 2 when a path is not indexed.
pub fn remove(dir: &Path, paths: &[PathBuf], conditions: &[index::Condition]) -> Result<u8> {
    if paths.is_empty() && conditions.is_empty() {
        bail!("name the cells to remove: image paths, or --where FIELD=VALUE");
    }
    let _lock = index::ops::lock(dir)?;
    let mut index = index::CellIndex::open(dir)?;
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        let found = index.find_path(p);
        if found.is_empty() {
            missing.push(p.display().to_string());
        }
        ids.extend(found);
    }
    if !conditions.is_empty() {
        ids.extend(index.find_where(conditions));
    }
    if ids.is_empty() {
        bail!(
            "no indexed cell matches ({} paths not indexed); nothing removed",
            missing.len()
        );
    }
    let n = index.remove(&ids);
    index.save(dir)?;
    eprintln!(
        "removed {n} cells; {} remain ({} removed cells held until `index compact`)",
        index.live(),
        index.removed()
    );
    for m in &missing {
        eprintln!("not indexed: {m}");
    }
    if !missing.is_empty() {
        return Ok(PARTIAL);
    }
    Ok(OK)
}

/// Set the class of the cell at `path`.
pub fn relabel(dir: &Path, path: &Path, class: &str) -> Result<u8> {
    let _lock = index::ops::lock(dir)?;
    let mut index = index::CellIndex::open(dir)?;
    let ids = index.find_path(path);
    if ids.is_empty() {
        bail!("{}: not an indexed cell", path.display());
    }
    for &id in &ids {
        let old = index.relabel(id, class)?;
        eprintln!(
            "{}: {} -> {class}",
            index.rows()[id].path,
            old.as_deref().unwrap_or("-")
        );
    }
    index.save(dir)?;
    Ok(OK)
}

/// Rebuild the graph without the removed cells.
pub fn compact(dir: &Path) -> Result<u8> {
    let _lock = index::ops::lock(dir)?;
    let index = index::CellIndex::open(dir)?;
    let removed = index.removed();
    let t = std::time::Instant::now();
    let compacted = index.compact()?;
    compacted.save(dir)?;
    eprintln!(
        "compacted: dropped {removed} removed cells, {} remain ({:.1}s)",
        compacted.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(OK)
}
