//! The embeddings folder that `runtime embed` writes and the index reads: `embeddings.npy`
//! (row i is the image on line i of `manifest.jsonl`), `failures.jsonl`, and `embed.json`,
//! which ties the folder to its model and holds the checksums that make a changed, truncated
//! or half-written file an error rather than wrong answers. It lives here, in cellspace-core,
//! so that the index reads it without the runtime (and onnxruntime) in its tree.

use crate::locate::Location;
use crate::{Error, Result, npy};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const EMBEDDINGS_FILE: &str = "embeddings.npy";
pub const MANIFEST_FILE: &str = "manifest.jsonl";
pub const FAILURES_FILE: &str = "failures.jsonl";
pub const STATE_FILE: &str = "embed.json";
/// Held while a run writes the folder ([`crate::atomic::OutputLock`]).
pub const LOCK_FILE: &str = ".lock";

/// One embedded image; line i of the manifest is row i of `embeddings.npy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Path relative to the embedded folder, `/`-separated.
    pub path: String,
    /// Parent folder name, when the image is in a subfolder.
    pub class: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// The window around the white cell that was embedded, with its flags (`no-stain`,
    /// `several`, `border`, `cut`); absent when the model looks at the whole field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Location>,
    /// Which white cell of its field this row is (0 = the largest), when the folder was
    /// embedded with every cell ([`Cells::All`]) and the field holds several; absent for a
    /// one-cell image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<u32>,
}

/// The version of the code that sizes and places windows, which the card's preprocessing does
/// not describe: 1, a calibrated folder's field whose own red cells read beyond 20% of the
/// folder's was sized (in part, in full beyond 44%) by its own reading; 2, every field of a
/// calibrated folder is sized by the calibration, and windows carry the cell's box; 3, every
/// cell of a field (`--cells all`) splits two touching white cells
/// ([`crate::locate::TWO_CELLS_RBC`]).
pub const WINDOW_RULE: u32 = 3;

fn first_window_rule() -> u32 {
    1
}

/// Which white cells of a field become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Cells {
    /// The largest stained cell: one row per image (the Kaggle crops hold one).
    #[default]
    Largest,
    /// Every white cell found ([`crate::locate::locate_all_sized`]): one row per cell, with
    /// its number and box.
    All,
}

/// A file that could not be embedded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub path: String,
    pub reason: String,
}

/// What ties an output folder to its model and makes partial results checkable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedState {
    pub model: String,
    pub model_sha256: String,
    /// The card's preprocessing fingerprint: rows are reused only under the same one.
    #[serde(default)]
    pub preprocess_sha256: String,
    pub dim: usize,
    pub root: String,
    pub rows: usize,
    pub manifest_sha256: String,
    /// sha256 of `embeddings.npy` (empty in folders written before it was recorded).
    #[serde(default)]
    pub embeddings_sha256: String,
    pub complete: bool,
    /// The shard of the folder's images this run embedded (`runtime embed --shard I/N`);
    /// None: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
    /// Which white cells of each field are rows; rows are reused only under the same choice.
    #[serde(default)]
    pub cells: Cells,
    /// The version of the window-sizing code the rows were prepared by ([`WINDOW_RULE`]);
    /// rows are reused, and shards merged, only under the same one.
    #[serde(default = "first_window_rule")]
    pub window_rule: u32,
    /// How the windows were sized.
    #[serde(flatten)]
    pub scale: FolderScale,
}

/// How a folder's windows were sized: by the folder's red-cell calibration, or by a pixel size
/// the user gave (neither: each field's own scale, or a whole-field model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FolderScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::calibration::Calibration>,
    /// The red-cell diameter from `--pixel-size`, px.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_size_rbc_px: Option<f32>,
    /// The folder's stain shift every field was standardised by ([`crate::stain`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stain_shift: Option<crate::stain::StainShift>,
}

impl FolderScale {
    /// The scale a folder is embedded at under `pre`.
    pub fn of(pre: &crate::preprocess::Preprocess) -> Self {
        Self {
            calibration: pre.calibration,
            pixel_size_rbc_px: pre.rbc_px_override,
            stain_shift: pre.folder_stain_shift(),
        }
    }

