//! cellspace index: an HNSW graph (hnsw_rs) over cell embeddings that answers "which known
//! cells look like this one?". [`IndexBuilder`] turns into a read-only [`CellIndex`]; an index
//! directory holds the graph, the vectors, the rows (path, class, hash) and a versioned
//! manifest naming the model it was built with, so it refuses any other model.
//! Rows carry metadata from a sidecar ([`sidecar`]); searches take a [`Filter`] (field
//! conditions, the query's own cell, one hit per original) checked inside the graph walk;
//! hnsw_rs cannot delete points, so a removal is a persisted tombstone until `compact`.

pub mod bench;
pub mod cellindex;
pub mod conn;
pub mod edit;
pub mod filter;
pub mod graph;
pub mod graph_file;
pub mod guard;
pub mod manifest;
pub mod ops;
pub mod search;
pub mod search_layer;
pub mod serve;
pub mod sidecar;
pub mod store;
pub mod store_file;
pub mod thumbs;

pub use cellindex::{CellIndex, Hit, HnswParams, IndexBuilder, Row};
pub use filter::{Condition, Filter};
pub use manifest::{IndexManifest, ModelRef};

use std::path::PathBuf;

/// Everything that can go wrong in the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] cellspace_core::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    ModelMismatch(String),
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Default index directory, relative to the current directory (or `$CELLSPACE_INDEX`).
pub const DEFAULT_INDEX: &str = "cells.index";

pub fn default_index() -> PathBuf {
    std::env::var_os("CELLSPACE_INDEX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_INDEX))
}
