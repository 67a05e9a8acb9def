//! The index directory's versioned manifest and file names. The manifest records the model
//! (name, card path, ONNX sha256, dimension), the HNSW parameters and a sha256 of every data
//! file, so a truncated or swapped file is reported before the graph or a vector is read.

use crate::{Error, Result};
use cellspace_core::card::ModelCard;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const ROWS_FILE: &str = "rows.jsonl";
pub const VECTORS_FILE: &str = "embeddings.npy";
/// int8 codes of an index with `--store int8` ([`crate::store_file`]).
pub const CODES_FILE: &str = "codes.i8";
/// The graph (format 3 on: [`crate::graph_file`]).
pub const GRAPH_BIN: &str = "graph.bin";
/// hnsw_rs basename of format 1 and 2 indexes ([`crate::legacy_hnsw`]): `cells.hnsw.graph`
/// and `cells.hnsw.data`.
pub const HNSW_BASENAME: &str = "cells";
pub const GRAPH_FILE: &str = "cells.hnsw.graph";
/// Format written by this build. 2: rows may carry metadata and tombstones (a build that
/// reads only format 1 would return removed cells, so it must refuse these indexes). 3: the
/// graph is cellspace's own `graph.bin` instead of hnsw_rs's two files (still read).
pub const FORMAT_VERSION: u32 = 3;

/// The model an index was built with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    /// Card path as given at build time (absolute when possible).
    pub card: String,
    pub onnx_sha256: String,
    pub dim: usize,
    /// [`cellspace_core::preprocess::Preprocess::fingerprint`] of the card's preprocessing
    /// (empty in indexes written before it was recorded: then only the ONNX is checked).
    #[serde(default)]
    pub preprocess_sha256: String,
}

impl ModelRef {
    /// The model of a card (at `card_path`).
    pub fn of(card: &ModelCard, card_path: &Path) -> Self {
        let path = std::fs::canonicalize(card_path).unwrap_or_else(|_| card_path.to_path_buf());
        Self {
            name: card.name.clone(),
            card: path.display().to_string(),
            onnx_sha256: card.onnx_sha256.clone(),
            dim: card.embedding_dim,
            preprocess_sha256: card.preprocess.fingerprint(),
        }
    }

    /// Refuse a model other than this one.
    pub fn check(&self, card: &ModelCard, card_path: &Path) -> Result<()> {
        if card.onnx_sha256 != self.onnx_sha256 {
            return Err(Error::ModelMismatch(format!(
                "this index was built with model {} (sha256 {}), but {} is model {} (sha256 {}); rebuild the index or pass --model with the original",
                self.name,
                short(&self.onnx_sha256),
                card_path.display(),
                card.name,
                short(&card.onnx_sha256)
            )));
        }
        let pre = card.preprocess.fingerprint();
        if !self.preprocess_sha256.is_empty() && pre != self.preprocess_sha256 {
            return Err(Error::ModelMismatch(format!(
                "this index was built with model {} and another preprocessing (window, resize or normalisation) than the card {} gives; its vectors would not match: rebuild the index or pass --model with the original card",
                self.name,
                card_path.display(),
            )));
        }
        Ok(())
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexManifest {
    pub format_version: u32,
    pub model: ModelRef,
    pub params: crate::IndexParams,
    pub count: usize,
    /// sha256 of each data file by name (the graph files are absent for an empty index).
    pub files: std::collections::BTreeMap<String, String>,
    pub created: String,
}

impl IndexManifest {
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST_FILE);
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: no index here (build one with `index build`)",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
        let m: IndexManifest = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
            path: p.clone(),
            reason: format!("not an index manifest: {e}"),
        })?;
        if m.format_version > FORMAT_VERSION {
            return Err(Error::Corrupt {
                path: p,
                reason: format!(
                    "index format {} is newer than this build ({FORMAT_VERSION})",
                    m.format_version
                ),
            });
        }
        Ok(m)
    }

    /// Check every recorded file against its sha256.
    pub fn verify_files(&self, dir: &Path) -> Result<()> {
        for (name, sha) in &self.files {
            let p = dir.join(name);
            if &cellspace_core::atomic::sha256_file(&p)? != sha {
                return Err(Error::Corrupt { path: p, reason: "content does not match the manifest (truncated or modified); rebuild the index".into() });
            }
        }
        Ok(())
    }
}
