//! `runtime bench` and `info`: speed, and what the model and onnxruntime are.

use crate::model::{ModelArgs, load, model_path, options};
use anyhow::Result;
use cellspace_core::cli::Report;
use cellspace_core::outcome::{self, OK};
use std::path::PathBuf;

/// Decode-only, inference-only and end-to-end images/s on a folder, per batch size.
#[derive(clap::Args)]
pub struct BenchArgs {
    pub dir: PathBuf,
    #[arg(long, default_value_t = 2000, value_parser = cellspace_core::cli::number::at_least_one)]
    pub limit: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,32,256", value_parser = cellspace_core::cli::number::at_least_one)]
    pub batch_sizes: Vec<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub report: Report,
}

/// Run `runtime bench`.
pub fn bench(args: BenchArgs) -> Result<u8> {
    let BenchArgs {
        dir,
        limit,
        batch_sizes,
        model,
        report,
    } = args;
    let path = model_path(&model)?;
    let result = runtime::bench::bench(&path, &options(&model), &dir, limit, &batch_sizes)?;
    outcome::emit_json(report.out.as_deref(), &result)?;
    Ok(OK)
}

/// Print the model card, the onnxruntime library and the execution providers available.
#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub report: Report,
}

/// Run `runtime info`.
pub fn info(args: InfoArgs) -> Result<u8> {
    let InfoArgs { model, report } = args;
    let lib = runtime::ortlib::locate();
    let text = !(report.json || report.out.is_some());
    if text {
        match &lib {
            Ok(p) => println!("onnxruntime library: {}", p.display()),
            Err(e) => println!("{e}"),
        }
        println!(
            "execution providers compiled in: {}",
            runtime::ep::compiled_labels().join(", ")
        );
    }
    let e = load(&model)?;
    if !text {
        let result = serde_json::json!({
            "library": lib.as_ref().map(|p| p.display().to_string()).ok(),
            "execution_provider": e.provider().label(),
            "card": e.card(),
        });
        outcome::emit_json(report.out.as_deref(), &result)?;
    } else {
        println!("running on: {}", e.provider().label());
        println!("{}", serde_json::to_string_pretty(e.card())?);
    }
    Ok(OK)
}
