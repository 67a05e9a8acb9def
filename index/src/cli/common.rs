//! What every `index` subcommand that opens an index shares: the index, its model, the device
//! and the query microscope's scale and calibration.

use anyhow::{Context, Result};
use index::default_index;
use runtime::{Device, EmbedOptions};
use std::path::PathBuf;

/// Where the model runs, as `runtime`'s flags of the same names.
#[derive(clap::Args, Clone)]
pub struct ProviderArgs {
    /// auto tries the providers compiled in, fastest first (TensorRT, CUDA, CPU); an explicit
    /// GPU that cannot start is an error.
    #[arg(long, default_value = "auto", ignore_case = true, value_parser = cellspace_core::cli::by_name::<Device>(Device::names()))]
    pub device: Device,
    /// TensorRT: build FP16 engines.
    #[arg(long)]
    pub fp16: bool,
    /// TensorRT engine cache folder.
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
}

impl ProviderArgs {
    pub fn opts(&self) -> EmbedOptions {
        EmbedOptions {
            device: self.device,
            fp16: self.fp16,
            trt_cache: self.trt_cache.clone(),
            ..Default::default()
        }
    }
}

#[derive(clap::Args)]
pub struct Common {
    /// Index directory (default: ./cells.index or $CELLSPACE_INDEX).
    #[arg(long, short = 'i')]
    pub index: Option<PathBuf>,
    /// Model card; by default the one the index was built with (must be the same model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// µm per pixel of the query fields, when known (else the red-cell scale is measured).
    #[arg(long, value_parser = cellspace_core::cli::number::pixel_size_um)]
    pub pixel_size: Option<f32>,
    /// The query microscope's calibration: the embed.json `runtime embed` wrote for a folder
    /// of its fields; queries are then sized and colour-standardised as that folder's fields.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

impl Common {
    /// The query embedder set up for the query microscope (pixel size, calibration).
    pub fn for_queries(&self, embedder: &mut runtime::Embedder) -> anyhow::Result<()> {
        embedder.set_pixel_size(self.pixel_size);
        if let Some(p) = &self.calibration {
            embedder.set_calibration(Some(cellspace_core::calibration::load(p)?));
        }
        Ok(())
    }

    pub fn dir(&self) -> PathBuf {
        self.index.clone().unwrap_or_else(default_index)
    }
    pub fn opts(&self) -> EmbedOptions {
        self.provider.opts()
    }
}

/// The model card given, else the default one.
pub fn model_path(m: Option<PathBuf>) -> Result<PathBuf> {
    m.or_else(runtime::default_model)
        .context("no --model given and no models/cellspace.json found")
}
