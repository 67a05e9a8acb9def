//! What needs the model to answer (the `embed` feature, on by default): opening an index with
//! its model, embed-then-build, queries by image and `eval`. The rest of the index library
//! reads embeddings folders and vectors, and needs neither onnxruntime nor the runtime.

use crate::examples::Example;
use crate::ops::{EmbeddingsSource, QueryFilter, build_from_embeddings, recall_at};
use crate::sidecar::Sidecar;
use crate::{CellIndex, Error, Hit, IndexParams, ModelRef, Result};
use cellspace_core::metrics::{RetrievalReport, evaluate_unseen};
use runtime::folder::embed_dir;
use runtime::{EmbedOptions, Embedder};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Embed `images` (into `IMAGES.embeddings`, reusing earlier rows), then build.
pub fn build_from_images(
    images: &Path,
    embedder: &Embedder,
    params: IndexParams,
    progress: &dyn runtime::folder::Progress,
    meta: Option<&Sidecar>,
) -> Result<(CellIndex, runtime::folder::EmbedSummary)> {
    let out = runtime::folder::default_out(images);
    let (summary, _) = embed_dir(embedder, images, &out, progress)?;
    let source = EmbeddingsSource {
        meta,
        ..Default::default()
    };
    Ok((
        build_from_embeddings(&out, &model_ref(embedder), params, source)?,
        summary,
    ))
}

/// The model an embedder runs, as an index records it.
pub fn model_ref(e: &Embedder) -> ModelRef {
    ModelRef::of(e.card(), e.card_path())
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
    index.model().check(embedder.card(), embedder.card_path())?;
    Ok((index, embedder))
}

/// Neighbours of one query image, or why it could not be searched.
#[derive(Debug, Serialize)]
pub struct QueryResult {
    pub image: String,
    /// Which white cell of a field with several this list answers (0 = the largest, as in
    /// the manifest's `cell` and the page's `?cell=N`), and how many the field holds; absent
    /// for a one-cell image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<CellOf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The window that was embedded: where, the red-cell scale, and its flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<cellspace_core::locate::Location>,
    /// Why these neighbours may be wrong without looking wrong: the field is unlike what the
    /// model was trained and checked on (see `window.flags`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub neighbours: Vec<Hit>,
}

/// A cell's place among the white cells of its field.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CellOf {
    pub cell: usize,
    pub of: usize,
}

/// The warning a query's window flags call for, if any.
pub fn out_of_range_warning(window: Option<&cellspace_core::locate::Location>) -> Option<String> {
    window?.out_of_range_warning()
}

/// Search the index for each image: one answer list per white cell found in it (one for a
/// one-cell image, or for an indexed file, which is answered as its row).
pub fn query(
    index: &CellIndex,
    embedder: &Embedder,
    images: &[PathBuf],
    k: usize,
    ef: Option<usize>,
    filter: &QueryFilter,
) -> Vec<QueryResult> {
    images
        .iter()
        .flat_map(|img| {
            let image = img.display().to_string();
            match answer_cells(index, embedder, img, k, ef, filter) {
                Ok(cells) => {
                    let of = cells.len();
                    cells
                        .into_iter()
                        .enumerate()
                        .map(|(i, (neighbours, window))| QueryResult {
                            image: image.clone(),
                            cell: (of > 1).then_some(CellOf { cell: i, of }),
                            error: None,
                            warning: out_of_range_warning(window.as_ref()),
                            window,
                            neighbours,
                        })
                        .collect()
                }
                Err(e) => vec![QueryResult {
                    image,
                    cell: None,
                    error: Some(cellspace_core::error_text(&e)),
                    window: None,
                    warning: None,
                    neighbours: Vec::new(),
                }],
            }
        })
        .collect()
}

/// The neighbours and window of each cell of one query image.
type CellAnswers = Vec<(Vec<Hit>, Option<cellspace_core::locate::Location>)>;

fn answer_cells(
    index: &CellIndex,
    embedder: &Embedder,
    img: &Path,
    k: usize,
    ef: Option<usize>,
    filter: &QueryFilter,
) -> Result<CellAnswers> {
    let (sha, found) = image_query(index, embedder, img)?;
    let cells = match found {
        Found::Row(_) => crate::ops::indexed_cells(index, &sha)
            .into_iter()
            .map(|id| {
                Ok((
                    index.vector(id)?.into_owned(),
                    index.rows()[id].window.clone(),
                ))
            })
            .collect::<Result<_>>()?,
        Found::Embedded(cells) => cells,
    };
    let filter = filter.for_query(index, Some(&sha));
    cells
        .into_iter()
        .map(|(v, window)| Ok((index.search(&v, &filter, k, ef)?, window)))
        .collect()
}

