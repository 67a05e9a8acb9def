//! The flags of a fit, shared by `fit`, `cv`, `robustness` and `bench`, and the training
//! configuration they make.

use anyhow::Result;
use std::path::PathBuf;
use trainer::loss::LossKind;
use trainer::model::{EmbeddingOutput, EncoderConfig};
use trainer::train::{Crop, TrainConfig};

#[derive(clap::Args)]
pub struct FitArgs {
    /// Folder of images (any tree; the parent folder name is the class, used only to measure).
    #[arg(long)]
    pub data: PathBuf,
    /// The self-supervised loss (trainer/src/loss/): NT-Xent trains a projection head, the
    /// batch-hard triplet loss the backbone.
    #[arg(long, default_value = "ntxent", value_parser = loss_kind())]
    pub loss: LossKind,
    #[arg(long, default_value_t = 10, value_parser = cellspace_core::cli::number::at_least_one)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128, value_parser = cellspace_core::cli::number::at_least_one)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    #[arg(long, default_value_t = 2e-3, value_parser = cellspace_core::cli::number::positive_f64)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Use only N images spread over the folder (a quick try).
    #[arg(long)]
    pub limit: Option<usize>,
    /// cpu (the fastest CPU backend built in: LibTorch with the `libtorch` feature, else flex),
    /// flex, libtorch, cuda/gpu (LibTorch on CUDA, else burn's Vulkan backend), libtorch-cuda,
    /// vulkan.
    #[arg(long, default_value = "cpu")]
    pub device: trainer::device::TrainDevice,
    /// Run directory (checkpoints, metrics, pictures).
    #[arg(short, long, default_value = "runs/latest")]
    pub out: PathBuf,
    /// The result on stdout is JSON (always; the flag is accepted as on every command).
    #[arg(long)]
    pub json: bool,
    /// Continue the run in --out from its last checkpoint (starts one if there is none).
    #[arg(long)]
    pub resume: bool,
    /// Encoder preset: small (CPU) or resnet18 (torchvision layout, for --init).
    #[arg(long, default_value = "small")]
    pub arch: trainer::model::Arch,
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Stem: torchvision's 7x7 stride-2 conv + max-pool (4x cheaper stages) instead of 3x3 stride 2.
    #[arg(long)]
    pub imagenet_stem: bool,
    /// Projection head output dimension for NT-Xent (0 = none).
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::non_negative_f32)]
    pub margin: f32,
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::positive_f32)]
    pub temperature: f32,
    /// Debiased NT-Xent class prior τ⁺ (false-negative remedy; 0.25 for 4 balanced types).
    #[arg(long, default_value_t = 0.0, value_parser = cellspace_core::cli::number::share_f32)]
    pub debias: f32,
    /// Triplet: ignore negatives more similar than this cosine (false-negative remedy).
    #[arg(long, default_value_t = 1.0, value_parser = cellspace_core::cli::number::finite_f32)]
    pub fn_threshold: f32,
    /// Colour jitter strength (brightness, contrast, saturation).
    #[arg(long, default_value_t = 0.1, value_parser = cellspace_core::cli::number::non_negative_f32)]
    pub jitter: f32,
    /// Probability of re-encoding a training view as JPEG (quality 30-90; off by default:
    /// it cost clean quality, README Levers).
    #[arg(long, default_value_t = 0.0, value_parser = cellspace_core::cli::number::share_f32)]
    pub jpeg_prob: f32,
    /// Per-channel gain jitter of a training view (each channel times 1 ± this at most; off
    /// by default).
    #[arg(long, default_value_t = 0.0, value_parser = cellspace_core::cli::number::share_f32)]
    pub channel_gain: f32,
    /// Field about the window that training crops are cut from, in windows (1: the window
    /// alone, so views only zoom in). With more, and `--crop-area-max` above 1, views also
    /// show the cell smaller than the served window does.
    #[arg(long, default_value_t = 1.0, value_parser = cellspace_core::cli::number::positive_f32)]
    pub context: f32,
    /// Largest training crop, in windows' areas (the smallest is 0.4).
    #[arg(long, default_value_t = 1.0, value_parser = cellspace_core::cli::number::positive_f32)]
    pub crop_area_max: f32,
    /// Multi-crop: local views per image beside the two global ones (each a crop of 0.1-0.4
    /// windows' area at `--local-size` px, compared with both global views; 0: off).
    #[arg(long, default_value_t = 0)]
    pub local_views: usize,
    /// Side of a local view in px (0: half of `--image-size`).
    #[arg(long, default_value_t = 0)]
    pub local_size: u32,
    /// NNCLR: each image's positive is its nearest neighbour among the last N images seen
    /// (a support queue), not its own other view (0: off).
    #[arg(long, default_value_t = 0)]
    pub nn_queue: usize,
    /// Torchvision ResNet weights to start from (.pth or .safetensors).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// What the model looks at: the window around the white cell, or the whole field.
    #[arg(long, value_enum, default_value = "cell")]
    pub crop: Crop,
    /// Cell window side as a fraction of the image's shorter side (0.4667 = 112 of 240 px).
    #[arg(long, default_value_t = 0.4667, value_parser = cellspace_core::cli::number::field_share_f32)]
    pub window: f32,
    /// Served embedding: backbone or head (fixed before training; see `trainer cv`).
    #[arg(long, value_enum, default_value = "backbone")]
    pub output: EmbeddingOutput,
    /// Weight of the in-graph colour histogram in the served embedding (0 = learned only).
    #[arg(long, default_value_t = 0.0, value_parser = cellspace_core::cli::number::non_negative_f32)]
    pub colour_weight: f32,
    /// Share of source groups held out to validate each epoch (0: train on everything).
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::share_f64)]
    pub val_fraction: f64,
    /// Measure the held-out groups after every N epochs only (and after the last): each
    /// measurement costs about two epochs of training.
    #[arg(long, default_value_t = 1, value_parser = cellspace_core::cli::number::at_least_one)]
    pub validate_every: usize,
    /// Where to export the served model (path without extension).
    #[arg(long, default_value = "models/latest")]
    pub export: PathBuf,
    /// Do not export the served model (the run folder still holds it).
    #[arg(long)]
    pub no_export: bool,
    /// Colour standardisation of every field: stain-anchors (the folder's stain shift undone,
    /// then background and red cells mapped to the training fields'), od-anchors (the second
    /// step alone), hsv-anchors, lab-anchors, lab-reinhard, or none (absolute colour).
    #[arg(long, value_enum, default_value = "stain-anchors")]
    pub colour: trainer::train::ColourChoice,
    /// Cell window measured in red-cell diameters per field (red-cells) or as a fixed
    /// fraction of the field (field: one magnification only).
    #[arg(long, value_enum, default_value = "red-cells")]
    pub scale: trainer::train::ScaleChoice,
    /// Whose colour anchors standardise a field of a folder: the field's own (field), the
    /// folder's median for every field (folder: one microscope, one lamp, one stain batch),
    /// or the field's own background with the folder's red cells (folder-stain); a single
    /// image without its folder still uses its own.
    #[arg(long, value_enum, default_value = "field")]
    pub anchors: cellspace_core::standardise::AnchorScope,
    /// With field anchors in a calibrated folder: a field's own red-cell reading is trusted
    /// in full when it rests on at least this many red cells; below, in proportion, the
    /// folder's median taking the rest (a clean training field reads ~14, one magnified 2x
    /// ~2.4); 0 trusts every reading.
    #[arg(long, default_value_t = 0.0, value_parser = red_cell_count)]
    pub anchor_trust: f32,
}

