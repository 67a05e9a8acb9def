//! What the `index` commands do, as library calls (the lab tool and the tests use these too):
//! build from `runtime embed` output or from images, add, query, eval and stats.

use crate::sidecar::{Applied, Sidecar};
use crate::{
    CellIndex, Condition, Error, Filter, IndexBuilder, IndexParams, ModelRef, Result, Row,
};
use cellspace_core::dataset::{SourceGroups, decode_path, encode_path};
use cellspace_core::embeddings::Embeddings;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Rows of a `runtime embed` output folder. Source groups (which original cell each image is a
/// copy of) come from `source.groups`, else from `source_groups.tsv` in or beside the embedded
/// folder, else from near-duplicate detection over the embedded images
/// ([`cellspace_core::duplicates`]), never from file hashes. Fields come from `source.meta`.
fn rows_of(emb: &Embeddings, source: &EmbeddingsSource) -> Result<(Vec<Row>, Option<Applied>)> {
    // absolute: `Embeddings::load` resolved it against the folder, not the current directory
    let root = PathBuf::from(&emb.state.root);
    let found = match source.groups {
        Some(_) => None,
        None => SourceGroups::find(&root)?,
    };
    let groups = source.groups.or(found.as_ref());
    let estimated = match groups {
        Some(_) => None,
        None => estimated_groups(&root),
    };
    let mut rows: Vec<Row> = emb
        .rows
        .iter()
        .map(|r| Row {
            path: encode_path(&root.join(decode_path(&r.path))),
            class: r.class.clone(),
            sha256: r.sha256.clone(),
            group: match (groups, &estimated) {
                (Some(g), _) => g.group_of(&r.path).map(str::to_string),
                (None, Some(est)) => est.get(&r.path).cloned(),
                (None, None) => None,
            },
            window: r.window.clone(),
            cell: r.cell,
            ..Default::default()
        })
        .collect();
    let applied = source.meta.map(|m| m.apply(&mut rows, Some(&root)));
    Ok((rows, applied))
}

/// Folders with more images than this get no estimated groups at build time.
pub const MAX_ESTIMATED_GROUPS: usize = 50_000;

/// Near-duplicate groups of the images under `root` by relative path, named uniquely for this
/// run (`near:TAG:N`) so that groups of separate `add`s never merge by accident. None when the
/// images cannot be read (the embeddings were moved away from them).
fn estimated_groups(root: &Path) -> Option<std::collections::HashMap<String, String>> {
    // the comparison is of every pair: minutes at 10^5 images, hopeless at 10^6
    let (listed, problems) = cellspace_core::dataset::list_images(root).ok()?;
    if listed.len() > MAX_ESTIMATED_GROUPS {
        log::warn!(
            "no {} for {}: {} images are too many to compare pairwise for copies of one original (at most {MAX_ESTIMATED_GROUPS}); pass --groups FILE (`trainer groups` on a sample, or your own) for --distinct and --exclude-self to know originals",
            cellspace_core::dataset::GROUPS_FILE,
            root.display(),
            listed.len()
        );
        return None;
    }
    let t = std::time::Instant::now();
    let est = cellspace_core::duplicates::estimate_listed(
        listed,
        problems,
        cellspace_core::duplicates::DEFAULT_THRESHOLD,
    );
    if est.images.is_empty() {
        return None;
    }
    let tag = &cellspace_core::sha256_hex(
        format!(
            "{}{}",
            root.display(),
            cellspace_core::atomic::now_rfc3339()
        )
        .as_bytes(),
    )[..8];
    let n = est.groups.iter().max().map_or(0, |m| m + 1);
    log::info!(
        "no {} for {}: {} images in {n} groups of near-duplicates ({:.1}s)",
        cellspace_core::dataset::GROUPS_FILE,
        root.display(),
        est.images.len(),
        t.elapsed().as_secs_f64()
    );
    Some(
        est.images
            .iter()
            .zip(&est.groups)
            .map(|(e, g)| (e.rel.clone(), format!("near:{tag}:{g}")))
            .collect(),
    )
}

/// Lock an index directory for a run that writes it (`build`, `add`): a hidden sibling
/// `.NAME.lock`, since `save` swaps the directory itself.
pub fn lock(dir: &Path) -> Result<cellspace_core::atomic::OutputLock> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    let lock = dir.with_file_name(format!(".{name}.lock"));
    Ok(cellspace_core::atomic::OutputLock::acquire(&lock, dir)?)
}

/// How an embeddings folder is read into an index.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddingsSource<'a> {
    /// The images' source groups; None: `source_groups.tsv` in or beside the embedded folder.
    pub groups: Option<&'a SourceGroups>,
    /// Index the rows of an interrupted `runtime embed` (its `embed.json` says not complete).
    pub allow_incomplete: bool,
    /// Fields per image (slide, patient, ...).
    pub meta: Option<&'a Sidecar>,
}

