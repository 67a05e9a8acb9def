//! `trainer`: the command line over the trainer library (fit, cv, robustness, groups, eval,
//! export, bench). One module per family of subcommands (`train`, `measure`), each holding its
//! subcommands' arguments (`XArgs`) and the function that runs them; the fit flags they share
//! are `args`.

use anyhow::Result;
use cellspace_core::cli;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod args;
mod measure;
mod train;

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
// Each subcommand's help is its `XArgs` struct's doc.
enum Cmd {
    /// Train an encoder on a folder of cell images (labels are never used to train).
    Fit(args::FitArgs),
    Cv(train::CvArgs),
    Robustness(train::RobustnessArgs),
    Groups(measure::GroupsArgs),
    Eval(measure::EvalArgs),
    Bench(train::BenchArgs),
    Export(measure::ExportArgs),
}

fn main() -> ExitCode {
    trainer::allocator::keep_freed_memory();
    cli::main(run)
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Fit(a) => train::fit_cmd(a),
        Cmd::Cv(a) => train::cv(a),
        Cmd::Robustness(a) => train::robustness(a),
        Cmd::Groups(a) => measure::groups(a),
        Cmd::Eval(a) => measure::eval(a),
        Cmd::Bench(a) => train::bench(a),
        Cmd::Export(a) => measure::export(a),
    }
}
