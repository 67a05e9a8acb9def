//! [`IndexBuilder`] collects rows and vectors and builds the HNSW graph; [`CellIndex`] answers
//! queries, appends (`add`) and saves atomically (a temporary directory renamed into place).

use crate::manifest::*;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::graph::Graph;
use crate::store::Vectors;

/// The HNSW graph's parameters (defaults measured on the blood-cell embeddings: see the
/// README).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node and upper layer (2 M at layer 0), at most 256.
    pub m: usize,
    pub ef_construction: usize,
    /// Default ef at query time.
    pub ef_search: usize,
}

/// What an index is built with: its graph's parameters and how it keeps its vectors. The
/// manifest holds both as one flat `params` object, as every format has written it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    #[serde(flatten)]
    pub hnsw: HnswParams,
    /// How vectors are kept in memory ([`crate::store`]).
    #[serde(default)]
    pub store: crate::store::StoreKind,
    /// Written, never read. Earlier builds (formats 2 and 3) require `max_layer` in a manifest
    /// before they look at its version, so without it they would fail on "missing field"
    /// instead of opening a format-3 index or refusing a newer one by its version.
    #[serde(default = "written_max_layer")]
    max_layer: usize,
}

impl IndexParams {
    pub fn new(hnsw: HnswParams, store: crate::store::StoreKind) -> Self {
        Self {
            hnsw,
            store,
            max_layer: written_max_layer(),
        }
    }
}

impl Default for IndexParams {
    fn default() -> Self {
        Self::new(HnswParams::default(), crate::store::StoreKind::F32)
    }
}

/// The graph's parameters with the f32 store.
impl From<HnswParams> for IndexParams {
    fn from(hnsw: HnswParams) -> Self {
        Self::new(hnsw, crate::store::StoreKind::F32)
    }
}

