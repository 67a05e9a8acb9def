//! What the `index` commands do, as library calls (the lab tool and the tests use these too):
//! build from `runtime embed` output or from images, add, query, eval and stats.

use crate::{CellIndex, Error, Hit, HnswParams, IndexBuilder, ModelRef, Result, Row};
use cellspace_core::dataset::{SourceGroups, decode_path, encode_path};
use cellspace_core::metrics::{RetrievalReport, evaluate_unseen};
use runtime::folder::{Embeddings, embed_dir};
use runtime::{EmbedOptions, Embedder};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Rows of a `runtime embed` output folder. Source groups (which original cell each image is a
/// copy of) come from `groups`, else from `source_groups.tsv` in or beside the embedded folder.
fn rows_of(emb: &Embeddings, groups: Option<&SourceGroups>) -> Result<Vec<Row>> {
    let root = PathBuf::from(&emb.state.root);
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let found = match groups {
        Some(_) => None,
        None => SourceGroups::find(&root)?,
    };
    let groups = groups.or(found.as_ref());
    Ok(emb
        .rows
        .iter()
        .map(|r| Row {
            path: encode_path(&root.join(decode_path(&r.path))),
            class: r.class.clone(),
            sha256: r.sha256.clone(),
            group: groups.and_then(|g| g.group_of(&r.path)).map(str::to_string),
            window: r.window.clone(),
        })
        .collect())
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
}

/// Check that an embeddings folder was made with `embedder`'s model, and is complete.
fn check_embeddings(
    emb: &Embeddings,
    dir: &Path,
    embedder: &Embedder,
    allow_incomplete: bool,
) -> Result<()> {
    if !emb.state.complete && !allow_incomplete {
        return Err(Error::Invalid(format!(
            "{}: an interrupted `runtime embed` ({} rows so far, possibly of a few classes only): run it again to finish, or pass --allow-incomplete to index what is there",
            dir.display(),
            emb.state.rows
        )));
    }
    let pre = embedder.card().preprocess.fingerprint();
    if emb.state.model_sha256 != embedder.card().onnx_sha256
        || (!emb.state.preprocess_sha256.is_empty() && emb.state.preprocess_sha256 != pre)
    {
        return Err(Error::ModelMismatch(format!(
            "{} was embedded with model {} (or its preprocessing) but the model given is {}: embed again or pass the right --model",
            dir.display(),
            emb.state.model,
            embedder.card().name
        )));
    }
    Ok(())
}

/// Build an index from a `runtime embed` output folder.
pub fn build_from_embeddings(
    emb_dir: &Path,
    embedder: &Embedder,
    params: HnswParams,
    source: EmbeddingsSource,
) -> Result<CellIndex> {
    let emb = Embeddings::load(emb_dir)?;
    check_embeddings(&emb, emb_dir, embedder, source.allow_incomplete)?;
    let mut b = IndexBuilder::new(ModelRef::of(embedder), params)?;
    for (i, row) in rows_of(&emb, source.groups)?.into_iter().enumerate() {
        b.push(row, emb.row(i))?;
    }
    Ok(b.build())
}

/// Embed `images` (into `IMAGES.embeddings`, reusing earlier rows), then build.
pub fn build_from_images(
    images: &Path,
    embedder: &Embedder,
    params: HnswParams,
    progress: bool,
) -> Result<(CellIndex, runtime::folder::EmbedSummary)> {
    let out = runtime::folder::default_out(images);
    let (summary, _) = embed_dir(embedder, images, &out, progress)?;
    let source = EmbeddingsSource::default();
    Ok((
        build_from_embeddings(&out, embedder, params, source)?,
        summary,
    ))
}

/// Append an embeddings folder's rows not already in the index (same path and hash).
pub fn add_embeddings(index: &mut CellIndex, emb_dir: &Path, embedder: &Embedder) -> Result<usize> {
    let emb = Embeddings::load(emb_dir)?;
    check_embeddings(&emb, emb_dir, embedder, false)?;
    let known: std::collections::HashSet<(String, String)> = index
        .rows()
        .iter()
        .map(|r| (r.path.clone(), r.sha256.clone()))
        .collect();
    let mut rows = Vec::new();
    let mut vectors = Vec::new();
    for (i, row) in rows_of(&emb, None)?.into_iter().enumerate() {
        if !known.contains(&(row.path.clone(), row.sha256.clone())) {
            vectors.extend_from_slice(emb.row(i));
            rows.push(row);
        }
    }
    let n = rows.len();
    index.add(rows, &vectors)?;
    Ok(n)
}

/// Open an index and the model it was built with (or `model`, which must be the same model).
pub fn open_with_model(
    dir: &Path,
    model: Option<&Path>,
    opts: &EmbedOptions,
) -> Result<(CellIndex, Embedder)> {
    let index = CellIndex::open(dir)?;
    let card = model
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(&index.model().card));
    let embedder = Embedder::new(&card, opts).map_err(|e| match e {
        runtime::Error::Core(cellspace_core::Error::Io { path, err })
            if err.kind() == std::io::ErrorKind::NotFound =>
        {
            Error::ModelMismatch(format!(
                "the model this index was built with ({}) is not at {}: pass --model",
                index.model().name,
                path.display()
            ))
        }
        e => e.into(),
    })?;
    index.model().check(&embedder)?;
    Ok((index, embedder))
}