    /// Whether rows embedded at `self` can be reused at `other`: the same pixel size, and
    /// calibrations within 3% of each other (adding fields to a folder moves its median by a
    /// percent, which moves a window by a pixel), and stain shifts alike (to 1%, 0.5°).
    pub fn compatible(&self, other: &FolderScale) -> bool {
        let alike = |a: &crate::stain::StainShift, b: &crate::stain::StainShift| {
            (a.gamma / b.gamma - 1.0).abs() < 0.01
                && (a.turn - b.turn).abs() < 0.5
                && (a.scale / b.scale - 1.0).abs() < 0.01
        };
        let same_shift = match (&self.stain_shift, &other.stain_shift) {
            (None, None) => true,
            (Some(a), Some(b)) => alike(a, b),
            (Some(s), None) | (None, Some(s)) => s.is_none(),
        };
        let close = match (&self.calibration, &other.calibration) {
            (None, None) => true,
            (Some(a), Some(b)) => (a.rbc_px / b.rbc_px - 1.0).abs() < 0.03,
            _ => false,
        };
        close && same_shift && self.pixel_size_rbc_px == other.pixel_size_rbc_px
    }
}

/// Embeddings and manifest of an output folder, checked against each other.
pub struct Embeddings {
    pub rows: Vec<ManifestRow>,
    pub data: Vec<f32>,
    pub dim: usize,
    pub state: EmbedState,
}

impl Embeddings {
    pub fn load(dir: &Path) -> Result<Self> {
        let sp = dir.join(STATE_FILE);
        let bad = |p: &Path, r: String| Error::invalid(p, r);
        let text = std::fs::read_to_string(&sp).map_err(|e| crate::Error::io(&sp, e))?;
        let mut state: EmbedState =
            serde_json::from_str(&text).map_err(|e| bad(&sp, e.to_string()))?;
        state.root = resolve_root(dir, &state.root).display().to_string();
        let mp = dir.join(MANIFEST_FILE);
        let mtext = std::fs::read(&mp).map_err(|e| crate::Error::io(&mp, e))?;
        if crate::sha256_hex(&mtext) != state.manifest_sha256 {
            return Err(bad(
                &mp,
                "does not match embed.json (written by an interrupted run?)".into(),
            ));
        }
        let rows: Vec<ManifestRow> = String::from_utf8_lossy(&mtext)
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(&mp, e.to_string()))?;
        let np = dir.join(EMBEDDINGS_FILE);
        let nbytes = std::fs::read(&np).map_err(|e| crate::Error::io(&np, e))?;
        if !state.embeddings_sha256.is_empty()
            && crate::sha256_hex(&nbytes) != state.embeddings_sha256
        {
            return Err(bad(
                &np,
                "does not match the checksum in embed.json: the file was changed or corrupted; embed again".into(),
            ));
        }
        let (data, dim) = npy::decode(&np, &nbytes)?;
        if rows.len() != state.rows || data.len() != rows.len() * dim || dim != state.dim {
            return Err(bad(
                dir,
                format!(
                    "{} manifest rows, {} embedding rows of dim {dim}: inconsistent",
                    rows.len(),
                    data.len() / dim.max(1)
                ),
            ));
        }
        // every row is what a model card promises: finite and unit-length
        for (i, v) in data.chunks_exact(dim.max(1)).enumerate() {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !norm.is_finite() || (norm - 1.0).abs() > 1e-3 {
                return Err(bad(
                    &np,
                    format!(
                        "row {i} ({}) is not a unit-length finite vector (norm {norm}): corrupted; embed again",
                        rows[i].path
                    ),
                ));
            }
        }
        Ok(Self {
            rows,
            data,
            dim,
            state,
        })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The images' folder of an embeddings folder `dir`, as an absolute path that does not depend
/// on the current directory: `runtime embed` records it canonical; a relative root (written by
/// older builds, relative to wherever they ran) is taken beside `dir`, where `runtime embed`
/// puts its output by default.
pub fn resolve_root(dir: &Path, root: &str) -> PathBuf {
    let root = Path::new(root);
    let joined = if root.is_absolute() {
        root.to_path_buf()
    } else {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        dir.parent().unwrap_or(&dir).join(root)
    };
    std::fs::canonicalize(&joined).unwrap_or(joined)
}

/// The default output folder of `runtime embed DIR --shard I/N`: `DIR.shard-I-of-N.embeddings`.
pub fn default_shard_out(root: &Path, shard: crate::shard::Shard) -> PathBuf {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    root.with_file_name(format!(
        "{name}.shard-{}-of-{}.embeddings",
        shard.index, shard.count
    ))
}

/// The default output folder of `runtime embed DIR`: `DIR.embeddings` beside it.
pub fn default_out(root: &Path) -> PathBuf {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    root.with_file_name(format!("{name}.embeddings"))
}

/// JSON lines: one serialised item per line.
pub fn to_jsonl<'a, T: Serialize + 'a>(items: impl IntoIterator<Item = &'a T>) -> String {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item).expect("serialises"));
        text.push('\n');
    }
    text
}

