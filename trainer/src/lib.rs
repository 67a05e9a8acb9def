//! cellspace trainer: learns a cell-image encoder without labels (triplet batch-hard or
//! NT-Xent), measures it on held-out source groups, and exports it to ONNX with a model card.
//!
//! One file each for the model ([`model`]), the losses ([`loss`]), augmentation ([`augment`]),
//! data ([`data`]), the training loop ([`train`]), evaluation ([`eval`]) and export
//! ([`export`]); [`support`] holds NNCLR's queue of neighbours; [`plot`] and [`tsne`] draw what
//! a person looks at.

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
pub mod epoch_log;
pub mod eval;
pub mod export;
pub mod init;
pub mod loss;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod robustness;
pub mod robustness_table;
pub mod support;
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
    /// A checkpoint, run record or weights file that cannot be read or written; the reader's
    /// or writer's own error is the source.
    #[error("{path}")]
    Checkpoint {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// burn-onnx could not trace the model.
    #[error("ONNX export failed")]
    Export {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The weights hold NaN or an infinity: never exported.
    #[error(
        "ONNX export failed: the model's weights hold {0}, not a finite number (the run diverged): nothing was exported"
    )]
    NonFiniteWeights(f32),
    /// The traced graph is not one input and one output.
    #[error("ONNX export failed: exported ONNX has no single input/output")]
    GraphShape,
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
