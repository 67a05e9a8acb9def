//! `runtime`: the command line over the runtime library (embed, embed-one, info).
//! Exit codes: 0 everything embedded, 2 some files failed, 3 nothing could be done.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use runtime::{Device, EmbedOptions, Embedder};
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_SOME_FAILED: u8 = 2;
const EXIT_NOTHING_DONE: u8 = 3;

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
    },
    /// Print one image's embedding as JSON.
    EmbedOne {
        image: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode-only, inference-only and end-to-end images/s on a folder, per batch size.
    Bench {
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        limit: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,32,256")]
        batch_sizes: Vec<usize>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print the model card, the onnxruntime library and the execution providers available.
    Info {
        #[command(flatten)]
        model: ModelArgs,
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
    let e =
        Embedder::new(&path, &opts).with_context(|| format!("loading model {}", path.display()))?;
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
        } => {
            let e = load(&model)?;
            let out = out.unwrap_or_else(|| runtime::folder::default_out(&dir));
            let (s, failures) = runtime::folder::embed_dir(&e, &dir, &out, !json)?;
            for f in &failures {
                eprintln!("failed: {}: {}", f.path, f.reason);
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
            if !s.flagged.is_empty() {
                let flags: Vec<String> =
                    s.flagged.iter().map(|(f, n)| format!("{n} {f}")).collect();
                eprintln!(
                    "white-cell windows flagged: {} (see window.flags in the manifest; no-stain: the field's centre was used, several: the largest stained cell, border: window padded past the field's edge, cut: the nucleus touches the edge)",
                    flags.join(", ")
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            }
            Ok(if s.embedded + s.reused == 0 {
                EXIT_NOTHING_DONE
            } else if s.failed > 0 {
                EXIT_SOME_FAILED
            } else {
                0
            })
        }
        Cmd::EmbedOne { image, model } => {
            let e = load(&model)?;
            let v = e.embed_path(&image)?;
            println!(
                "{}",
                serde_json::json!({ "path": image, "model": e.card().name, "embedding": v })
            );
            Ok(0)
        }
        Cmd::Bench {
            dir,
            limit,
            batch_sizes,
            model,
        } => {
            let path = model_path(&model)?;
            let report = runtime::bench::bench(&path, &options(&model), &dir, limit, &batch_sizes)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(0)
        }
        Cmd::Info { model } => {
            let lib = runtime::ortlib::locate();
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
            let e = load(&model)?;
            println!("running on: {}", e.provider().name());
            println!("{}", serde_json::to_string_pretty(e.card())?);
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_NOTHING_DONE)
        }
    }
}
