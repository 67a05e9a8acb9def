//! What the trainer, the runtime and the index share, without burn or onnxruntime.
//!
//! Train/serve parity lives here: [`preprocess`] is the one image -> tensor path both sides
//! call, and [`card`] is the model card that carries every number the runtime needs.
//! [`metrics`] is the retrieval-quality code that `trainer eval` and `index eval` both print.

pub mod atomic;
pub mod calibration;
pub mod card;
pub mod classify;
#[cfg(feature = "cli")]
pub mod cli;
pub mod dataset;
pub mod decode;
pub mod dot;
pub mod duplicates;
pub mod embeddings;
pub mod field;
pub mod hash;
pub mod histogram;
pub mod locate;
pub mod metrics;
pub mod nearest;
pub mod npy;
pub mod outcome;
pub mod preprocess;
pub mod progress;
pub mod reference;
pub mod scale;
pub mod shard;
pub mod shift;
pub mod stain;
pub mod standardise;

use std::path::PathBuf;

/// An error's whole text: its message, then each source's, joined by ": " (what anyhow's `{:#}`
/// prints at the CLI edge). The errors of cellspace's libraries never repeat their source in
/// their own message, so this is where a report or a failures file gets the full reason.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// Everything that can go wrong in the shared core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is part of the message and deliberately not a `source`: a CLI that
    /// prints the chain would repeat it ("(os error 2)" twice).
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: cannot decode image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// L2-normalise a vector in place (no-op for an all-zero vector).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
