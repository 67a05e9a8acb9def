//! `trainer`: the command line over the trainer library (fit, eval, export).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use trainer::loss::LossKind;
use trainer::model::EncoderConfig;
use trainer::train::{TrainConfig, fit, install_ctrlc};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Learn a white-blood-cell embedding without labels, measure it, export it to ONNX"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train an encoder on a folder of cell images (labels are never used to train).
    Fit(FitArgs),
    /// Retrieval metrics of a run's best model on labelled folders, beside the histogram baseline.
    Eval {
        #[arg(long)]
        run: PathBuf,
        /// Folder searched.
        #[arg(long)]
        gallery: PathBuf,
        /// Folder of query images (other cells); without it the gallery queries itself.
        #[arg(long)]
        query: Option<PathBuf>,
        /// With one folder: never count another copy of the same original cell as a match.
        #[arg(long)]
        exclude_same_group: bool,
    },
    /// Print training and inference images/s of the fit configuration on real images.
    Bench {
        #[command(flatten)]
        fit: FitArgs,
        /// Training steps to time (after one warm-up step).
        #[arg(long, default_value_t = 10)]
        steps: usize,
    },
    /// Export a run's best model to NAME.onnx + NAME.json.
    Export {
        #[arg(long)]
        run: PathBuf,
        /// Output path without extension, e.g. models/cellspace.
        #[arg(long)]
        to: PathBuf,
        /// The run's data folder: validate the best model again with this build and export the
        /// best served embedding (learned, or blended with the colour histogram).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct FitArgs {
    /// Folder of images (any tree; the parent folder name is the class, used only to measure).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "ntxent")]
    loss: LossKind,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use only N images spread over the folder (a quick try).
    #[arg(long)]
    limit: Option<usize>,
    /// cpu, or cuda/gpu (burn's Vulkan backend; needs the `gpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run directory (checkpoints, metrics, pictures).
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint (starts one if there is none).
    #[arg(long)]
    resume: bool,
    /// Encoder preset: small (CPU) or resnet18 (torchvision layout, for --init).
    #[arg(long, default_value = "small")]
    arch: String,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Stem: torchvision's 7x7 stride-2 conv + max-pool (4x cheaper stages) instead of 3x3 stride 2.
    #[arg(long)]
    imagenet_stem: bool,
    /// Projection head output dimension for NT-Xent (0 = none).
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    #[arg(long, default_value_t = 0.2)]
    margin: f32,
    #[arg(long, default_value_t = 0.2)]
    temperature: f32,
    /// Debiased NT-Xent class prior τ⁺ (false-negative remedy; 0.25 for 4 balanced types).
    #[arg(long, default_value_t = 0.0)]
    debias: f32,
    /// Triplet: ignore negatives more similar than this cosine (false-negative remedy).
    #[arg(long, default_value_t = 1.0)]
    fn_threshold: f32,
    /// Colour jitter strength (brightness, contrast, saturation).
    #[arg(long, default_value_t = 0.1)]
    jitter: f32,
    /// Torchvision ResNet weights to start from (.pth or .safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Where to export the best model (path without extension); "none" to skip.
    #[arg(long, default_value = "models/latest")]
    export: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Fit(a) => {
            install_ctrlc();
            let device = trainer::device::select(&a.device)?;
            let cfg = config(&a)?;
            // --resume on a folder without a checkpoint starts the run (what a re-run script wants)
            let resume = a.resume && a.out.join(trainer::train::CHECKPOINT_DIR).exists();
            if a.resume && !resume {
                eprintln!(
                    "nothing to resume in {}: starting a new run",
                    a.out.display()
                );
            }
            let opts = trainer::train::FitOptions {
                resume,
                ..Default::default()
            };
            let summary = fit(&cfg, &a.data, &a.out, &device, &opts)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if summary.interrupted {
                return Ok(());
            }
            eprintln!("run written to {}", a.out.display());
            if a.export != "none" {
                let card = trainer::export::export_run(
                    &a.out,
                    &PathBuf::from(&a.export),
                    Some(&summary),
                    None,
                )?;
                eprintln!(
                    "model exported: {} (card {})",
                    card.with_extension("onnx").display(),
                    card.display()
                );
            }
        }
        Cmd::Bench { fit, steps } => {
            let device = trainer::device::select(&fit.device)?;
            let report = trainer::bench::bench(&config(&fit)?, &fit.data, steps, &device)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Cmd::Eval {
            run,
            gallery,
            query,
            exclude_same_group,
        } => {
            let device = burn::tensor::Device::flex();
            let (model, cfg, best) = trainer::train::load_best_model(&run, &device)?;
            let pre = cfg.preprocess();
            let g = trainer::data::CellImages::load(&gallery, pre.size, None)?;
            let q = query
                .map(|q| trainer::data::CellImages::load(&q, pre.size, None))
                .transpose()?;
            let full = trainer::colour::RetrievalModel {
                colour: trainer::colour::ColourHistogram::new(&pre, &device),
                encoder: model,
            };
            let report = trainer::eval::eval_folders(
                &full,
                best.output,
                best.colour_weight,
                &pre,
                &g,
                q.as_ref(),
                exclude_same_group,
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Cmd::Export { run, to, data } => {
            let card = trainer::export::export_run(&run, &to, None, data.as_deref())?;
            eprintln!(
                "model exported: {} (card {})",
                card.with_extension("onnx").display(),
                card.display()
            );
        }
    }
    Ok(())
}

fn config(a: &FitArgs) -> Result<TrainConfig> {
    let encoder = EncoderConfig::preset(&a.arch)
        .with_context(|| format!("unknown --arch {}; expected small or resnet18", a.arch))?
        .with_dim(a.dim)
        .with_head_dim(if a.loss == LossKind::Ntxent {
            a.head_dim
        } else {
            0
        });
    let augment = trainer::augment::AugmentConfig::new()
        .with_brightness(a.jitter)
        .with_contrast(a.jitter)
        .with_saturation(a.jitter);
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
        .with_fn_threshold(a.fn_threshold);
    cfg.limit = a.limit;
    cfg.init = a.init.as_ref().map(|p| p.display().to_string());
    Ok(cfg)
}
