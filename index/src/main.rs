//! `index`: the command line over the index library (build, add, query, remove, relabel,
//! classify, compact, eval, bench, serve, stats). Every command that changes an index locks it and
//! saves it atomically; a removal is a tombstone until `compact`.

use anyhow::{Context, Result, bail};
use cellspace_core::cli::{self, Report};
use cellspace_core::outcome::{self, OK, PARTIAL};
use clap::{Parser, Subcommand};
use index::{HnswParams, default_index, embed, ops};
use runtime::{Device, EmbedOptions};
use std::path::PathBuf;
use std::process::ExitCode;

mod curate;

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

#[derive(clap::Args)]
struct Common {
    /// Index directory (default: ./cells.index or $CELLSPACE_INDEX).
    #[arg(long, short = 'i')]
    index: Option<PathBuf>,
    /// Model card; by default the one the index was built with (must be the same model).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// µm per pixel of the query fields, when known (else the red-cell scale is measured).
    #[arg(long, value_parser = cellspace_core::cli::number::pixel_size_um)]
    pixel_size: Option<f32>,
    /// The query microscope's calibration: the embed.json `runtime embed` wrote for a folder
    /// of its fields; queries are then sized and colour-standardised as that folder's fields.
    #[arg(long)]
    calibration: Option<PathBuf>,
}