/// The `max_layer` every manifest has carried (hnsw_rs's level cap).
fn written_max_layer() -> usize {
    16
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// One indexed cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Image path (absolute when known), as [`cellspace_core::dataset::encode_path`] writes
    /// it (lossless for any file name; read it back with `decode_path`).
    pub path: String,
    pub class: Option<String>,
    /// sha256 of the image file.
    pub sha256: String,
    /// The original cell this image is a copy of (source group), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The window around the white cell that was embedded (None: the whole field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<cellspace_core::locate::Location>,
    /// Which white cell of its field the row is (0 = the largest), for a field embedded
    /// with every cell (`runtime embed --cells all`) that holds several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<u32>,
    /// Any fields from a metadata sidecar (slide, patient, stain, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Tombstone: removed by `index remove`, never returned, dropped by `index compact`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

impl Row {
    /// What makes two rows the same cell: its source group where known, else its content,
    /// and which cell of the field it is (the cells of one field are different cells).
    pub fn cell_key(&self) -> (&str, Option<u32>) {
        (self.original_key(), self.cell)
    }

    /// What makes two rows the same original image: its source group where known, else its
    /// content (every cell of a field, and every copy of it).
    pub fn original_key(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.sha256)
    }

    /// A field by name, for filters: `class`, `group`, `path`, `sha256`, else a sidecar field.
    pub fn field(&self, key: &str) -> Option<&str> {
        match key {
            "class" => self.class.as_deref(),
            "group" => self.group.as_deref(),
            "path" => Some(&self.path),
            "sha256" => Some(&self.sha256),
            _ => self.meta.get(key).map(String::as_str),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub id: usize,
    /// Cosine similarity.
    pub similarity: f32,
    pub path: String,
    pub class: Option<String>,
    /// The original cell (source group) of the hit, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Which white cell of its field the hit is (0 = the largest), for a field embedded with
    /// every cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<u32>,
    /// The row's sidecar fields.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

pub struct IndexBuilder {
    model: ModelRef,
    params: IndexParams,
    rows: Vec<Row>,
    vectors: Vec<f32>,
    map: Option<Vec<[f32; 2]>>,
}

impl IndexBuilder {
    /// A builder for an index of `model`'s vectors (an [`HnswParams`] alone: the f32 store).
    pub fn new(model: ModelRef, params: impl Into<IndexParams>) -> Result<Self> {
        let params = params.into();
        if params.hnsw.m == 0 || params.hnsw.m > 256 {
            return Err(Error::Invalid(format!(
                "m must be in 1..=256 (got {})",
                params.hnsw.m
            )));
        }
        Ok(Self {
            model,
            params,
            rows: Vec::new(),
            vectors: Vec::new(),
            map: None,
        })
    }

    pub fn push(&mut self, row: Row, vector: &[f32]) -> Result<()> {
        check_dim(&self.model, vector)?;
        self.rows.push(row);
        self.vectors.extend_from_slice(vector);
        Ok(())
    }

    pub fn build(self) -> CellIndex {
        let dim = self.model.dim;
        let mut index = CellIndex {
            model: self.model,
            params: self.params,
            rows: Vec::new(),
            vectors: Vectors::new(self.params.store, dim),
            graph: Graph::new(self.params.hnsw.m, self.params.hnsw.ef_construction),
            n_removed: 0,
            map: Vec::new(),
        };
        match self.map {
            Some(map) if map.len() == self.rows.len() => {
                index.insert(self.rows, &self.vectors);
                index.map = map;
            }
            _ => index.append(self.rows, &self.vectors),
        }
        index
    }

    /// Keep these places on the map (one per pushed row) instead of laying a new one out.
    pub(crate) fn with_map(mut self, map: Vec<[f32; 2]>) -> Self {
        self.map = Some(map);
        self
    }
}

pub(crate) fn check_dim(model: &ModelRef, v: &[f32]) -> Result<()> {
    if v.len() != model.dim {
        return Err(Error::Invalid(format!(
            "vector of dimension {} for a {}-d model",
            v.len(),
            model.dim
        )));
    }
    Ok(())
}

/// The map layout's seed: the same rows and graph give the same map.
const MAP_SEED: u64 = 0x006d_6170;

/// A built or loaded index.
pub struct CellIndex {
    pub(crate) model: ModelRef,
    pub(crate) params: IndexParams,
    pub(crate) rows: Vec<Row>,
    pub(crate) vectors: Vectors,
    pub(crate) graph: Graph,
    /// Rows with a tombstone (kept counted: a search must not scan every row to know).
    pub(crate) n_removed: usize,
    /// The map: every row's 2-D place ([`crate::layout`]); empty for an index saved before
    /// maps (its first `add` or `compact` lays one out).
    pub(crate) map: Vec<[f32; 2]>,
}

impl CellIndex {
    pub fn model(&self) -> &ModelRef {
        &self.model
    }
    pub fn params(&self) -> IndexParams {
        self.params
    }
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }
    /// Edit rows in place (fields, class, tombstones; not their number).
    pub fn edit_rows<R>(&mut self, edit: impl FnOnce(&mut [Row]) -> R) -> R {
        let r = edit(&mut self.rows);
        self.n_removed = self.rows.iter().filter(|r| r.removed).count();
        r
    }
    /// Rows, removed ones included (row ids run from 0 to `len`).
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    /// Rows not removed.
    pub fn live(&self) -> usize {
        self.rows.len() - self.n_removed
    }

    /// The ids of the live rows and their exact vectors, row-major (the int8 store reads them
    /// from disk): what an exact scan, k-means or an export works on.
    pub fn live_vectors(&self) -> Result<(Vec<usize>, Vec<f32>)> {
        let ids: Vec<usize> = (0..self.len()).filter(|&i| !self.rows[i].removed).collect();
        let mut v = Vec::with_capacity(ids.len() * self.model.dim);
        for &i in &ids {
            v.extend_from_slice(&self.vector(i)?);
        }
        Ok((ids, v))
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    /// The exact vector of row `id` (read from disk for the int8 store).
    pub fn vector(&self, id: usize) -> Result<std::borrow::Cow<'_, [f32]>> {
        self.vectors.row(id)
    }
    /// The vectors as the graph holds them.
    pub fn store(&self) -> &Vectors {
        &self.vectors
    }

    pub(crate) fn append(&mut self, rows: Vec<Row>, vectors: &[f32]) {
        let before = self.rows.len();
        self.insert(rows, vectors);
        let cells = crate::map_file::IndexCells(self);
        self.map = if before > 0 && self.map.len() == before {
            crate::layout::place_new(&cells, &self.map, MAP_SEED)
        } else {
            crate::layout::layout(&cells, MAP_SEED)
        };
    }

    /// Rows, vectors and graph links, without the map.
    fn insert(&mut self, rows: Vec<Row>, vectors: &[f32]) {
        self.n_removed += rows.iter().filter(|r| r.removed).count();
        self.rows.extend(rows);
        self.vectors.push(vectors);
        self.graph.insert_rows(&self.vectors);
    }

    /// Every row's place on the map (removed rows too; empty for an index saved before maps).
    pub fn map(&self) -> &[[f32; 2]] {
        &self.map
    }

    /// A map laid out afresh from the rows and graph as they are now (what `build` keeps).
    pub fn lay_out_map(&self) -> Vec<[f32; 2]> {
        crate::layout::layout(&crate::map_file::IndexCells(self), MAP_SEED)
    }

    /// Append rows (a changed image is a new row; remove the old one with [`CellIndex::remove`]).
    pub fn add(&mut self, rows: Vec<Row>, vectors: &[f32]) -> Result<()> {
        if vectors.len() != rows.len() * self.model.dim {
            return Err(Error::Invalid("rows and vectors disagree".into()));
        }
        for v in vectors.chunks_exact(self.model.dim) {
            check_dim(&self.model, v)?;
        }
        self.append(rows, vectors);
        Ok(())
    }

    /// Whether a save may replace what is at `dir`: nothing, an empty folder or an index (a
    /// folder with a manifest). Anything else (an image or embeddings folder given as `-o`, a
    /// file) is an error, and nothing is touched: a save swaps `dir` out and deletes it.
    pub fn check_replaceable(dir: &Path) -> Result<()> {
        let refuse = |what: &str| {
            Err(Error::Invalid(format!(
                "{}: {what}, not an index; nothing was written (choose another output, or \
                 remove it yourself)",
                dir.display()
            )))
        };
        match std::fs::metadata(dir) {
            Err(_) => Ok(()),
            Ok(m) if !m.is_dir() => refuse("is a file"),
            Ok(_) if dir.join(MANIFEST_FILE).is_file() => Ok(()),
            Ok(_) => match std::fs::read_dir(dir) {
                Ok(mut entries) => match entries.next() {
                    None => Ok(()),
                    Some(_) => refuse("is a folder that holds other files"),
                },
                Err(e) => Err(cellspace_core::Error::io(dir, e).into()),
            },
        }
    }

    /// Save into `dir` atomically: everything is written to a sibling temporary directory that
    /// then replaces `dir`; a failure leaves the previous index untouched. `dir` must be
    /// replaceable ([`Self::check_replaceable`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        Self::check_replaceable(dir)?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| cellspace_core::Error::io(parent, e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "index".into());
        crate::swap::remove_stale_saves(parent, &name, dir.exists());
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| cellspace_core::Error::io(&tmp, e))?;
        let result = self.write_into(&tmp);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // everything on disk before the swap: the files written above are not synced by it
        sync_dir_files(&tmp)?;
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        {
            // readers opening the index wait for the two renames (and never see half of each)
            let _swap = crate::swap::SwapLock::exclusive(dir);
            if dir.exists() {
                std::fs::rename(dir, &old).map_err(|e| cellspace_core::Error::io(dir, e))?;
            }
            // a kill here leaves no `dir`, only `.NAME.old-PID`: `open` puts it back
            std::fs::rename(&tmp, dir).map_err(|e| cellspace_core::Error::io(dir, e))?;
            sync_dir(parent)?;
        }
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// A save killed between its two renames leaves no index at `dir` but the previous one
    /// as `.NAME.old-PID` beside it: put that back (when it verifies) and say so.
    fn recover(dir: &Path) -> Result<()> {
        if dir.exists() {
            return Ok(());
        }
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Ok(());
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let prefix = format!(".{}.old-", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(parent) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let p = e.path();
            let candidate = e.file_name().to_string_lossy().starts_with(&prefix) && p.is_dir();
            if candidate
                && IndexManifest::load(&p)
                    .and_then(|m| m.verify_files(&p))
                    .is_ok()
            {
                std::fs::rename(&p, dir).map_err(|e| cellspace_core::Error::io(dir, e))?;
                log::info!(
                    "{}: recovered the index from {} (a save was interrupted)",
                    dir.display(),
                    p.display()
                );
                return Ok(());
            }
        }
        Ok(())
    }

    /// Write every exact row to `dir/embeddings.npy`, streaming (the int8 store reads its rows
    /// back from the previous file one at a time); returns the file's sha256.
    fn write_vectors(&self, dir: &Path) -> Result<String> {
        use sha2::Digest;
        use std::io::Write;
        let p = dir.join(VECTORS_FILE);
        let io = |e| cellspace_core::Error::io(&p, e);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&p).map_err(io)?);
        let mut sha = sha2::Sha256::new();
        let mut put = |bytes: &[u8]| -> Result<()> {
            sha.update(bytes);
            out.write_all(bytes).map_err(io)?;
            Ok(())
        };
        put(&cellspace_core::npy::header(self.len(), self.model.dim))?;
        match self.vectors.as_f32() {
            Some(all) => put(&all.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())?,
            None => {
                for i in 0..self.len() {
                    let row = self.vectors.row(i)?;
                    put(&row.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())?;
                }
            }
        }
        out.flush().map_err(io)?;
        Ok(format!("{:x}", sha.finalize()))
    }

    fn write_into(&self, dir: &Path) -> Result<()> {
        let mut files = BTreeMap::new();
        let graph = crate::graph_file::encode(&self.graph);
        cellspace_core::atomic::write_atomic(&dir.join(GRAPH_BIN), &graph)?;
        files.insert(GRAPH_BIN.into(), cellspace_core::sha256_hex(&graph));
        let rows = cellspace_core::embeddings::to_jsonl(&self.rows);
        cellspace_core::atomic::write_atomic(&dir.join(ROWS_FILE), rows.as_bytes())?;
        files.insert(
            ROWS_FILE.into(),
            cellspace_core::sha256_hex(rows.as_bytes()),
        );
        files.insert(VECTORS_FILE.into(), self.write_vectors(dir)?);
        if !self.map.is_empty() {
            let bytes = crate::map_file::encode(&self.map);
            let p = dir.join(crate::map_file::MAP_FILE);
            cellspace_core::atomic::write_atomic(&p, &bytes)?;
            files.insert(
                crate::map_file::MAP_FILE.into(),
                cellspace_core::sha256_hex(&bytes),
            );
        }
        if let Some((codes, scale)) = self.vectors.codes() {
            let bytes = crate::store_file::encode_codes(codes, scale);
            cellspace_core::atomic::write_atomic(&dir.join(CODES_FILE), &bytes)?;
            files.insert(CODES_FILE.into(), cellspace_core::sha256_hex(&bytes));
        }
        let manifest = IndexManifest {
            format_version: FORMAT_VERSION,
            model: self.model.clone(),
            params: self.params,
            count: self.rows.len(),
            files,
            created: cellspace_core::atomic::now_rfc3339(),
        };
        cellspace_core::atomic::write_json(&dir.join(MANIFEST_FILE), &manifest)?;
        Ok(())
    }

    /// Open an index directory; every file is checked against the manifest first. An edit
    /// saving the index meanwhile is waited for ([`crate::swap`]): a reader gets the index
    /// before the edit or after it, never a mix of the two.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            // no index, or a save killed between its renames; or one renaming right now,
            // which the lock waits for, so that its previous index is not "recovered"
            let _swap = crate::swap::SwapLock::exclusive_if_saved(dir);
            Self::recover(dir)?;
        }
        let _swap = crate::swap::SwapLock::shared_if_saved(dir);
        Self::open_unlocked(dir)
    }

    fn open_unlocked(dir: &Path) -> Result<Self> {
        let manifest = IndexManifest::load(dir)?;
        manifest.verify_files(dir)?;
        let rp = dir.join(ROWS_FILE);
        let text = std::fs::read_to_string(&rp).map_err(|e| cellspace_core::Error::io(&rp, e))?;
        let rows: Vec<Row> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Corrupt {
                path: rp.clone(),
                reason: e.to_string(),
            })?;
        let dim = manifest.model.dim;
        if rows.len() != manifest.count {
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                reason: "rows and manifest disagree".into(),
            });
        }
        let vectors = crate::store_file::load(dir, &manifest.params, rows.len(), dim)?;
        let graph = if manifest.files.contains_key(GRAPH_BIN) {
            let p = dir.join(GRAPH_BIN);
            let bytes = std::fs::read(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
            crate::graph_file::decode(&bytes, rows.len())
                .map_err(|reason| Error::Corrupt { path: p, reason })?
        } else {
            let p = &manifest.params.hnsw;
            crate::legacy_hnsw::read_graph(dir, rows.len(), p.m, p.ef_construction)?
        };
        let map = match manifest.files.contains_key(crate::map_file::MAP_FILE) {
            true => {
                let p = dir.join(crate::map_file::MAP_FILE);
                let bytes = std::fs::read(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
                crate::map_file::decode(&bytes, rows.len())
                    .map_err(|reason| Error::Corrupt { path: p, reason })?
            }
            false => Vec::new(),
        };
        Ok(Self {
            model: manifest.model,
            params: manifest.params,
            n_removed: rows.iter().filter(|r| r.removed).count(),
            rows,
            vectors,
            graph,
            map,
        })
    }

    /// Approximate memory held by the index, in bytes: vectors, links and rows.
    pub fn memory_bytes(&self) -> usize {
        self.vectors.memory_bytes()
            + self.graph.memory_bytes()
            + self
                .rows
                .iter()
                .map(|r| std::mem::size_of::<Row>() + r.path.len() + r.sha256.len())
                .sum::<usize>()
    }
}

/// fsync every file in `dir`, then `dir` itself.
fn sync_dir_files(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| cellspace_core::Error::io(dir, e))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_file() {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| cellspace_core::Error::io(&p, e))?;
        }
    }
    sync_dir(dir)
}

/// fsync a directory, so renames inside it survive a power cut.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| cellspace_core::Error::io(dir, e).into())
}
