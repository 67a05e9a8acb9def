//! cellspace trainer: learns a cell-image encoder without labels (triplet batch-hard or
//! NT-Xent), measures it on held-out source groups, and exports it to ONNX with a model card.
//!
//! One file each for the model ([`model`]), the losses ([`loss`]), augmentation ([`augment`]),
//! data ([`data`]), the training loop ([`train`]), evaluation ([`eval`]) and export
//! ([`export`]); [`plot`] and [`tsne`] draw what a person looks at.

pub mod allocator;
pub mod augment;
pub mod bench;
pub mod candidates;
pub mod checkpoint;
pub mod choice;
pub mod colour;
pub mod cv;
pub mod data;
pub mod device;
pub mod epoch;
pub mod eval;
pub mod export;
pub mod init;
pub mod loss;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod robustness;
pub mod robustness_table;
pub mod train;
pub mod tsne;
pub mod tta;

/// Everything that can go wrong in the trainer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] cellspace_core::Error),
    #[error("{0}")]
    Data(String),
    #[error("{path}: {reason}")]
    Checkpoint {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("ONNX export failed: {0}")]
    Export(String),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Config(String),
    /// The loss stopped being a finite number: nothing after the last checkpoint is kept.
    #[error(
        "epoch {epoch} batch {batch}: the loss is {loss}, not a finite number; training stopped and the last checkpoint (if any) is kept. Lower --lr or raise --temperature"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f32,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
