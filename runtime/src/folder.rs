//! `runtime embed DIR`: every image below a folder into `embeddings.npy` + `manifest.jsonl`,
//! with a report of what failed. Files whose content hash is unchanged since the last run with
//! the same model are reused, and partial results are saved as the run goes, so an
//! interrupted run resumes instead of starting over. Every file is replaced atomically.

pub use cellspace_core::embeddings::*;
pub use cellspace_core::shard::Shard;

use crate::{Embedder, Error, Result};
use cellspace_core::dataset::list_images;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Images embedded between two saves of partial results.
pub const SAVE_EVERY: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    pub out_dir: PathBuf,
    pub total: usize,
    pub embedded: usize,
    /// Rows written: one per image, or one per white cell with [`Cells::All`].
    pub rows: usize,
    /// Unchanged files whose previous rows were reused.
    pub reused: usize,
    pub failed: usize,
    /// Embedded images per localisation flag (see the manifest's `window.flags`).
    pub flagged: std::collections::BTreeMap<String, usize>,
    pub seconds: f64,
    pub images_per_s: f64,
    pub provider: String,
    /// How the windows were sized (the folder's calibration, or the user's pixel size).
    pub scale: FolderScale,
}

/// Where a folder's embedding says how far it is (one stage, "embedding"); the library draws
/// nothing itself: the tools pass [`cellspace_core::cli::terminal_bar`], `&()` shows nothing.
pub use cellspace_core::progress::Progress;

