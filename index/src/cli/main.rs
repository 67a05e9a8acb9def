//! `index`: the command line over the index library (build, add, query, remove, relabel,
//! classify, clusters, compact, eval, bench, serve, stats). Every command that changes an index locks it and
//! saves it atomically; a removal is a tombstone until `compact`.
//!
//! One module per family of subcommands (`atlas`, `query`, `curate`, `bench`, `serve`), each
//! holding its subcommands' arguments (`XArgs`) and the function that runs them; a new
//! subcommand is an `XArgs`, a function and one line here.

use anyhow::Result;
use cellspace_core::cli;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod atlas;
mod bench;
mod common;
mod curate;
mod query;
mod serve;

#[derive(Parser)]
#[command(
    name = "index",
    version,
    about = "Find similar white-blood-cell images: an HNSW index of cellspace embeddings"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
// Each subcommand's help is its `XArgs` struct's doc.
enum Cmd {
    Build(atlas::BuildArgs),
    Add(atlas::AddArgs),
    Query(query::QueryArgs),
    Remove(curate::RemoveArgs),
    Relabel(curate::RelabelArgs),
    Classify(curate::ClassifyArgs),
    Clusters(curate::ClustersArgs),
    Compact(curate::CompactArgs),
    Eval(query::EvalArgs),
    Bench(bench::BenchArgs),
    Serve(serve::ServeArgs),
    Stats(atlas::StatsArgs),
}

fn main() -> ExitCode {
    cli::main(run)
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Build(a) => atlas::build(a),
        Cmd::Add(a) => atlas::add(a),
        Cmd::Query(a) => query::query(a),
        Cmd::Remove(a) => curate::remove(a),
        Cmd::Relabel(a) => curate::relabel(a),
        Cmd::Classify(a) => curate::classify(a),
        Cmd::Clusters(a) => curate::clusters(a),
        Cmd::Compact(a) => curate::compact(a),
        Cmd::Eval(a) => query::eval(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Stats(a) => atlas::stats(a),
    }
}
