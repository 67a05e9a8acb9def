//! The model flags every embedding subcommand shares, and the embedder they load.

use anyhow::{Context, Result};
use runtime::{Device, EmbedOptions, Embedder};
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Model (.onnx with its .json card beside it, or the card). Default: models/cellspace.json.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// auto tries the providers compiled in, fastest first (TensorRT, CUDA, CPU); an explicit
    /// GPU that cannot start is an error.
    #[arg(long, default_value = "auto", ignore_case = true, value_parser = cellspace_core::cli::by_name::<Device>(Device::names()))]
    pub device: Device,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// onnxruntime threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// TensorRT: build FP16 engines.
    #[arg(long)]
    pub fp16: bool,
    /// TensorRT engine cache folder.
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// µm per pixel of every field, when known: the red-cell scale (7.5 µm) is then taken
    /// from it instead of being measured in each field.
    #[arg(long, value_parser = cellspace_core::cli::number::pixel_size_um)]
    pub pixel_size: Option<f32>,
    /// The microscope's calibration: the embed.json that `runtime embed` wrote for a folder
    /// of its fields. Single images are then sized and colour-standardised as that folder's
    /// fields (its stain shift undone); without it a single image is measured alone.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

pub fn model_path(m: &ModelArgs) -> Result<PathBuf> {
    match &m.model {
        Some(p) => Ok(p.clone()),
        None => runtime::default_model().context(
            "no --model given and no models/cellspace.json found (set CELLSPACE_MODEL or pass --model)",
        ),
    }
}

pub fn options(m: &ModelArgs) -> EmbedOptions {
    EmbedOptions {
        device: m.device,
        batch_size: m.batch_size,
        threads: m.threads,
        fp16: m.fp16,
        trt_cache: m.trt_cache.clone(),
    }
}

pub fn load(m: &ModelArgs) -> Result<Embedder> {
    let path = model_path(m)?;
    let opts = options(m);
    let mut e =
        Embedder::new(&path, &opts).with_context(|| format!("loading model {}", path.display()))?;
    e.set_pixel_size(m.pixel_size);
    if let Some(p) = &m.calibration {
        e.set_calibration(Some(cellspace_core::calibration::load(p)?));
    }
    for n in e.notes() {
        eprintln!("note: {n}");
    }
    eprintln!(
        "model {} ({}-d) on {}",
        e.card().name,
        e.dim(),
        e.provider().label()
    );
    Ok(e)
}
