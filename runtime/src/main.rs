//! `runtime`: the command line over the runtime library (embed, embed-one, bench, info).
//! Exit codes ([`cellspace_core::outcome`]): 0 everything embedded, 2 some files failed (named
//! in failures.jsonl), 1 nothing could be done, 64 a wrong command line.

use anyhow::{Context, Result};
use cellspace_core::cli::{self, Report};
use cellspace_core::outcome::{self, ERROR, OK, PARTIAL};
use clap::{Parser, Subcommand};
use runtime::{Device, EmbedOptions, Embedder};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runtime",
    version,
    about = "Embed white-blood-cell images with an exported cellspace model (onnxruntime)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Model (.onnx with its .json card beside it, or the card). Default: models/cellspace.json.
    #[arg(long)]
    model: Option<PathBuf>,
    /// auto tries TensorRT, then CUDA, then CPU; an explicit GPU that cannot start is an error.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// onnxruntime threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// TensorRT: build FP16 engines.
    #[arg(long)]
    fp16: bool,
    /// TensorRT engine cache folder.
    #[arg(long)]
    trt_cache: Option<PathBuf>,
    /// µm per pixel of every field, when known: the red-cell scale (7.5 µm) is then taken
    /// from it instead of being measured in each field.
    #[arg(long, value_parser = cellspace_core::cli::number::pixel_size_um)]
    pixel_size: Option<f32>,
    /// The microscope's calibration: the embed.json that `runtime embed` wrote for a folder
    /// of its fields. Single images are then sized and colour-standardised as that folder's
    /// fields (its stain shift undone); without it a single image is measured alone.
    #[arg(long)]
    calibration: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Embed every image below DIR into DIR.embeddings/ (embeddings.npy, manifest.jsonl, failures.jsonl).
    Embed {
        dir: PathBuf,
        #[arg(short, long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Embed only shard I of N (0-based; by a hash of each image's path, so the split is
        /// stable when images are added) into a folder of its own (default
        /// DIR.shard-I-of-N.embeddings); `runtime merge` puts the shards together.
        #[arg(long, value_name = "I/N")]
        shard: Option<cellspace_core::shard::Shard>,
    },
    /// Merge the embeddings folders of every shard of one split (`embed --shard I/N`) into one
    /// folder, the same, row for row, as a single `runtime embed` of the images.
    Merge {
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        #[arg(short, long)]
        out: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print one image's embedding as JSON.
    EmbedOne {
        image: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        report: Report,
    },
    /// Decode-only, inference-only and end-to-end images/s on a folder, per batch size.
    Bench {
        dir: PathBuf,
        #[arg(long, default_value_t = 2000, value_parser = cellspace_core::cli::number::at_least_one)]
        limit: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,32,256", value_parser = cellspace_core::cli::number::at_least_one)]
        batch_sizes: Vec<usize>,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        report: Report,
    },
    /// Print the model card, the onnxruntime library and the execution providers available.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        report: Report,
    },
}

fn model_path(m: &ModelArgs) -> Result<PathBuf> {
    match &m.model {
        Some(p) => Ok(p.clone()),
        None => runtime::default_model().context(
            "no --model given and no models/cellspace.json found (set CELLSPACE_MODEL or pass --model)",
        ),
    }
}

fn options(m: &ModelArgs) -> EmbedOptions {
    EmbedOptions {
        device: m.device,
        batch_size: m.batch_size,
        threads: m.threads,
        fp16: m.fp16,
        trt_cache: m.trt_cache.clone(),
    }
}