/// Which cells a query by example names (`--like`, `--unlike`): `id:N` or an image path.
#[derive(Debug, Clone, Default)]
pub struct ExampleQuery {
    pub like: Vec<String>,
    pub unlike: Vec<String>,
}

impl ExampleQuery {
    pub fn is_empty(&self) -> bool {
        self.like.is_empty() && self.unlike.is_empty()
    }

    /// How the answer names the query: `like A, B; unlike C`.
    pub fn name(&self) -> String {
        let mut s = format!("like {}", self.like.join(", "));
        if !self.unlike.is_empty() {
            s += &format!("; unlike {}", self.unlike.join(", "));
        }
        s
    }
}

/// One example as a vector: an indexed cell's row, else the image embedded (an indexed file
/// is its row, as a plain query answers it).
fn example(index: &CellIndex, embedder: &Embedder, named: &str) -> Result<Example> {
    if let Some(id) = crate::examples::parse_id(named) {
        return Ok(Example::Row(id));
    }
    Ok(match image_query(index, embedder, Path::new(named))?.1 {
        Found::Row(id) => Example::Row(id),
        // a field of several cells is an example by its largest
        Found::Embedded(mut cells) => Example::Vector(cells.swap_remove(0).0),
    })
}

/// What an image file is to a query: an indexed file's row, or the embedding and window of
/// each white cell found in it (at least one, the largest first).
enum Found {
    Row(usize),
    Embedded(Vec<(Vec<f32>, Option<cellspace_core::locate::Location>)>),
}

/// The file's sha256, and its row when the atlas holds it (answered as indexed, with its
/// folder's calibration), else the image embedded alone.
fn image_query(index: &CellIndex, embedder: &Embedder, path: &Path) -> Result<(String, Found)> {
    let bytes = cellspace_core::preprocess::read_image_file(path)?;
    let sha = cellspace_core::sha256_hex(&bytes);
    if let Some(id) = crate::ops::indexed_file(index, &sha) {
        return Ok((sha, Found::Row(id)));
    }
    let rgb = cellspace_core::preprocess::decode_rgb(&bytes).map_err(|reason| {
        cellspace_core::Error::Image {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    Ok((sha, Found::Embedded(embedder.embed_image_cells(&rgb)?)))
}

/// "More like these, less like those" ([`crate::examples`]): one answer list.
pub fn query_examples(
    index: &CellIndex,
    embedder: &Embedder,
    q: &ExampleQuery,
    k: usize,
    ef: Option<usize>,
    filter: &QueryFilter,
) -> QueryResult {
    let r = (|| -> Result<Vec<Hit>> {
        let named = |names: &[String]| -> Result<Vec<Example>> {
            names.iter().map(|n| example(index, embedder, n)).collect()
        };
        let (like, unlike) = (named(&q.like)?, named(&q.unlike)?);
        crate::examples::search(index, &like, &unlike, filter.for_query(index, None), k, ef)
    })();
    let (neighbours, error) = match r {
        Ok(h) => (h, None),
        Err(e) => (Vec::new(), Some(cellspace_core::error_text(&e))),
    };
    QueryResult {
        image: q.name(),
        cell: None,
        error,
        window: None,
        warning: None,
        neighbours,
    }
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
    // the query folder is one microscope's: calibrated on itself, as `runtime embed` does
    let pre = embedder.calibrated(&paths);
    let results = embedder.embed_paths_as(&pre, &paths, |_| {});
    let mut q = Vec::new();
    let mut ql = Vec::new();
    let mut failed = 0;
    for (e, r) in entries.iter().zip(results) {
        match r {
            Ok((v, _)) => {
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
    // the gallery: the cells not removed
    let (live, gallery) = index.live_vectors()?;
    let gl: Vec<String> = live
        .iter()
        .map(|&i| index.rows()[i].class.clone().unwrap_or_default())
        .collect();
    let dim = index.model().dim;
    let retrieval = evaluate_unseen(&gallery, &gl, &q, &ql, None, dim, 0);
    Ok(EvalResult {
        retrieval,
        hnsw_recall_at_10: recall_at(index, &q, 10, ef)?,
        failed,
    })
}
