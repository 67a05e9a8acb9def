//! `index`: the command line over the index library (build, add, query, remove, relabel,
//! classify, compact, eval, bench, serve, stats). Every command that changes an index locks it and
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
enum Cmd {
    /// Build an index from a `runtime embed` output folder, or from images with --images.
    Build(atlas::BuildArgs),
    /// Append images or embeddings to an index (rows already there, removed ones too, are kept
    /// as they are; a sidecar also updates the fields of indexed cells it names).
    Add(atlas::AddArgs),
    /// Print the k most similar indexed cells for each image, or for examples: more like
    /// the --like cells and less like the --unlike ones, in one list.
    Query(query::QueryArgs),
    /// Remove cells (by image path, or every cell matching --where): they are never returned
    /// again; `compact` frees their space.
    Remove(curate::RemoveArgs),
    /// Set the class of an indexed cell.
    Relabel(curate::RelabelArgs),
    /// Classify every indexed cell from a few labelled ones: the kNN-200 vote of the most
    /// similar labelled cells, with its confidence (share of the vote); a differential count.
    Classify(curate::ClassifyArgs),
    /// Rebuild the graph without the removed cells (row ids change).
    Compact(curate::CompactArgs),
    /// Retrieval quality for a labelled query folder (class = parent folder name).
    Eval(query::EvalArgs),
    /// Build time, queries/s and recall@10 at several ef against brute force, on a
    /// `runtime embed` output folder and/or a synthetic set.
    Bench(bench::BenchArgs),
    /// Serve the lab page and JSON API (127.0.0.1 only by default).
    Serve(serve::ServeArgs),
    /// Size, dimension, parameters, model and memory of an index.
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
        Cmd::Compact(a) => curate::compact(a),
        Cmd::Eval(a) => query::eval(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Stats(a) => atlas::stats(a),
    }
}
