//! cellspace runtime: turn cell images into embeddings with a model exported by the trainer,
//! through onnxruntime (CPU, CUDA or TensorRT). It depends on no training framework, so a lab
//! tool ships only this crate, `libonnxruntime` and the model with its card.
//!
//! ```no_run
//! let embedder = runtime::Embedder::from_model_card("models/cellspace.json")?;
//! let emb = embedder.embed_path(std::path::Path::new("cell.jpeg"))?;
//! assert_eq!(emb.len(), embedder.dim());
//! # Ok::<(), runtime::Error>(())
//! ```

pub mod bench;
pub mod embedder;
pub mod folder;
pub mod ortlib;

pub use cellspace_core::card::ModelCard;
/// The `.npy` format, in cellspace-core (the index reads it too).
pub use cellspace_core::npy;
pub use embedder::{Device, EmbedOptions, Embedder};

use std::path::PathBuf;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] cellspace_core::Error),
    #[error("onnxruntime library: {0}")]
    Library(String),
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("{0} execution provider could not start: {1}")]
    Provider(&'static str, String),
    #[error("inference failed: {0}")]
    Inference(String),
    /// onnxruntime refused a step of an inference; its own error is the source.
    #[error("inference failed {what}")]
    Ort {
        what: &'static str,
        #[source]
        source: ort::Error,
    },
    #[error("{path}: {reason}")]
    Output { path: PathBuf, reason: String },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the default model is looked for, in order: `$CELLSPACE_MODEL`, `models/cellspace.json`
/// beside the executable's workspace (walking up), then under the current directory.
pub const DEFAULT_MODEL: &str = "models/cellspace.json";

/// The default model card, if one can be found.
pub fn default_model() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CELLSPACE_MODEL") {
        return Some(PathBuf::from(p));
    }
    let mut starts = vec![];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in starts {
        for dir in start.ancestors() {
            let p = dir.join(DEFAULT_MODEL);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}
