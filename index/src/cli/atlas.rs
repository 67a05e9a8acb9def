//! `index build`, `add` and `stats`: making and growing the atlas.

use crate::common::{Common, ProviderArgs, model_path};
use anyhow::{Result, bail};
use cellspace_core::cli::Report;
use cellspace_core::outcome::{self, OK, PARTIAL};
use index::{HnswParams, IndexParams, default_index, embed, ops};
use std::path::PathBuf;

/// Build an index from a `runtime embed` output folder, or from images with --images.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Output folder of `runtime embed` (DIR.embeddings), or every shard folder of one
    /// split (`runtime embed --shard I/N`), merged as `runtime merge` would.
    pub emb_dirs: Vec<PathBuf>,
    /// Embed this image folder first (into DIR.embeddings), then build.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Index directory to write (default: ./cells.index).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Model card (default: models/cellspace.json).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Source groups (`path<TAB>group`, as `trainer groups` writes): which original cell
    /// each image is a copy of. Default: source_groups.tsv in or beside the image folder.
    #[arg(long)]
    pub groups: Option<PathBuf>,
    /// Index the rows of an interrupted `runtime embed` anyway.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// Metadata sidecar: CSV with a `path` column, or JSON lines with a "path" key; every
    /// other field is stored with the cell (a `class` field replaces the folder name).
    #[arg(long)]
    pub meta: Option<PathBuf>,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[arg(long, default_value_t = HnswParams::default().m, value_parser = cellspace_core::cli::number::at_least_two)]
    pub m: usize,
    #[arg(long, default_value_t = HnswParams::default().ef_construction, value_parser = cellspace_core::cli::number::at_least_one)]
    pub ef_construction: usize,
    #[arg(long, default_value_t = HnswParams::default().ef_search)]
    pub ef_search: usize,
    /// Vector store: f32 (exact, in memory), or int8 (a quarter of the memory; codes in
    /// memory, exact rows on disk to re-rank the best candidates).
    #[arg(long, default_value = "f32")]
    pub store: index::store::StoreKind,
}

/// Run `index build`.
pub fn build(args: BuildArgs) -> Result<u8> {
    let BuildArgs {
        emb_dirs,
        images,
        out,
        model,
        groups,
        allow_incomplete,
        meta,
        provider,
        m,
        ef_construction,
        ef_search,
        store,
    } = args;
    let groups = groups
        .map(|g| cellspace_core::dataset::SourceGroups::load(&g))
        .transpose()?;
    let meta = meta
        .map(|m| index::sidecar::Sidecar::load(&m))
        .transpose()?;
    let params = IndexParams::new(
        HnswParams {
            m,
            ef_construction,
            ef_search,
        },
        store,
    );
    let embedder = runtime::Embedder::new(&model_path(model)?, &provider.opts())?;
    let out = out.unwrap_or_else(default_index);
    let _lock = ops::lock(&out)?;
    // before the build's minutes, not after them
    index::CellIndex::check_replaceable(&out)?;
    let t = std::time::Instant::now();
    let index = match (emb_dirs.is_empty(), images) {
        (false, None) => {
            let source = ops::EmbeddingsSource {
                groups: groups.as_ref(),
                allow_incomplete,
                meta: meta.as_ref(),
            };
            let model = embed::model_ref(&embedder);
            ops::build_from_folders(&emb_dirs, &model, params, source)?
        }
        (true, Some(d)) => {
            let bar = cellspace_core::cli::terminal_bar();
            embed::build_from_images(&d, &embedder, params, &bar, meta.as_ref())?.0
        }
        _ => bail!("give either an embeddings folder or --images DIR"),
    };
    index.save(&out)?;
    eprintln!(
        "indexed {} cells ({}-d, model {}) in {:.1}s -> {}",
        index.len(),
        index.model().dim,
        index.model().name,
        t.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(OK)
}

/// Append images or embeddings to an index (rows already there, removed ones too, are kept
/// as they are; a sidecar also updates the fields of indexed cells it names).
#[derive(clap::Args)]
pub struct AddArgs {
    /// Output folder of `runtime embed`, or every shard folder of one split.
    pub emb_dirs: Vec<PathBuf>,
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Metadata sidecar (see `build --meta`).
    #[arg(long)]
    pub meta: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

/// Run `index add`.
pub fn add(args: AddArgs) -> Result<u8> {
    let AddArgs {
        emb_dirs,
        images,
        meta,
        common,
    } = args;
    let meta = meta
        .map(|m| index::sidecar::Sidecar::load(&m))
        .transpose()?;
    let dir = common.dir();
    let _lock = ops::lock(&dir)?;
    let (mut index, embedder) =
        embed::open_with_model(&dir, common.model.as_deref(), &common.opts())?;
    let mut failed = 0;
    let emb = match (emb_dirs.is_empty(), images) {
        (false, None) => emb_dirs,
        (true, Some(d)) => {
            let out = runtime::folder::default_out(&d);
            let bar = cellspace_core::cli::terminal_bar();
            let (summary, failures) = runtime::folder::embed_dir(&embedder, &d, &out, &bar)?;
            for f in &failures {
                eprintln!(
                    "failed: {}: {}",
                    cellspace_core::cli::shown(&f.path),
                    cellspace_core::cli::shown(&f.reason)
                );
            }
            failed = summary.failed;
            vec![out]
        }
        _ => bail!("give either an embeddings folder or --images DIR"),
    };
    let n = ops::add_embeddings(&mut index, &emb, meta.as_ref())?;
    index.save(&dir)?;
    eprintln!(
        "added {n} cells; the index now holds {} ({} removed cells held until `index compact`)",
        index.live(),
        index.removed()
    );
    if failed > 0 {
        eprintln!("{failed} files could not be embedded (listed above; not added)");
        return Ok(PARTIAL);
    }
    Ok(OK)
}

/// Size, dimension, parameters, model and memory of an index.
#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub report: Report,
    #[command(flatten)]
    pub common: Common,
}

/// Run `index stats`.
pub fn stats(args: StatsArgs) -> Result<u8> {
    let StatsArgs { report, common } = args;
    let dir = common.dir();
    let index = index::CellIndex::open(&dir)?;
    outcome::emit_json(report.out.as_deref(), &ops::stats(&index, &dir))?;
    Ok(OK)
}
