//! The atlas a running lab tool answers from, and how it follows edits.
//!
//! `index remove`, `relabel`, `add` and `compact` save the index directory whole (see
//! [`crate::swap`]); a server that kept the index it opened at start went on returning a
//! removed cell, its thumbnail and its count until restarted. [`Live`] keeps the opened index
//! behind one pointer and, when watching a directory, reopens it once its manifest changes and
//! swaps the new one in: a request works on the atlas it started with, the next one on the new
//! atlas, and none on a mix. An index rebuilt with another model is not swapped in (the
//! server's embedder would no longer match it); the server keeps answering from the one it has
//! and says why in `/api/health`.

use crate::manifest::MANIFEST_FILE;
use crate::{CellIndex, Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// One opened index, and the folder its cells share (answers show paths relative to it, so
/// the server's own layout is not exposed).
pub struct Atlas {
    pub index: CellIndex,
    pub root: String,
    /// What the page's map needs that the index may not hold: a layout for an index saved
    /// before maps, and k-means clusters, each computed once per atlas.
    pub map_cache: MapCache,
}

/// See [`Atlas::map_cache`].
#[derive(Default)]
pub struct MapCache {
    pub laid_out: std::sync::OnceLock<Vec<[f32; 2]>>,
    /// [`crate::atlas_map::version`] of the atlas, hashed once (every row), not per request.
    pub version: std::sync::OnceLock<String>,
    pub clusters: Mutex<std::collections::BTreeMap<usize, Arc<Vec<Option<usize>>>>>,
}

impl Atlas {
    /// Which rows this atlas holds ([`crate::atlas_map::version`]), computed once.
    pub fn version(&self) -> &str {
        self.map_cache
            .version
            .get_or_init(|| crate::atlas_map::version(&self.index))
    }

    pub fn new(index: CellIndex) -> Self {
        let root = common_dir(index.rows().iter().map(|r| r.path.as_str()));
        Self {
            index,
            root,
            map_cache: MapCache::default(),
        }
    }

    /// An indexed path as shown to callers: relative to [`Atlas::root`].
    pub fn shown(&self, path: &str) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string()
    }
}

/// The longest common folder (ending in `/`) of some paths; empty when they share none.
pub fn common_dir<'a>(mut paths: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = paths.next() else {
        return String::new();
    };
    let mut prefix = first.rsplit_once('/').map_or("", |(d, _)| d).to_string() + "/";
    for p in paths {
        while !prefix.is_empty() && !p.starts_with(&prefix) {
            let trimmed = prefix.trim_end_matches('/');
            prefix = trimmed
                .rsplit_once('/')
                .map_or(String::new(), |(d, _)| format!("{d}/"));
        }
    }
    if prefix == "/" { String::new() } else { prefix }
}

/// What identifies one save of an index: its manifest's inode, size and modification time.
type Stamp = (u64, u64, Option<std::time::SystemTime>);

fn stamp(dir: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join(MANIFEST_FILE)).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()))
}

/// The watched directory: the save last looked at, and why the last reopen failed.
struct Source {
    dir: PathBuf,
    seen: Mutex<Option<Stamp>>,
    problem: Mutex<Option<String>>,
}

/// The current atlas, swapped whole when the watched index is saved again.
pub struct Live {
    current: RwLock<Arc<Atlas>>,
    source: Option<Source>,
}

impl Live {
    /// An atlas that never changes (an index built in memory).
    pub fn fixed(index: CellIndex) -> Self {
        Self {
            current: RwLock::new(Arc::new(Atlas::new(index))),
            source: None,
        }
    }

    /// `index`, opened from `dir`, followed as `dir` is saved again.
    pub fn watching(index: CellIndex, dir: &Path) -> Self {
        Self {
            current: RwLock::new(Arc::new(Atlas::new(index))),
            source: Some(Source {
                dir: dir.to_path_buf(),
                seen: Mutex::new(stamp(dir)),
                problem: Mutex::new(None),
            }),
        }
    }

    /// Whether there is a directory to follow.
    pub fn watches(&self) -> bool {
        self.source.is_some()
    }

    /// The directory followed, if any (where edits from the page are saved).
    pub fn dir(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| s.dir.as_path())
    }

    /// The atlas to answer one request from.
    pub fn current(&self) -> Arc<Atlas> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the last save of the watched index could not be taken up, if it could not.
    pub fn problem(&self) -> Option<String> {
        let s = self.source.as_ref()?;
        s.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reopen the watched index if it was saved since it was last looked at, and swap it in:
    /// Ok(true) when swapped. A save that cannot be opened, or was built with another model,
    /// leaves the current atlas serving, and is an error until the next save.
    pub fn refresh(&self) -> Result<bool> {
        let Some(src) = &self.source else {
            return Ok(false);
        };
        let now = stamp(&src.dir);
        {
            let mut seen = src.seen.lock().unwrap_or_else(|e| e.into_inner());
            if now.is_none() || *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let result = self.reopen(&src.dir);
        *src.problem.lock().unwrap_or_else(|e| e.into_inner()) =
            result.as_ref().err().map(|e| cellspace_core::error_text(e));
        result.map(|()| true)
    }

    /// Serve `index` from now on: the one an edit from the page has just saved (its reload does
    /// not wait for the watcher, which may swap the same save in again, harmlessly).
    pub fn install(&self, index: CellIndex) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Atlas::new(index));
    }

    fn reopen(&self, dir: &Path) -> Result<()> {
        let index = CellIndex::open(dir)?;
        let model = self.current().index.model().onnx_sha256.clone();
        if index.model().onnx_sha256 != model {
            return Err(Error::Invalid(format!(
                "{} was saved with another model ({}): restart the server to serve it",
                dir.display(),
                index.model().name
            )));
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Atlas::new(index));
        Ok(())
    }
}
