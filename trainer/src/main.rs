//! `trainer`: the command line over the trainer library (fit, cv, groups, eval, export, bench).

use anyhow::{Context, Result};
use cellspace_core::cli;
use cellspace_core::outcome::{self, OK, PARTIAL};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use trainer::loss::LossKind;
use trainer::model::EmbeddingOutput;
use trainer::model::EncoderConfig;
use trainer::train::{Crop, TrainConfig, fit, install_ctrlc};

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
    /// Cross-validate the fit recipe over K folds of whole source groups: mean ± SD per metric,
    /// beside the colour histogram of the same crops on the same folds.
    Cv {
        #[command(flatten)]
        fit: FitArgs,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Then query each held-out fold under these shifts (`default`, or a list: see
        /// `trainer robustness --help`).
        #[arg(long)]
        shifts: Option<String>,
        /// With --shifts: at most this many copies of each held-out original.
        #[arg(long, default_value_t = 4)]
        per_group: usize,
    },
    /// Query each held-out fold under shifts of lamp, stain, exposure, magnification,
    /// resolution, blur and JPEG (another lab's microscope): kNN-200 mean ± SD per shift for
    /// the folds' models of a `trainer cv` folder and the colour histogram of the same windows.
    Robustness {
        #[command(flatten)]
        fit: FitArgs,
        /// A `trainer cv` output folder (its folds' models and preprocessing); without it the
        /// colour histogram alone is measured, under the fit flags' preprocessing.
        #[arg(long)]
        cv: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// `default`, or shifts separated by `;`, combinations joined by `+`: lamp:R,G,B
        /// sat:F hue:DEG gamma:G mag:M res:F blur:SIGMA jpeg:Q.
        #[arg(long, default_value = "default")]
        shifts: String,
        /// At most this many copies of each held-out original.
        #[arg(long, default_value_t = 4)]
        per_group: usize,
        /// With --cv: standardise with stain-anchors although the folds were trained with
        /// od-anchors (allowed only where the training folder's fields come out exactly as
        /// they were trained on: its stain shift settles to none).
        #[arg(long)]
        serve_stain_anchors: bool,
    },
    /// Estimate which images are copies of one original (no labels): writes path<TAB>group.
    Groups {
        /// Folder of images.
        dir: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        /// Cosine similarity of colour signatures above which two images are copies.
        #[arg(long, default_value_t = cellspace_core::duplicates::DEFAULT_THRESHOLD, value_parser = cellspace_core::cli::number::finite_f32)]
        threshold: f32,
        /// A reference grouping to report agreement with (default: source_groups.tsv in or
        /// beside DIR, when there is one).
        #[arg(long)]
        reference: Option<PathBuf>,
    },
    /// Retrieval metrics of a run's served model on labelled folders, beside the histogram baseline.
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
        #[command(flatten)]
        out: Report,
    },
    /// Print training and inference images/s of the fit configuration on real images.
    Bench {
        #[command(flatten)]
        fit: FitArgs,
        /// Write the result to this file (atomically) instead of stdout.
        #[arg(long = "report")]
        report: Option<PathBuf>,
        /// Training steps to time (after one warm-up step).
        #[arg(long, default_value_t = 10)]
        steps: usize,
    },
    /// Export a run's best model to NAME.onnx + NAME.json.
    Export {
        #[arg(long)]
        run: PathBuf,
        /// Output path without extension, e.g. models/cellspace.
        #[arg(short, long, visible_alias = "to")]
        out: PathBuf,
        /// The run's data folder: measure the run's held-out validation again with this build.
        #[arg(long)]
        data: Option<PathBuf>,
        /// A `trainer cv` report (cv.json) of the same recipe, carried in the card.
        #[arg(long)]
        cv: Option<PathBuf>,
        /// Serve this output instead of the run's (backbone or head).
        #[arg(long, value_enum)]
        output: Option<EmbeddingOutput>,
        /// Serve this colour weight instead of the run's.
        #[arg(long, value_parser = cellspace_core::cli::number::non_negative_f32)]
        colour_weight: Option<f32>,
    },
}