/// Check that an embeddings folder was made with `model`, and is complete.
fn check_embeddings(
    emb: &Embeddings,
    dir: &Path,
    model: &ModelRef,
    allow_incomplete: bool,
) -> Result<()> {
    if !emb.state.complete && !allow_incomplete {
        return Err(Error::Invalid(format!(
            "{}: an interrupted `runtime embed` ({} rows so far, possibly of a few classes only): run it again to finish, or pass --allow-incomplete to index what is there",
            dir.display(),
            emb.state.rows
        )));
    }
    let pre = &model.preprocess_sha256;
    if emb.state.model_sha256 != model.onnx_sha256
        || (!emb.state.preprocess_sha256.is_empty() && &emb.state.preprocess_sha256 != pre)
    {
        return Err(Error::ModelMismatch(format!(
            "{} was embedded with model {} (or its preprocessing) but the model given is {}: embed again or pass the right --model",
            dir.display(),
            emb.state.model,
            model.name
        )));
    }
    Ok(())
}

/// Build an index from a `runtime embed` output folder.
pub fn build_from_embeddings(
    emb_dir: &Path,
    model: &ModelRef,
    params: IndexParams,
    source: EmbeddingsSource,
) -> Result<CellIndex> {
    build_from_folders(&[emb_dir.to_path_buf()], model, params, source)
}

/// Build from one embeddings folder, or from the shard folders of one split (`runtime embed
/// --shard I/N`), merged as `runtime merge` would.
pub fn build_from_folders(
    dirs: &[PathBuf],
    model: &ModelRef,
    params: IndexParams,
    source: EmbeddingsSource,
) -> Result<CellIndex> {
    let emb = cellspace_core::shard::load(dirs)?;
    check_embeddings(&emb, &dirs[0], model, source.allow_incomplete)?;
    let mut b = IndexBuilder::new(model.clone(), params)?;
    let (rows, applied) = rows_of(&emb, &source)?;
    report_sidecar(source.meta, applied.as_ref());
    for (i, row) in rows.into_iter().enumerate() {
        b.push(row, emb.row(i))?;
    }
    Ok(b.build())
}

/// Say how a sidecar matched (unmatched paths are listed, a few at most).
fn report_sidecar(meta: Option<&Sidecar>, applied: Option<&Applied>) {
    let (Some(m), Some(a)) = (meta, applied) else {
        return;
    };
    log::warn!(
        "{}: fields for {} cells; {} of its {} paths name no embedded image{}",
        m.file.display(),
        a.rows,
        a.unmatched.len(),
        m.len(),
        match a.unmatched.first() {
            Some(p) => format!(" (first: {p})"),
            None => String::new(),
        }
    );
}

/// Append an embeddings folder's rows not already in the index (same path and hash; a removed
/// row stays removed). A sidecar also updates the fields of the rows already indexed.
pub fn add_embeddings(
    index: &mut CellIndex,
    emb_dirs: &[PathBuf],
    meta: Option<&Sidecar>,
) -> Result<usize> {
    let emb = cellspace_core::shard::load(emb_dirs)?;
    let model = index.model().clone();
    check_embeddings(&emb, &emb_dirs[0], &model, false)?;
    let root = PathBuf::from(&emb.state.root);
    // the sidecar updates the rows already indexed and gives the new ones their fields: it is
    // reported once, over both
    let indexed = meta.map(|m| index.edit_rows(|rows| m.apply(rows, Some(&root))));
    let known: std::collections::HashSet<(String, String, Option<u32>)> = index
        .rows()
        .iter()
        .map(|r| (r.path.clone(), r.sha256.clone(), r.cell))
        .collect();
    let mut rows = Vec::new();
    let mut vectors = Vec::new();
    let (new_rows, _) = rows_of(&emb, &EmbeddingsSource::default())?;
    for (i, row) in new_rows.into_iter().enumerate() {
        if !known.contains(&(row.path.clone(), row.sha256.clone(), row.cell)) {
            vectors.extend_from_slice(emb.row(i));
            rows.push(row);
        }
    }
    if let (Some(m), Some(indexed)) = (meta, indexed) {
        let added = m.apply(&mut rows, Some(&root));
        let unmatched: Vec<String> = indexed
            .unmatched
            .into_iter()
            .filter(|p| added.unmatched.contains(p))
            .collect();
        let applied = Applied {
            rows: indexed.rows + added.rows,
            unmatched,
        };
        report_sidecar(Some(m), Some(&applied));
    }
    let n = rows.len();
    index.add(rows, &vectors)?;
    Ok(n)
}

/// Which cells a query may return.
#[derive(Debug, Clone, Default)]
pub struct QueryFilter {
    /// Skip the query's own cell: indexed copies of the same file and, when the file is
    /// indexed with a source group, every copy of the same original.
    pub exclude_self: bool,
    /// At most one hit per original cell (source group; identical files where unknown).
    pub distinct: bool,
    /// Field conditions (`--where class=NEUTROPHIL`), all of which must hold.
    pub conditions: Vec<Condition>,
}