fn load(m: &ModelArgs) -> Result<Embedder> {
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
        e.provider().name()
    );
    Ok(e)
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Embed {
            dir,
            out,
            model,
            json,
            shard,
        } => {
            let e = load(&model)?;
            let out = out.unwrap_or_else(|| match shard {
                Some(s) => runtime::folder::default_shard_out(&dir, s),
                None => runtime::folder::default_out(&dir),
            });
            let (s, failures) = runtime::folder::embed_shard(&e, &dir, &out, !json, shard)?;
            for f in &failures {
                eprintln!(
                    "failed: {}: {}",
                    cellspace_core::cli::shown(&f.path),
                    cellspace_core::cli::shown(&f.reason)
                );
            }
            eprintln!(
                "embedded {}, skipped {} (unchanged), failed {}, {:.1} images/s on {} -> {}",
                s.embedded,
                s.reused,
                s.failed,
                s.images_per_s,
                s.provider,
                s.out_dir.display()
            );
            if let Some(c) = &s.scale.calibration {
                eprintln!(
                    "red-cell scale of the folder: {:.1} px (median of {} of {} fields measured); each window is sized by it unless its own field measures clearly otherwise",
                    c.rbc_px, c.measured, c.fields
                );
            }
            if let Some(shift) = &s.scale.stain_shift {
                eprintln!("stain shift of the folder: {}", shift.describe());
            }
            if !s.flagged.is_empty() {
                let flags: Vec<String> =
                    s.flagged.iter().map(|(f, n)| format!("{n} {f}")).collect();
                eprintln!(
                    "white-cell windows flagged: {} (see window.flags in the manifest; no-stain: the field's centre was used, several: the largest stained cell, border: window padded past the field's edge, cut: the nucleus touches the edge; no-background, no-red-cells: colour could not be standardised; no-scale: the red-cell scale could not be measured; colour-out-of-range, scale-out-of-range: unlike the fields the model was trained and checked on)",
                    flags.join(", ")
                );
                let odd: usize = s
                    .flagged
                    .iter()
                    .filter(|(f, _)| {
                        cellspace_core::locate::LocateFlag::ALL
                            .iter()
                            .any(|l| l.out_of_range() && l.name() == f.as_str())
                    })
                    .map(|(_, n)| n)
                    .sum();
                if odd > 0 {
                    eprintln!(
                        "warning: {odd} field flags say the images are unlike the model's training fields: their neighbours may be wrong without looking wrong"
                    );
                }
            }
            if json {
                outcome::emit_json(None, &s)?;
            }
            // a shard may hold none of a small folder's images: that is a finished shard
            Ok(match (s.embedded + s.reused, s.failed, shard) {
                (0, 0, Some(_)) => OK,
                (0, _, None) => ERROR,
                (_, 0, _) => OK,
                _ => PARTIAL,
            })
        }
        Cmd::Merge { shards, out, json } => {
            let _lock = cellspace_core::atomic::OutputLock::acquire(
                &out.join(runtime::folder::LOCK_FILE),
                &out,
            )?;
            let m = cellspace_core::shard::merge(&shards)?;
            cellspace_core::embeddings::save_folder(&out, &m.rows, &m.data, &m.failures, &m.state)?;
            let summary = serde_json::json!({
                "out_dir": out,
                "shards": shards.len(),
                "rows": m.rows.len(),
                "failed": m.failures.len(),
                "model": m.state.model,
            });
            eprintln!(
                "merged {} shards: {} rows, {} failures -> {}",
                shards.len(),
                m.rows.len(),
                m.failures.len(),
                out.display()
            );
            if json {
                outcome::emit_json(None, &summary)?;
            }
            Ok(if m.failures.is_empty() { OK } else { PARTIAL })
        }
        Cmd::EmbedOne {
            image,
            model,
            report,
        } => {
            let e = load(&model)?;
            let img = cellspace_core::preprocess::load_rgb(&image)?;
            let (v, window) = e.embed_image_located(&img)?;
            let warning = window.as_ref().and_then(|w| w.out_of_range_warning());
            if let Some(w) = &warning {
                eprintln!("warning: {}: {w}", image.display());
            }
            let result = serde_json::json!({
                "path": image, "model": e.card().name, "embedding": v,
                "window": window, "warning": warning,
            });
            outcome::emit_json(report.out.as_deref(), &result)?;
            Ok(OK)
        }
        Cmd::Bench {
            dir,
            limit,
            batch_sizes,
            model,
            report,
        } => {
            let path = model_path(&model)?;
            let result = runtime::bench::bench(&path, &options(&model), &dir, limit, &batch_sizes)?;
            outcome::emit_json(report.out.as_deref(), &result)?;
            Ok(OK)
        }
        Cmd::Info { model, report } => {
            let lib = runtime::ortlib::locate();
            let text = !(report.json || report.out.is_some());
            if text {
                println!(
                    "onnxruntime library: {}",
                    lib.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|e| e.to_string())
                );
                println!(
                    "execution providers compiled in: CPU{}{}",
                    if cfg!(feature = "cuda") { ", CUDA" } else { "" },
                    if cfg!(feature = "tensorrt") {
                        ", TensorRT"
                    } else {
                        ""
                    }
                );
            }
            let e = load(&model)?;
            if !text {
                let result = serde_json::json!({
                    "library": lib.as_ref().map(|p| p.display().to_string()).ok(),
                    "execution_provider": e.provider().name(),
                    "card": e.card(),
                });
                outcome::emit_json(report.out.as_deref(), &result)?;
            } else {
                println!("running on: {}", e.provider().name());
                println!("{}", serde_json::to_string_pretty(e.card())?);
            }
            Ok(OK)
        }
    }
}

fn main() -> ExitCode {
    cli::main(run)
}
