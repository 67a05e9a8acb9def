//! `runtime`: the command line over the runtime library (embed, embed-one, bench, info).
//! Exit codes ([`cellspace_core::outcome`]): 0 everything embedded, 2 some files failed (named
//! in failures.jsonl), 1 nothing could be done, 64 a wrong command line.
//!
//! One module per family of subcommands (`embed`, `info`), each holding its subcommands'
//! arguments (`XArgs`) and the function that runs them; `model` is the flags they share.

use anyhow::Result;
use cellspace_core::cli;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod embed;
mod info;
mod model;

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

// Each subcommand's help is its `XArgs` struct's doc.
#[derive(Subcommand)]
enum Cmd {
    Embed(embed::EmbedArgs),
    Merge(embed::MergeArgs),
    EmbedOne(embed::EmbedOneArgs),
    Bench(info::BenchArgs),
    Info(info::InfoArgs),
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Embed(a) => embed::embed(a),
        Cmd::Merge(a) => embed::merge(a),
        Cmd::EmbedOne(a) => embed::embed_one(a),
        Cmd::Bench(a) => info::bench(a),
        Cmd::Info(a) => info::info(a),
    }
}

fn main() -> ExitCode {
    cli::main(run)
}