impl QueryFilter {
    /// The search filter for a query image with content hash `sha` (when known).
    pub fn for_query(&self, index: &CellIndex, sha: Option<&str>) -> Filter {
        Filter {
            conditions: self.conditions.clone(),
            exclude: match sha {
                Some(sha) if self.exclude_self => same_cell(index, sha),
                _ => Default::default(),
            },
            distinct: self.distinct,
        }
    }
}

/// The live row of the indexed file with content hash `sha`, if any: a query of a file the
/// atlas holds is answered from its vector as indexed (embedded with its folder's calibration),
/// not from the image measured again alone, so it finds itself exactly.
pub fn indexed_file(index: &CellIndex, sha: &str) -> Option<usize> {
    index
        .rows()
        .iter()
        .position(|r| !r.removed && r.sha256 == sha)
}

/// Every live row of an indexed file (one per white cell of a field embedded with every
/// cell), in the field's cell order: the rows of the first path it is indexed under (a copy
/// of the file elsewhere in the atlas is not another cell).
pub fn indexed_cells(index: &CellIndex, sha: &str) -> Vec<usize> {
    let Some(first) = indexed_file(index, sha) else {
        return Vec::new();
    };
    let rows = index.rows();
    let mut ids: Vec<usize> = (0..rows.len())
        .filter(|&i| !rows[i].removed && rows[i].sha256 == sha && rows[i].path == rows[first].path)
        .collect();
    ids.sort_by_key(|&i| index.rows()[i].cell);
    ids
}

/// Ids of the rows that are the same cell as an indexed file with content hash `sha`: its
/// copies, and every row of its source group.
pub fn same_cell(index: &CellIndex, sha: &str) -> std::collections::HashSet<usize> {
    let groups: std::collections::HashSet<&str> = index
        .rows()
        .iter()
        .filter(|r| r.sha256 == sha)
        .filter_map(|r| r.group.as_deref())
        .collect();
    index
        .rows()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.sha256 == sha || r.group.as_deref().is_some_and(|g| groups.contains(g)))
        .map(|(i, _)| i)
        .collect()
}

/// Mean share of the exact top-k found by HNSW search for each query row. The truth is a
/// scan of every live row's exact vector, whatever the store (the int8 store's own scan ranks
/// by codes first).
pub fn recall_at(index: &CellIndex, queries: &[f32], k: usize, ef: Option<usize>) -> Result<f64> {
    let dim = index.model().dim;
    let n = queries.len() / dim;
    let (live, rows) = index.live_vectors()?;
    let mut total = 0.0;
    for q in queries.chunks_exact(dim) {
        let exact: std::collections::HashSet<usize> =
            cellspace_core::nearest::topk(q, &rows, dim, k, |_| true)
                .into_iter()
                .map(|(j, _)| live[j])
                .collect();
        let found = index.search(q, &Filter::default(), k, ef)?;
        total += found.iter().filter(|h| exact.contains(&h.id)).count() as f64
            / exact.len().max(1) as f64;
    }
    Ok(total / n.max(1) as f64)
}

#[derive(Debug, Serialize)]
pub struct Stats {
    /// Cells that searches can return.
    pub count: usize,
    /// Removed cells still held until `index compact`.
    pub removed: usize,
    /// Fields from sidecars, with the number of cells that have each.
    pub fields: std::collections::BTreeMap<String, usize>,
    pub dim: usize,
    pub params: IndexParams,
    pub model: ModelRef,
    pub memory_bytes: usize,
    /// Resident memory of this process with the index open (Linux `VmRSS`, measured), and
    /// that per cell: what serving this index costs.
    pub resident_bytes: Option<u64>,
    pub resident_bytes_per_cell: Option<f64>,
    pub disk_bytes: u64,
    pub classes: std::collections::BTreeMap<String, usize>,
}

pub fn stats(index: &CellIndex, dir: &Path) -> Stats {
    let disk_bytes = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mut classes = std::collections::BTreeMap::new();
    let mut fields = std::collections::BTreeMap::new();
    for r in index.rows().iter().filter(|r| !r.removed) {
        for k in r.meta.keys() {
            *fields.entry(k.clone()).or_insert(0) += 1;
        }
        *classes
            .entry(r.class.clone().unwrap_or_else(|| "(none)".into()))
            .or_insert(0) += 1;
    }
    let resident = crate::bench::resident_bytes();
    Stats {
        count: index.live(),
        removed: index.removed(),
        fields,
        dim: index.model().dim,
        params: index.params(),
        model: index.model().clone(),
        memory_bytes: index.memory_bytes(),
        resident_bytes: resident,
        resident_bytes_per_cell: resident.map(|b| b as f64 / index.len().max(1) as f64),
        disk_bytes,
        classes,
    }
}