#[derive(clap::Args)]
struct FitArgs {
    /// Folder of images (any tree; the parent folder name is the class, used only to measure).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "ntxent")]
    loss: LossKind,
    #[arg(long, default_value_t = 10, value_parser = cellspace_core::cli::number::at_least_one)]
    epochs: usize,
    #[arg(long, default_value_t = 128, value_parser = cellspace_core::cli::number::at_least_one)]
    batch_size: usize,
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    #[arg(long, default_value_t = 2e-3, value_parser = cellspace_core::cli::number::positive_f64)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use only N images spread over the folder (a quick try).
    #[arg(long)]
    limit: Option<usize>,
    /// cpu (the fastest CPU backend built in: LibTorch with the `libtorch` feature, else flex),
    /// flex, libtorch, cuda/gpu (LibTorch on CUDA, else burn's Vulkan backend), libtorch-cuda,
    /// vulkan.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run directory (checkpoints, metrics, pictures).
    #[arg(short, long, default_value = "runs/latest")]
    out: PathBuf,
    /// The result on stdout is JSON (always; the flag is accepted as on every command).
    #[arg(long)]
    json: bool,
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
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::non_negative_f32)]
    margin: f32,
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::positive_f32)]
    temperature: f32,
    /// Debiased NT-Xent class prior τ⁺ (false-negative remedy; 0.25 for 4 balanced types).
    #[arg(long, default_value_t = 0.0, value_parser = cellspace_core::cli::number::share_f32)]
    debias: f32,
    /// Triplet: ignore negatives more similar than this cosine (false-negative remedy).
    #[arg(long, default_value_t = 1.0, value_parser = cellspace_core::cli::number::finite_f32)]
    fn_threshold: f32,
    /// Colour jitter strength (brightness, contrast, saturation).
    #[arg(long, default_value_t = 0.1, value_parser = cellspace_core::cli::number::non_negative_f32)]
    jitter: f32,
    /// Probability of re-encoding a training view as JPEG (quality 30-90).
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::share_f32)]
    jpeg_prob: f32,
    /// Per-channel gain jitter of a training view (each channel times 1 ± this at most).
    #[arg(long, default_value_t = 0.05, value_parser = cellspace_core::cli::number::share_f32)]
    channel_gain: f32,
    /// Torchvision ResNet weights to start from (.pth or .safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// What the model looks at: the window around the white cell, or the whole field.
    #[arg(long, value_enum, default_value = "cell")]
    crop: Crop,
    /// Cell window side as a fraction of the image's shorter side (0.4667 = 112 of 240 px).
    #[arg(long, default_value_t = 0.4667, value_parser = cellspace_core::cli::number::field_share_f32)]
    window: f32,
    /// Served embedding: backbone or head (fixed before training; see `trainer cv`).
    #[arg(long, value_enum, default_value = "backbone")]
    output: EmbeddingOutput,
    /// Weight of the in-graph colour histogram in the served embedding (0 = learned only).
    #[arg(long, default_value_t = 0.0, value_parser = cellspace_core::cli::number::non_negative_f32)]
    colour_weight: f32,
    /// Share of source groups held out to validate each epoch (0: train on everything).
    #[arg(long, default_value_t = 0.2, value_parser = cellspace_core::cli::number::share_f64)]
    val_fraction: f64,
    /// Where to export the served model (path without extension); "none" to skip.
    #[arg(long, default_value = "models/latest")]
    export: String,
    /// Colour standardisation of every field: stain-anchors (the folder's stain shift undone,
    /// then background and red cells mapped to the training fields'), od-anchors (the second
    /// step alone), hsv-anchors, lab-anchors, lab-reinhard, or none (absolute colour).
    #[arg(long, value_enum, default_value = "stain-anchors")]
    colour: trainer::train::ColourChoice,
    /// Cell window measured in red-cell diameters per field (red-cells) or as a fixed
    /// fraction of the field (field: one magnification only).
    #[arg(long, value_enum, default_value = "red-cells")]
    scale: trainer::train::ScaleChoice,
}

