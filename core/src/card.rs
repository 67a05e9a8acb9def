//! The model card: the JSON file beside every exported `NAME.onnx` that carries everything the
//! runtime needs (input size, resize rule, normalisation, embedding dimension, tensor names,
//! checksum) and what a person wants to know (training config, data, held-out metrics).

use crate::preprocess::Preprocess;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the card format written by this build.
pub const CARD_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub format_version: u32,
    /// Model name (file stem of the `.onnx`).
    pub name: String,
    /// File name of the ONNX model, relative to the card.
    pub onnx_file: String,
    /// sha256 of the ONNX file, hex.
    pub onnx_sha256: String,
    pub input_name: String,
    pub output_name: String,
    pub preprocess: Preprocess,
    /// Embedding dimension of the output `[N, dim]`.
    pub embedding_dim: usize,
    /// Whether outputs are L2-normalised (cosine = dot product).
    pub l2_normalized: bool,
    /// Views the graph averages its embedding over (inside the ONNX: the runtime makes one
    /// call either way); cards before this field are `none`.
    #[serde(default)]
    pub test_time_views: TestTimeViews,
    /// Training configuration (free-form JSON written by the trainer).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Data summary (free-form JSON).
    #[serde(default)]
    pub data: serde_json::Value,
    /// Held-out metrics (free-form JSON).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// RFC 3339 time of export.
    #[serde(default)]
    pub created: String,
}

/// Whether the served embedding averages over the square's symmetries (test-time
/// augmentation, done inside the exported graph).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestTimeViews {
    /// One view: the window as it is.
    #[default]
    None,
    /// The eight symmetries of the square (four quarter turns, each mirrored or not).
    #[serde(rename = "dihedral-8")]
    Dihedral8,
}

impl TestTimeViews {
    /// How many encoder passes one embedding costs.
    pub fn passes(self) -> usize {
        match self {
            TestTimeViews::None => 1,
            TestTimeViews::Dihedral8 => 8,
        }
    }
}

impl ModelCard {
    /// The card path that belongs to a model path (`m.onnx` -> `m.json`); a `.json` is kept.
    pub fn card_path_for(model: &Path) -> PathBuf {
        model.with_extension("json")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(path, format!("not a model card: {e}")))?;
        if card.format_version > CARD_FORMAT {
            return Err(Error::invalid(
                path,
                format!(
                    "card format {} is newer than this build understands ({CARD_FORMAT})",
                    card.format_version
                ),
            ));
        }
        Ok(card)
    }

    /// Path of the ONNX file this card describes (relative to the card's folder).
    pub fn onnx_path(&self, card_path: &Path) -> PathBuf {
        card_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.onnx_file)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::atomic::write_json(path, self)
    }

    /// Check that `onnx_bytes` is the file this card was written for.
    pub fn verify_checksum(&self, onnx_path: &Path, onnx_bytes: &[u8]) -> Result<()> {
        let actual = crate::sha256_hex(onnx_bytes);
        if actual != self.onnx_sha256 {
            return Err(Error::invalid(
                onnx_path,
                format!(
                    "sha256 {actual} does not match the model card ({}); the model file was changed or is incomplete",
                    self.onnx_sha256
                ),
            ));
        }
        Ok(())
    }
}