/// Embed every image below `root` into `out`.
pub fn embed_dir(
    emb: &Embedder,
    root: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(EmbedSummary, Vec<Failure>)> {
    embed_shard(emb, root, out, progress, None, Cells::Largest)
}

/// [`embed_dir`] of one shard of the images ([`Shard::contains`]), or all with None, with
/// one row per image or per white cell (`cells`).
pub fn embed_shard(
    emb: &Embedder,
    root: &Path,
    out: &Path,
    progress: &dyn Progress,
    shard: Option<Shard>,
    cells: Cells,
) -> Result<(EmbedSummary, Vec<Failure>)> {
    let started = Instant::now();
    // the folder is identified by its canonical path, never by how it was typed
    let root = &std::fs::canonicalize(root).map_err(|e| cellspace_core::Error::io(root, e))?;
    let _lock = cellspace_core::atomic::OutputLock::acquire(&out.join(LOCK_FILE), out)?;
    cellspace_core::atomic::remove_stale_temps(out);
    let (mut entries, problems) = list_images(root)?;
    // calibrated on the whole folder, so that every shard sizes its windows alike
    let all: Vec<PathBuf> = entries.iter().map(|e| e.path.clone()).collect();
    let pre = emb.calibrated(&all);
    let scale = FolderScale::of(&pre);
    let mine = |rel: &str| shard.is_none_or(|s| s.contains(rel));
    entries.retain(|e| mine(&e.rel));
    let mut failures = listing_failures(problems, root, &mine);
    let mut previous = previous_rows(emb, out, &scale, cells);
    let Sorted {
        mut done,
        todo,
        reused,
    } = reuse_unchanged(&entries, &mut previous, &mut failures);
    let run = Run {
        emb,
        pre: &pre,
        root,
        scale: &scale,
        out,
        shard,
        cells,
    };
    let infer_start = Instant::now();
    let embedded = run.embed_todo(&todo, &mut done, &mut failures, progress)?;
    run.save(&mut done, &failures, true)?;
    let secs = infer_start.elapsed().as_secs_f64();
    let summary = EmbedSummary {
        out_dir: out.to_path_buf(),
        total: entries.len(),
        embedded,
        rows: done.len(),
        reused,
        failed: failures.len(),
        flagged: images_per_flag(&done),
        seconds: started.elapsed().as_secs_f64(),
        images_per_s: if embedded > 0 {
            embedded as f64 / secs.max(1e-9)
        } else {
            0.0
        },
        provider: emb.provider().label().to_string(),
        scale,
    };
    Ok((summary, failures))
}

/// A folder's files sorted by [`reuse_unchanged`].
struct Sorted {
    /// Rows reused as they were.
    done: Vec<(ManifestRow, Vec<f32>)>,
    /// Files to embed, with their rows (hash known).
    todo: Vec<(ManifestRow, PathBuf)>,
    /// Files reused.
    reused: usize,
}

/// The rows of files unchanged since the last run (same path and content) as they were, the
/// files still to embed, and how many files were reused; files that cannot be hashed fail.
fn reuse_unchanged(
    entries: &[cellspace_core::dataset::ImageEntry],
    previous: &mut Previous,
    failures: &mut Vec<Failure>,
) -> Sorted {
    let mut done: Vec<(ManifestRow, Vec<f32>)> = Vec::new();
    let mut todo: Vec<(ManifestRow, PathBuf)> = Vec::new();
    let mut reused = 0usize;
    for (e, h) in entries.iter().zip(hashed_rows(entries)) {
        match h {
            Err(reason) => failures.push(Failure {
                path: e.rel.clone(),
                reason,
            }),
            Ok(row) => match previous.remove(&(row.path.clone(), row.sha256.clone())) {
                Some(rows) => {
                    reused += 1;
                    done.extend(rows.into_iter().map(|(v, r)| {
                        let row = ManifestRow {
                            window: r.window,
                            cell: r.cell,
                            ..row.clone()
                        };
                        (row, v)
                    }))
                }
                None => todo.push((row, e.path.clone())),
            },
        }
    }
    Sorted { done, todo, reused }
}

/// Images per flag: a field of several cells counts once for a flag any of its cells has.
fn images_per_flag(done: &[(ManifestRow, Vec<f32>)]) -> std::collections::BTreeMap<String, usize> {
    let mut flagged = std::collections::BTreeMap::new();
    for rows in done.chunk_by(|a, b| a.0.path == b.0.path) {
        let flags: std::collections::BTreeSet<&str> = rows
            .iter()
            .flat_map(|(r, _)| r.window.iter().flat_map(|w| &w.flags))
            .map(|f| f.name())
            .collect();
        for f in flags {
            *flagged.entry(f.to_string()).or_insert(0) += 1;
        }
    }
    flagged
}

/// The listing's problems as failures, relative to the folder like every other failure and
/// manifest row (`/`-separated), for the files of this shard.
fn listing_failures(
    problems: Vec<cellspace_core::dataset::ListingProblem>,
    root: &Path,
    mine: &dyn Fn(&str) -> bool,
) -> Vec<Failure> {
    problems
        .into_iter()
        .map(|p| Failure {
            path: p
                .path
                .strip_prefix(root)
                .unwrap_or(&p.path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            reason: p.reason,
        })
        .filter(|f| mine(&f.path))
        .collect()
}

/// Each file's rows (one per cell, in order) saved earlier in `out`, by (path, content hash):
/// only when they were made with this model, preprocessing, scale, choice of cells and window
/// rule. A damaged folder is said so and embedded again, never reused.
type Previous = HashMap<(String, String), Vec<(Vec<f32>, ManifestRow)>>;

fn previous_rows(emb: &Embedder, out: &Path, scale: &FolderScale, cells: Cells) -> Previous {
    let loaded = match Embeddings::load(out) {
        Err(e) if out.join(STATE_FILE).exists() => {
            log::warn!("not reusing {}: {e}", out.display());
            Err(e)
        }
        r => r,
    };
    let mut previous: Previous = HashMap::new();
    match loaded {
        Ok(prev)
            if prev.state.model_sha256 == emb.card().onnx_sha256
                && prev.state.preprocess_sha256 == emb.card().preprocess.fingerprint()
                && prev.state.scale.compatible(scale)
                && prev.state.cells == cells
                && prev.state.window_rule == WINDOW_RULE =>
        {
            for (i, r) in prev.rows.iter().enumerate() {
                let key = (r.path.clone(), r.sha256.clone());
                previous
                    .entry(key)
                    .or_default()
                    .push((prev.row(i).to_vec(), r.clone()));
            }
        }
        _ => {}
    }
    previous
}

/// Each file's manifest row without its window (size and content hash), or why it could not
/// be read.
fn hashed_rows(
    entries: &[cellspace_core::dataset::ImageEntry],
) -> Vec<std::result::Result<ManifestRow, String>> {
    entries
        .par_iter()
        .map(|e| {
            let bytes = cellspace_core::preprocess::read_image_file(&e.path)
                .map_err(|err| err.to_string())?;
            Ok(ManifestRow {
                path: e.rel.clone(),
                class: e.class.clone(),
                size: bytes.len() as u64,
                sha256: cellspace_core::sha256_hex(&bytes),
                window: None,
                cell: None,
            })
        })
        .collect()
}

/// What one `runtime embed` run writes with.
struct Run<'a> {
    emb: &'a Embedder,
    pre: &'a cellspace_core::preprocess::Preprocess,
    root: &'a Path,
    scale: &'a FolderScale,
    out: &'a Path,
    shard: Option<Shard>,
    cells: Cells,
}

impl Run<'_> {
    /// Embed the files `todo` into `done` (one row per cell found with [`Cells::All`]),
    /// saving partial results every [`SAVE_EVERY`] files; the number of files embedded.
    fn embed_todo(
        &self,
        todo: &[(ManifestRow, PathBuf)],
        done: &mut Vec<(ManifestRow, Vec<f32>)>,
        failures: &mut Vec<Failure>,
        progress: &dyn Progress,
    ) -> Result<usize> {
        progress.start("embedding", todo.len(), 0);
        let all = self.cells == Cells::All;
        let mut embedded = 0usize;
        for chunk in todo.chunks(SAVE_EVERY) {
            let paths: Vec<PathBuf> = chunk.iter().map(|(_, p)| p.clone()).collect();
            let results = self
                .emb
                .embed_paths_cells(self.pre, &paths, all, |n| progress.advance(n));
            for ((row, _), r) in chunk.iter().zip(results) {
                match r {
                    Ok(found) => {
                        embedded += 1;
                        let several = found.len() > 1;
                        done.extend(found.into_iter().enumerate().map(|(i, (v, window))| {
                            let row = ManifestRow {
                                window,
                                cell: several.then_some(i as u32),
                                ..row.clone()
                            };
                            (row, v)
                        }));
                    }
                    Err(e) => failures.push(Failure {
                        path: row.path.clone(),
                        reason: cellspace_core::error_text(e.as_ref()),
                    }),
                }
            }
            self.save(done, failures, false)?;
        }
        progress.finish();
        Ok(embedded)
    }

    fn save(
        &self,
        done: &mut [(ManifestRow, Vec<f32>)],
        failures: &[Failure],
        complete: bool,
    ) -> Result<()> {
        write_outputs(
            self.emb,
            (self.root, self.scale),
            self.out,
            done,
            failures,
            (complete, self.shard, self.cells),
        )
    }
}

