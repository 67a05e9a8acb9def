//! cellspace index: a vector store of cells that answers "which known cells look like this
//! one?". An index directory holds the rows (path, class, source group, sidecar fields,
//! tombstones), their vectors ([`store`]: f32, or int8 codes re-ranked from disk), an HNSW
//! graph of its own ([`graph`]) and a versioned manifest with a checksum of every file and the
//! model the index was built with, so it refuses any other model. Searches take a [`Filter`]
//! (field conditions, the query's own cell, one hit per original) checked inside the graph
//! walk; a removal is a persisted tombstone until `compact`.
//!
//! Features: `embed` (default) adds what needs the model ([`embed`]: open with the model,
//! embed-then-build, query by image, eval) and with it the runtime and onnxruntime; `serve`
//! (default) adds the lab tool's HTTP server ([`serve`]). Without them the library reads
//! embeddings folders and vectors only: `cargo tree -p index --no-default-features` holds
//! neither the runtime nor an HTTP stack.

pub mod atlas_map;
pub mod bench;
pub mod cellindex;
pub mod classify;
pub mod clusters;
#[cfg(feature = "serve")]
pub mod conn;
pub mod edit;
#[cfg(feature = "embed")]
pub mod embed;
pub mod examples;
pub mod filter;
pub mod graph;
pub mod graph_file;
#[cfg(feature = "serve")]
pub mod guard;
pub mod layout;
pub mod legacy_hnsw;
pub mod live;
pub mod manifest;
#[cfg(feature = "serve")]
pub mod map_api;
pub mod map_file;
pub mod ops;
pub mod search;
pub mod search_layer;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sidecar;
pub mod store;
pub mod store_file;
pub mod swap;
#[cfg(feature = "serve")]
pub mod thumbs;
#[cfg(feature = "serve")]
pub mod upload;

pub use cellindex::{CellIndex, Hit, HnswParams, IndexBuilder, IndexParams, Row};
pub use filter::{Condition, Filter};
pub use manifest::{IndexManifest, ModelRef};

use std::path::PathBuf;

/// Everything that can go wrong in the index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] cellspace_core::Error),
    #[cfg(feature = "embed")]
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    ModelMismatch(String),
    #[error("{0}")]
    Invalid(String),
    /// An edit made against an atlas that has changed since (the page's map is stale).
    #[error("{0}")]
    Conflict(String),
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