/// Write an embeddings folder at `out` (created if needed): the manifest, the vectors and the
/// failures all or none ([`crate::atomic::write_all_atomic`], so a full disk leaves the
/// previous consistent set), then `embed.json` from `state` with the row count and checksums
/// set here (its `complete` is the caller's). Rows and vectors already on disk as they are
/// (a last save that only marks the folder complete) are not written again, so finishing needs
/// no free space.
pub fn save_folder(
    out: &Path,
    rows: &[ManifestRow],
    data: &[f32],
    failures: &[Failure],
    state: &EmbedState,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let manifest = to_jsonl(rows);
    let ftext = to_jsonl(failures);
    let npy_bytes = npy::encode(data, state.dim);
    let (np, mp, fp) = (
        out.join(EMBEDDINGS_FILE),
        out.join(MANIFEST_FILE),
        out.join(FAILURES_FILE),
    );
    let manifest_sha256 = crate::sha256_hex(manifest.as_bytes());
    let embeddings_sha256 = crate::sha256_hex(&npy_bytes);
    let unchanged = std::fs::read_to_string(out.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<EmbedState>(&t).ok())
        .is_some_and(|st| {
            st.manifest_sha256 == manifest_sha256 && st.embeddings_sha256 == embeddings_sha256
        })
        // and the files on disk are those (not corrupted since)
        && crate::atomic::sha256_file(&mp).is_ok_and(|h| h == manifest_sha256)
        && crate::atomic::sha256_file(&np).is_ok_and(|h| h == embeddings_sha256);
    let files: Vec<(&Path, &[u8])> = if unchanged {
        vec![(&fp, ftext.as_bytes())]
    } else {
        vec![
            (&np, &npy_bytes),
            (&mp, manifest.as_bytes()),
            (&fp, ftext.as_bytes()),
        ]
    };
    crate::atomic::write_all_atomic(&files)?;
    let state = EmbedState {
        rows: rows.len(),
        manifest_sha256,
        embeddings_sha256,
        ..state.clone()
    };
    crate::atomic::write_json(&out.join(STATE_FILE), &state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stain::StainShift;

    /// Rows embedded with one stain shift undone are not reused, or merged, under another.
    #[test]
    fn rows_are_reused_only_under_the_same_stain_shift() {
        let at = |s: Option<StainShift>| FolderScale {
            calibration: None,
            pixel_size_rbc_px: None,
            stain_shift: s,
        };
        let pale = StainShift {
            scale: 0.6,
            ..StainShift::NONE
        };
        assert!(at(Some(pale)).compatible(&at(Some(pale))));
        assert!(!at(Some(pale)).compatible(&at(Some(StainShift::NONE))));
        assert!(!at(Some(pale)).compatible(&at(None)));
        // a model without stain-anchors (None) and a folder whose shift is none agree
        assert!(at(Some(StainShift::NONE)).compatible(&at(None)));
    }
}