/// Rows of the last consistent save in `out` (0 when there is none).
fn saved_rows(out: &Path) -> usize {
    Embeddings::load(out).map_or(0, |e| e.rows.len())
}

fn write_outputs(
    emb: &Embedder,
    (root, scale): (&Path, &FolderScale),
    out: &Path,
    done: &mut [(ManifestRow, Vec<f32>)],
    failures: &[Failure],
    (complete, shard, cells): (bool, Option<Shard>, Cells),
) -> Result<()> {
    done.sort_by(|a, b| (&a.0.path, a.0.cell).cmp(&(&b.0.path, b.0.cell)));
    let rows: Vec<ManifestRow> = done.iter().map(|(r, _)| r.clone()).collect();
    let data: Vec<f32> = done.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let state = EmbedState {
        model: emb.card().name.clone(),
        model_sha256: emb.card().onnx_sha256.clone(),
        preprocess_sha256: emb.card().preprocess.fingerprint(),
        dim: emb.dim(),
        root: root.display().to_string(),
        rows: 0,
        manifest_sha256: String::new(),
        embeddings_sha256: String::new(),
        complete,
        shard,
        scale: scale.clone(),
        cells,
        window_rule: WINDOW_RULE,
    };
    save_folder(out, &rows, &data, failures, &state).map_err(|e| match e {
        cellspace_core::Error::Io { path, err } if err.raw_os_error() == Some(28) => {
            Error::Output {
                path,
                reason: format!(
                    "no space left on the device: free some and run again; the {} images embedded before this save are kept and reused",
                    saved_rows(out)
                ),
            }
        }
        e => e.into(),
    })
}