/// Neighbours of one query image, or why it could not be searched.
#[derive(Debug, Serialize)]
pub struct QueryResult {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub neighbours: Vec<Hit>,
}

/// Which cells a query may return.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryFilter {
    /// Skip the query's own cell: indexed copies of the same file and, when the file is
    /// indexed with a source group, every copy of the same original.
    pub exclude_self: bool,
    /// At most one hit per original cell (source group; identical files where unknown).
    pub distinct: bool,
}

/// The rows that are the same cell as an indexed file with content hash `sha`.
pub fn same_cell(index: &CellIndex, sha: &str) -> Vec<bool> {
    let groups: std::collections::HashSet<&str> = index
        .rows()
        .iter()
        .filter(|r| r.sha256 == sha)
        .filter_map(|r| r.group.as_deref())
        .collect();
    index
        .rows()
        .iter()
        .map(|r| r.sha256 == sha || r.group.as_deref().is_some_and(|g| groups.contains(g)))
        .collect()
}

/// Search the index for each image.
pub fn query(
    index: &CellIndex,
    embedder: &Embedder,
    images: &[PathBuf],
    k: usize,
    ef: Option<usize>,
    filter: QueryFilter,
) -> Vec<QueryResult> {
    images
        .iter()
        .map(|img| {
            let r = (|| -> Result<Vec<Hit>> {
                let bytes = cellspace_core::preprocess::read_image_file(img)?;
                let sha = cellspace_core::sha256_hex(&bytes);
                let rgb = cellspace_core::preprocess::decode_rgb(&bytes).map_err(|reason| {
                    cellspace_core::Error::Image {
                        path: img.clone(),
                        reason,
                    }
                })?;
                let v = embedder.embed_image(&rgb)?;
                let own = if filter.exclude_self {
                    same_cell(index, &sha)
                } else {
                    Vec::new()
                };
                index.search_cells(
                    &v,
                    k,
                    ef,
                    |id| own.get(id).copied().unwrap_or(false),
                    filter.distinct,
                )
            })();
            match r {
                Ok(neighbours) => QueryResult {
                    image: img.display().to_string(),
                    error: None,
                    neighbours,
                },
                Err(e) => QueryResult {
                    image: img.display().to_string(),
                    error: Some(e.to_string()),
                    neighbours: Vec::new(),
                },
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct EvalResult {
    /// Exact retrieval metrics of the query folder against the indexed cells.
    pub retrieval: RetrievalReport,
    /// Share of the exact 10 nearest neighbours that the HNSW search returns.
    pub hnsw_recall_at_10: f64,
    pub failed: usize,
}

/// Retrieval quality of the index for a labelled query folder (class = parent folder).
pub fn eval(
    index: &CellIndex,
    embedder: &Embedder,
    query_dir: &Path,
    ef: Option<usize>,
) -> Result<EvalResult> {
    let (entries, _) = cellspace_core::dataset::list_images(query_dir)?;
    let paths: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
    let results = embedder.embed_paths(&paths, |_| {});
    let mut q = Vec::new();
    let mut ql = Vec::new();
    let mut failed = 0;
    for (e, r) in entries.iter().zip(results) {
        match r {
            Ok(v) => {
                q.extend(v);
                ql.push(e.class.clone().unwrap_or_default());
            }
            Err(_) => failed += 1,
        }
    }
    if ql.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no image could be embedded",
            query_dir.display()
        )));
    }
    let gl: Vec<String> = index
        .rows()
        .iter()
        .map(|r| r.class.clone().unwrap_or_default())
        .collect();
    let dim = index.model().dim;
    let retrieval = evaluate_unseen(index.vectors(), &gl, &q, &ql, None, dim, 0);
    Ok(EvalResult {
        retrieval,
        hnsw_recall_at_10: recall_at(index, &q, 10, ef)?,
        failed,
    })
}

/// Mean share of the exact top-k found by HNSW search for each query row.
pub fn recall_at(index: &CellIndex, queries: &[f32], k: usize, ef: Option<usize>) -> Result<f64> {
    let dim = index.model().dim;
    let n = queries.len() / dim;
    let mut total = 0.0;
    for q in queries.chunks_exact(dim) {
        let exact: std::collections::HashSet<usize> =
            index.exact(q, k).into_iter().map(|(i, _)| i).collect();
        let found = index.search(q, k, ef, |_| false)?;
        total += found.iter().filter(|h| exact.contains(&h.id)).count() as f64
            / exact.len().max(1) as f64;
    }
    Ok(total / n.max(1) as f64)
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub count: usize,
    pub dim: usize,
    pub params: HnswParams,
    pub model: ModelRef,
    pub memory_bytes: usize,
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
    for r in index.rows() {
        *classes
            .entry(r.class.clone().unwrap_or_else(|| "(none)".into()))
            .or_insert(0) += 1;
    }
    Stats {
        count: index.len(),
        dim: index.model().dim,
        params: index.params(),
        model: index.model().clone(),
        memory_bytes: index.memory_bytes(),
        disk_bytes,
        classes,
    }
}