/// Where a command's result goes (the same on every command that prints one).
#[derive(clap::Args)]
struct Report {
    /// Write the result to this file (atomically) instead of stdout.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// The result as JSON (this command's only form).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    trainer::allocator::keep_freed_memory();
    cli::main(run)
}

fn run(cli: Cli) -> Result<u8> {
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
            if resume {
                let own = trainer::checkpoint::load_config(&a.out)?;
                let changed = trainer::checkpoint::config_differences(&own, &cfg);
                if !changed.is_empty() {
                    eprintln!(
                        "warning: --resume continues {} as it was configured; the flags given differ from it and are ignored: {}",
                        a.out.display(),
                        changed.join("; ")
                    );
                }
            }
            let opts = trainer::train::FitOptions {
                resume,
                ..Default::default()
            };
            let summary = fit(&cfg, &a.data, &a.out, &device, &opts)?;
            outcome::emit_json(None, &summary)?;
            if summary.interrupted {
                return Ok(PARTIAL); // progress saved: --resume continues
            }
            eprintln!("run written to {}", a.out.display());
            if a.export != "none" {
                let card = trainer::export::export_run(
                    &a.out,
                    &PathBuf::from(&a.export),
                    Some(&summary),
                    &Default::default(),
                )?;
                eprintln!(
                    "model exported: {} (card {})",
                    card.with_extension("onnx").display(),
                    card.display()
                );
            }
        }
        Cmd::Robustness {
            fit,
            cv,
            folds,
            shifts,
            per_group,
            serve_stain_anchors,
        } => {
            let out = cv.clone().unwrap_or_else(|| fit.out.clone());
            let sets = RobustnessSets {
                folds,
                shifts: &shifts,
                per_group,
                serve_stain_anchors,
            };
            robustness(&fit, cv.as_deref(), &out, &sets)?;
        }
        Cmd::Cv {
            fit,
            folds,
            shifts,
            per_group,
        } => {
            install_ctrlc();
            let device = trainer::device::select(&fit.device)?;
            let cfg = config(&fit)?;
            let Some(report) =
                trainer::cv::cross_validate(&cfg, &fit.data, &fit.out, folds, &device)?
            else {
                return Ok(PARTIAL); // interrupted: --resume continues
            };
            eprintln!(
                "\n{folds}-fold cross-validation over source groups (mean ± SD over folds), {:.0} min:\n{}",
                report.seconds / 60.0,
                trainer::cv::table(&report)
            );
            eprintln!("report: {}", fit.out.join(trainer::cv::CV_FILE).display());
            match shifts {
                Some(spec) => {
                    let sets = RobustnessSets {
                        folds,
                        shifts: &spec,
                        per_group,
                        serve_stain_anchors: false,
                    };
                    robustness(&fit, Some(&fit.out), &fit.out, &sets)?
                }
                None => outcome::emit_json(None, &report)?,
            }
        }
        Cmd::Groups {
            dir,
            out,
            threshold,
            reference,
        } => groups(&dir, &out, threshold, reference.as_deref())?,
        Cmd::Bench { fit, steps, report } => {
            let device = trainer::device::select(&fit.device)?;
            let result = trainer::bench::bench(&config(&fit)?, &fit.data, steps, &device)?;
            outcome::emit_json(report.as_deref(), &result)?;
        }
        Cmd::Eval {
            run,
            gallery,
            query,
            exclude_same_group,
            out,
        } => {
            let device = burn::tensor::Device::flex();
            let (model, cfg, best) = trainer::train::load_served_model(&run, &device)?;
            let pre = cfg.preprocess();
            let g = trainer::data::CellImages::load(&gallery, &pre, pre.size, None)?;
            let q = query
                .map(|q| trainer::data::CellImages::load(&q, &pre, pre.size, None))
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
            outcome::emit_json(out.out.as_deref(), &report)?;
        }
        Cmd::Export {
            run,
            out,
            data,
            cv,
            output,
            colour_weight,
        } => {
            let opts = trainer::export::ExportOptions {
                data,
                cv,
                output,
                colour_weight,
            };
            let card = trainer::export::export_run(&run, &out, None, &opts)?;
            eprintln!(
                "model exported: {} (card {})",
                card.with_extension("onnx").display(),
                card.display()
            );
        }
    }
    Ok(OK)
}