impl Common {
    /// The query embedder set up for the query microscope (pixel size, calibration).
    fn for_queries(&self, embedder: &mut runtime::Embedder) -> anyhow::Result<()> {
        embedder.set_pixel_size(self.pixel_size);
        if let Some(p) = &self.calibration {
            embedder.set_calibration(Some(cellspace_core::calibration::load(p)?));
        }
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        self.index.clone().unwrap_or_else(default_index)
    }
    fn opts(&self) -> EmbedOptions {
        EmbedOptions {
            device: self.device,
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an index from a `runtime embed` output folder, or from images with --images.
    Build {
        /// Output folder of `runtime embed` (DIR.embeddings), or every shard folder of one
        /// split (`runtime embed --shard I/N`), merged as `runtime merge` would.
        emb_dirs: Vec<PathBuf>,
        /// Embed this image folder first (into DIR.embeddings), then build.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Index directory to write (default: ./cells.index).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Model card (default: models/cellspace.json).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Source groups (`path<TAB>group`, as `trainer groups` writes): which original cell
        /// each image is a copy of. Default: source_groups.tsv in or beside the image folder.
        #[arg(long)]
        groups: Option<PathBuf>,
        /// Index the rows of an interrupted `runtime embed` anyway.
        #[arg(long)]
        allow_incomplete: bool,
        /// Metadata sidecar: CSV with a `path` column, or JSON lines with a "path" key; every
        /// other field is stored with the cell (a `class` field replaces the folder name).
        #[arg(long)]
        meta: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: Device,
        #[arg(long, default_value_t = HnswParams::default().m, value_parser = cellspace_core::cli::number::at_least_two)]
        m: usize,
        #[arg(long, default_value_t = HnswParams::default().ef_construction, value_parser = cellspace_core::cli::number::at_least_one)]
        ef_construction: usize,
        #[arg(long, default_value_t = HnswParams::default().ef_search)]
        ef_search: usize,
        /// Vector store: f32 (exact, in memory), or int8 (a quarter of the memory; codes in
        /// memory, exact rows on disk to re-rank the best candidates).
        #[arg(long, default_value = "f32")]
        store: index::store::StoreKind,
    },
    /// Append images or embeddings to an index (rows already there, removed ones too, are kept
    /// as they are; a sidecar also updates the fields of indexed cells it names).
    Add {
        /// Output folder of `runtime embed`, or every shard folder of one split.
        emb_dirs: Vec<PathBuf>,
        #[arg(long)]
        images: Option<PathBuf>,
        /// Metadata sidecar (see `build --meta`).
        #[arg(long)]
        meta: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Print the k most similar indexed cells for each image, or for examples: more like
    /// the --like cells and less like the --unlike ones, in one list.
    Query {
        images: Vec<PathBuf>,
        /// More like this cell: an image, or `id:N` of an indexed cell; repeat for several.
        /// The query images are then examples to be like too, and one list answers them all
        /// (qdrant's average-vector rule; the examples' own cells are never answered).
        #[arg(long, value_name = "IMAGE|id:N")]
        like: Vec<String>,
        /// Less like this cell (an image or `id:N`); repeat for several.
        #[arg(long, value_name = "IMAGE|id:N")]
        unlike: Vec<String>,
        #[arg(short, default_value_t = 10)]
        k: usize,
        #[arg(long)]
        ef: Option<usize>,
        /// Skip the query's own cell: indexed copies of the same file and, where the index
        /// knows source groups, every copy of the same original.
        #[arg(long)]
        exclude_self: bool,
        /// At most one result per original cell (source group), so copies of one cell do not
        /// fill the list.
        #[arg(long)]
        distinct: bool,
        /// Only cells whose FIELD equals VALUE (class, group, or a sidecar field); repeat for
        /// several conditions, all of which must hold. Checked inside the graph search.
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        conditions: Vec<index::Condition>,
        #[command(flatten)]
        report: Report,
        #[command(flatten)]
        common: Common,
    },
    /// Remove cells (by image path, or every cell matching --where): they are never returned
    /// again; `compact` frees their space.
    Remove {
        paths: Vec<PathBuf>,
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        conditions: Vec<index::Condition>,
        #[command(flatten)]
        common: Common,
    },
    /// Set the class of an indexed cell.
    Relabel {
        path: PathBuf,
        class: String,
        #[command(flatten)]
        common: Common,
    },
    /// Classify every indexed cell from a few labelled ones: the kNN-200 vote of the most
    /// similar labelled cells, with its confidence (share of the vote); a differential count.
    Classify {
        /// The labels: CSV with `path` and `class` columns (or JSON lines), naming indexed
        /// images (as indexed, or relative to the current folder).
        #[arg(long)]
        labels: PathBuf,
        /// Labelled cells that vote, the most similar first.
        #[arg(short, default_value_t = 200, value_parser = cellspace_core::cli::number::at_least_one)]
        k: usize,
        /// Store each cell's class in this field (and FIELD_confidence) of the index, saved
        /// atomically: `--where FIELD=CLASS` and the lab page then see it.
        #[arg(long, value_name = "FIELD")]
        write: Option<String>,
        #[command(flatten)]
        report: Report,
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild the graph without the removed cells (row ids change).
    Compact {
        #[command(flatten)]
        common: Common,
    },
    /// Retrieval quality for a labelled query folder (class = parent folder name).
    Eval {
        query_dir: PathBuf,
        #[arg(long)]
        ef: Option<usize>,
        #[command(flatten)]
        report: Report,
        #[command(flatten)]
        common: Common,
    },
    /// Build time, queries/s and recall@10 at several ef against brute force, on a
    /// `runtime embed` output folder and/or a synthetic set.
    Bench {
        /// Output folder of `runtime embed` (real embeddings).
        emb_dir: Option<PathBuf>,
        /// Also a synthetic set of this many vectors (of the real set's dimension, or --dim).
        #[arg(long, value_parser = cellspace_core::cli::number::at_least_one)]
        synthetic: Option<usize>,
        #[arg(long, default_value_t = 128, value_parser = cellspace_core::cli::number::at_least_one)]
        dim: usize,
        #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256", value_parser = cellspace_core::cli::number::at_least_one)]
        ef: Vec<usize>,
        #[arg(long, default_value_t = 1000, value_parser = cellspace_core::cli::number::at_least_one)]
        queries: usize,
        /// Write the synthetic vectors (all rows, queries included) to this .npy, to run
        /// another index on the same set (scripts/bench_hnswlib.py).
        #[arg(long)]
        save_vectors: Option<PathBuf>,
        /// HNSW M and ef_construction (default: the index defaults).
        #[arg(long, default_value_t = HnswParams::default().m, value_parser = cellspace_core::cli::number::at_least_two)]
        m: usize,
        #[arg(long, default_value_t = HnswParams::default().ef_construction, value_parser = cellspace_core::cli::number::at_least_one)]
        ef_construction: usize,
        /// Vector store: f32, or int8 codes with exact re-ranking from disk.
        #[arg(long, default_value = "f32")]
        store: index::store::StoreKind,
        #[command(flatten)]
        report: Report,
    },
    /// Serve the lab page and JSON API (127.0.0.1 only by default).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Neighbours shown per query.
        #[arg(short, default_value_t = 12)]
        k: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Size, dimension, parameters, model and memory of an index.
    Stats {
        #[command(flatten)]
        report: Report,
        #[command(flatten)]
        common: Common,
    },
}

fn model_path(m: Option<PathBuf>) -> Result<PathBuf> {
    m.or_else(runtime::default_model)
        .context("no --model given and no models/cellspace.json found")
}

fn main() -> ExitCode {
    cli::main(run)
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Build {
            emb_dirs,
            images,
            out,
            model,
            groups,
            allow_incomplete,
            meta,
            device,
            m,
            ef_construction,
            ef_search,
            store,
        } => {
            let groups = groups
                .map(|g| cellspace_core::dataset::SourceGroups::load(&g))
                .transpose()?;
            let meta = meta
                .map(|m| index::sidecar::Sidecar::load(&m))
                .transpose()?;
            let params = HnswParams {
                m,
                ef_construction,
                ef_search,
                store,
                ..Default::default()
            };
            let embedder = runtime::Embedder::new(
                &model_path(model)?,
                &EmbedOptions {
                    device,
                    ..Default::default()
                },
            )?;
            let out = out.unwrap_or_else(default_index);
            let _lock = ops::lock(&out)?;
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
                    embed::build_from_images(&d, &embedder, params, true, meta.as_ref())?.0
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
        }
        Cmd::Add {
            emb_dirs,
            images,
            meta,
            common,
        } => {
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
                    let (summary, failures) =
                        runtime::folder::embed_dir(&embedder, &d, &out, true)?;
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
        }
        Cmd::Query {
            images,
            like,
            unlike,
            k,
            ef,
            exclude_self,
            distinct,
            conditions,
            report,
            common,
        } => {
            let (index, mut embedder) =
                embed::open_with_model(&common.dir(), common.model.as_deref(), &common.opts())?;
            common.for_queries(&mut embedder)?;
            let filter = ops::QueryFilter {
                exclude_self,
                distinct,
                conditions,
            };
            let examples = embed::ExampleQuery {
                like: images
                    .iter()
                    .map(|p| p.display().to_string())
                    .chain(like)
                    .collect(),
                unlike,
            };
            let results = if examples.unlike.is_empty() && examples.like.len() == images.len() {
                if images.is_empty() {
                    bail!("give query images, or cells to be --like");
                }
                embed::query(&index, &embedder, &images, k, ef, &filter)
            } else {
                vec![embed::query_examples(
                    &index, &embedder, &examples, k, ef, &filter,
                )]
            };
            if report.json {
                outcome::emit_json(report.out.as_deref(), &results)?;
            } else {
                use std::fmt::Write;
                let mut text = String::new();
                use cellspace_core::cli::shown;
                for r in &results {
                    writeln!(text, "{}", shown(&r.image))?;
                    if let Some(e) = &r.error {
                        writeln!(text, "  error: {}", shown(&e.to_string()))?;
                    }
                    if let Some(w) = &r.warning {
                        writeln!(text, "  warning: {w}")?;
                    }
                    for h in &r.neighbours {
                        let fields: String = h
                            .meta
                            .iter()
                            .map(|(k, v)| format!("  {}={}", shown(k), shown(v)))
                            .collect();
                        writeln!(
                            text,
                            "  {:>3}  {:.4}  {:<12} {}{fields}",
                            h.rank,
                            h.similarity,
                            shown(h.class.as_deref().unwrap_or("-")),
                            shown(&h.path)
                        )?;
                    }
                }
                outcome::emit_text(report.out.as_deref(), &text)?;
            }
            if results.iter().any(|r| r.error.is_some()) {
                return Ok(PARTIAL);
            }
        }
        Cmd::Remove {
            paths,
            conditions,
            common,
        } => return curate::remove(&common.dir(), &paths, &conditions),
        Cmd::Relabel {
            path,
            class,
            common,
        } => return curate::relabel(&common.dir(), &path, &class),
        Cmd::Compact { common } => return curate::compact(&common.dir()),
        Cmd::Classify {
            labels,
            k,
            write,
            report,
            common,
        } => return curate::classify(&common.dir(), &labels, k, write.as_deref(), &report),
        Cmd::Eval {
            query_dir,
            ef,
            report,
            common,
        } => {
            let (index, embedder) =
                embed::open_with_model(&common.dir(), common.model.as_deref(), &common.opts())?;
            let result = embed::eval(&index, &embedder, &query_dir, ef)?;
            outcome::emit_json(report.out.as_deref(), &result)?;
        }
        Cmd::Bench {
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
        } => {
            let mut reports = Vec::new();
            let mut dim = dim;
            let params = HnswParams {
                m,
                ef_construction,
                store,
                ..Default::default()
            };
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
        }
        Cmd::Serve { addr, k, common } => {
            let (index, mut embedder) =
                embed::open_with_model(&common.dir(), common.model.as_deref(), &common.opts())?;
            common.for_queries(&mut embedder)?;
            let n = index.live();
            let state = index::serve::AppState::watching(&common.dir(), index, embedder, k);
            if !addr.ip().is_loopback() {
                eprintln!(
                    "WARNING: serving on {addr}, not loopback: anyone who can reach this machine can query the atlas and see its cells. There is no login. Use 127.0.0.1 unless the network is trusted, and list the host names clients use in CELLSPACE_ALLOWED_HOSTS."
                );
            }
            let bound = index::serve::spawn(state, addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            println!("cellspace lab tool: http://{bound}/  ({n} cells; Ctrl-C to stop)");
            loop {
                std::thread::park();
            }
        }
        Cmd::Stats { report, common } => {
            let dir = common.dir();
            let index = index::CellIndex::open(&dir)?;
            outcome::emit_json(report.out.as_deref(), &ops::stats(&index, &dir))?;
        }
    }
    Ok(OK)
}
