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
pub mod ep;
pub mod folder;
pub mod ortlib;

pub use cellspace_core::card::ModelCard;
/// The `.npy` format, in cellspace-core (the index reads it too).
pub use cellspace_core::npy;
pub use embedder::{EmbedOptions, Embedder};
pub use ep::{Device, ExecutionProvider};

use std::path::PathBuf;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] cellspace_core::Error),
    /// `ORT_DYLIB_PATH` names no file.
    #[error("onnxruntime library: ORT_DYLIB_PATH={} does not exist", .0.display())]
    LibraryPathMissing(PathBuf),
    /// No libonnxruntime where it is looked for.
    #[error(
        "onnxruntime library: libonnxruntime {} not found. Install it with `scripts/setup-ort.sh` (takes the PyPI wheel onnxruntime=={}; CELLSPACE_ORT_GPU=1 for onnxruntime-gpu), put libonnxruntime.so* beside the executable, or set ORT_DYLIB_PATH to the library file",
        ortlib::ORT_VERSION,
        ortlib::ORT_VERSION
    )]
    LibraryNotFound,
    /// The library was found but onnxruntime could not start from it.
    #[error("onnxruntime library {path} could not be loaded")]
    Library {
        path: PathBuf,
        #[source]
        source: ortlib::LoadError,
    },
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("{name} execution provider could not start")]
    Provider {
        name: &'static str,
        #[source]
        source: ep::ProviderError,
    },
    /// `--device auto` found no provider that starts (the CPU one always does).
    #[error("no execution provider could start: {0}")]
    NoProvider(String),
    /// The model's output is not `n` rows of its card's dimension.
    #[error("inference failed: model returned {values} values for {images} images of dim {dim}")]
    OutputShape {
        values: usize,
        images: usize,
        dim: usize,
    },
    /// The model's output holds NaN or an infinity: never written anywhere.
    #[error(
        "inference failed: the model returned {value} for image {image} of the batch: not a finite number (a model trained to NaN?); nothing was written"
    )]
    NonFinite { value: f32, image: usize },
    /// A model whose card says its output is not normalised returned a zero (or non-finite)
    /// row, which has no direction to compare by cosine.
    #[error(
        "inference failed: the model returned an embedding of length {norm} for image {image} of the batch, which cannot be normalised; nothing was written"
    )]
    ZeroEmbedding { norm: f32, image: usize },
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
