//! `index bench`: build time, queries/s and recall@10 against brute force.

use anyhow::Result;
use cellspace_core::cli::Report;
use cellspace_core::outcome::{self, OK};
use index::{HnswParams, IndexParams};
use std::path::PathBuf;

/// Build time, queries/s and recall@10 at several ef against brute force, on a
/// `runtime embed` output folder and/or a synthetic set.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Output folder of `runtime embed` (real embeddings).
    pub emb_dir: Option<PathBuf>,
    /// Also a synthetic set of this many vectors (of the real set's dimension, or --dim).
    #[arg(long, value_parser = cellspace_core::cli::number::at_least_one)]
    pub synthetic: Option<usize>,
    #[arg(long, default_value_t = 128, value_parser = cellspace_core::cli::number::at_least_one)]
    pub dim: usize,
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256", value_parser = cellspace_core::cli::number::at_least_one)]
    pub ef: Vec<usize>,
    #[arg(long, default_value_t = 1000, value_parser = cellspace_core::cli::number::at_least_one)]
    pub queries: usize,
    /// Write the synthetic vectors (all rows, queries included) to this .npy, to run
    /// another index on the same set (scripts/bench_hnswlib.py).
    #[arg(long)]
    pub save_vectors: Option<PathBuf>,
    /// HNSW M and ef_construction (default: the index defaults).
    #[arg(long, default_value_t = HnswParams::default().m, value_parser = cellspace_core::cli::number::at_least_two)]
    pub m: usize,
    #[arg(long, default_value_t = HnswParams::default().ef_construction, value_parser = cellspace_core::cli::number::at_least_one)]
    pub ef_construction: usize,
    /// Vector store: f32, or int8 codes with exact re-ranking from disk.
    #[arg(long, default_value = "f32")]
    pub store: index::store::StoreKind,
    #[command(flatten)]
    pub report: Report,
}

/// Run `index bench`.
pub fn bench(args: BenchArgs) -> Result<u8> {
    let BenchArgs {
        emb_dir,
        synthetic,
        dim,
        ef,
        queries,
        save_vectors,
        m,
        ef_construction,
        store,
        report,
    } = args;
    let mut reports = Vec::new();
    let mut dim = dim;
    let params = IndexParams::new(
        HnswParams {
            m,
            ef_construction,
            ..Default::default()
        },
        store,
    );
    if let Some(d) = emb_dir {
        let emb = runtime::folder::Embeddings::load(&d)?;
        dim = emb.dim;
        let r = index::bench::bench(
            &format!("real: {}", d.display()),
            &emb.data,
            emb.dim,
            params,
            &ef,
            queries,
        )?;
        reports.push(r);
    }
    if let Some(n) = synthetic {
        let v = index::bench::synthetic(n, dim, 7);
        if let Some(p) = &save_vectors {
            runtime::npy::write(p, &v, dim)?;
        }
        let r = index::bench::bench(
            &format!("synthetic {n} x {dim}"),
            &v,
            dim,
            params,
            &ef,
            queries,
        )?;
        reports.push(r);
    }
    match reports.as_slice() {
        [one] => outcome::emit_json(report.out.as_deref(), one)?,
        all => outcome::emit_json(report.out.as_deref(), &all)?,
    }
    Ok(OK)
}