/// `--anchor-trust` and `--serve-anchor-trust`: a finite number of red cells, 0 or more.
pub fn red_cell_count(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "expected a finite number of red cells, 0 or more (got {s})"
        )),
    }
}

pub fn config(a: &FitArgs) -> Result<TrainConfig> {
    let encoder =
        EncoderConfig::preset(a.arch)
            .with_dim(a.dim)
            .with_head_dim(match a.loss.trains() {
                EmbeddingOutput::Head => a.head_dim,
                EmbeddingOutput::Backbone => 0,
            });
    let augment = trainer::augment::AugmentConfig::new()
        .with_brightness(a.jitter)
        .with_contrast(a.jitter)
        .with_saturation(a.jitter)
        .with_jpeg_prob(a.jpeg_prob)
        .with_channel_gain(a.channel_gain)
        .with_context((a.context != 1.0).then_some(a.context))
        .with_crop_area([0.4, a.crop_area_max.max(0.4)])
        .with_local_views((a.local_views > 0).then_some(a.local_views))
        .with_local_size((a.local_size > 0).then_some(a.local_size));
    let mut cfg = TrainConfig::new(encoder, augment)
        .with_loss(a.loss)
        .with_epochs(a.epochs)
        .with_batch_size(a.batch_size)
        .with_image_size(a.image_size)
        .with_lr(a.lr)
        .with_seed(a.seed)
        .with_margin(a.margin)
        .with_temperature(a.temperature)
        .with_debias(a.debias)
        .with_fn_threshold(a.fn_threshold)
        .with_crop(a.crop)
        .with_window(a.window)
        .with_output(a.output)
        .with_colour_weight(a.colour_weight)
        .with_val_fraction(a.val_fraction)
        .with_colour(a.colour)
        .with_anchors(Some(a.anchors))
        .with_anchor_trust((a.anchor_trust > 0.0).then_some(a.anchor_trust))
        .with_scale(a.scale)
        .with_nn_queue((a.nn_queue > 0).then_some(a.nn_queue));
    cfg.limit = a.limit;
    cfg.init = a.init.as_ref().map(|p| p.display().to_string());
    Ok(cfg)
}

/// `--loss`: the registered losses by name ([`LossKind::ALL`]), listed in `--help`.
fn loss_kind() -> impl clap::builder::TypedValueParser<Value = LossKind> {
    cellspace_core::cli::by_name(LossKind::ALL.iter().map(|k| k.name()).collect())
}