/// The query sets of the shift protocol, as the command line gave them.
struct RobustnessSets<'a> {
    folds: usize,
    shifts: &'a str,
    per_group: usize,
    serve_stain_anchors: bool,
}

/// `trainer robustness` (and `trainer cv --shifts`): the table on stderr, the report in
/// `OUT/robustness.json` and on stdout.
fn robustness(
    fit: &FitArgs,
    cv: Option<&std::path::Path>,
    out: &std::path::Path,
    sets: &RobustnessSets,
) -> Result<()> {
    let shifts =
        cellspace_core::shift::parse(sets.shifts).map_err(|e| anyhow::anyhow!("--shifts: {e}"))?;
    let cfg = config(fit)?;
    let plan = trainer::robustness::RobustnessPlan {
        data_dir: &fit.data,
        cv_dir: cv,
        cfg: &cfg,
        folds: sets.folds,
        shifts,
        per_group: sets.per_group,
        serve_stain_anchors: sets.serve_stain_anchors,
    };
    let report = trainer::robustness::robustness(&plan)?;
    eprintln!(
        "\nkNN-200 under shifts, mean ± SD over {} folds ({:.0} min):\n{}",
        report.folds,
        report.seconds / 60.0,
        trainer::robustness::table(&report)
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(trainer::robustness::ROBUSTNESS_FILE);
    cellspace_core::atomic::write_json(&path, &report)?;
    eprintln!("report: {}", path.display());
    outcome::emit_json(None, &report)?;
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
        .with_saturation(a.jitter)
        .with_jpeg_prob(a.jpeg_prob)
        .with_channel_gain(a.channel_gain);
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
        .with_scale(a.scale);
    cfg.limit = a.limit;
    cfg.init = a.init.as_ref().map(|p| p.display().to_string());
    Ok(cfg)
}

/// `trainer groups`: estimated source groups as `path<TAB>group`, and their agreement with a
/// reference grouping where there is one.
fn groups(
    dir: &std::path::Path,
    out: &std::path::Path,
    threshold: f32,
    reference: Option<&std::path::Path>,
) -> Result<()> {
    use cellspace_core::dataset::SourceGroups;
    let cellspace_core::duplicates::Estimate {
        images: entries,
        groups: ids,
        failed,
    } = cellspace_core::duplicates::estimate_groups(dir, threshold)?;
    for (path, reason) in &failed {
        eprintln!("skipped {path}: {reason}");
    }
    let mut text = String::from("path\tgroup\n");
    for (e, g) in entries.iter().zip(&ids) {
        text.push_str(&format!("{}\tg{g}\n", e.rel));
    }
    cellspace_core::atomic::write_atomic(out, text.as_bytes())?;
    let n = ids.iter().collect::<std::collections::HashSet<_>>().len();
    eprintln!(
        "{} images in {n} estimated source groups -> {}",
        entries.len(),
        out.display()
    );
    let reference = match reference {
        Some(p) => Some(SourceGroups::load(p)?),
        None => SourceGroups::find(dir)?,
    };
    let mut summary = serde_json::json!({
        "images": entries.len(), "groups": n, "threshold": threshold, "failed": failed.len(),
    });
    if let Some(r) = reference {
        let known: Vec<usize> = (0..entries.len())
            .filter(|&i| r.group_of(&entries[i].rel).is_some())
            .collect();
        let est: Vec<usize> = known.iter().map(|&i| ids[i]).collect();
        let refs: Vec<&str> = known
            .iter()
            .filter_map(|&i| r.group_of(&entries[i].rel))
            .collect();
        let (p, rc) = cellspace_core::duplicates::pair_agreement(&est, &refs);
        let ref_groups = refs.iter().collect::<std::collections::HashSet<_>>().len();
        eprintln!(
            "agreement with the reference ({} images in it, {ref_groups} groups): pairwise precision {p:.3}, recall {rc:.3}",
            known.len()
        );
        summary["reference"] = serde_json::json!({
            "images": known.len(), "groups": ref_groups, "pair_precision": p, "pair_recall": rc,
        });
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
