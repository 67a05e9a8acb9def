//! `index query` and `eval`: asking the atlas, one image, examples or a labelled folder.

use crate::common::Common;
use anyhow::{Result, bail};
use cellspace_core::cli::Report;
use cellspace_core::outcome::{self, OK, PARTIAL};
use index::{embed, ops};
use std::path::PathBuf;

/// Print the k most similar indexed cells for each image, or for examples: more like
/// the --like cells and less like the --unlike ones, in one list.
#[derive(clap::Args)]
pub struct QueryArgs {
    pub images: Vec<PathBuf>,
    /// More like this cell: an image, or `id:N` of an indexed cell; repeat for several.
    /// The query images are then examples to be like too, and one list answers them all
    /// (qdrant's average-vector rule; the examples' own cells are never answered).
    #[arg(long, value_name = "IMAGE|id:N")]
    pub like: Vec<String>,
    /// Less like this cell (an image or `id:N`); repeat for several.
    #[arg(long, value_name = "IMAGE|id:N")]
    pub unlike: Vec<String>,
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    #[arg(long)]
    pub ef: Option<usize>,
    /// Skip the query's own cell: indexed copies of the same file and, where the index
    /// knows source groups, every copy of the same original.
    #[arg(long)]
    pub exclude_self: bool,
    /// At most one result per original cell (source group), so copies of one cell do not
    /// fill the list.
    #[arg(long)]
    pub distinct: bool,
    /// Only cells whose FIELD equals VALUE (class, group, or a sidecar field); repeat for
    /// several conditions, all of which must hold. Checked inside the graph search.
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub conditions: Vec<index::Condition>,
    #[command(flatten)]
    pub report: Report,
    #[command(flatten)]
    pub common: Common,
}

/// Run `index query`.
pub fn query(args: QueryArgs) -> Result<u8> {
    let QueryArgs {
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
    } = args;
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
        outcome::emit_text(report.out.as_deref(), &as_text(&results)?)?;
    }
    if results.iter().any(|r| r.error.is_some()) {
        return Ok(PARTIAL);
    }
    Ok(OK)
}

/// The answers as text: the query, its error or warning, then rank, similarity, class, path
/// and fields of each neighbour.
fn as_text(results: &[embed::QueryResult]) -> Result<String> {
    use cellspace_core::cli::shown;
    use std::fmt::Write;
    let mut text = String::new();
    for r in results {
        match (&r.cell, r.window.as_ref().and_then(|w| w.cell_box)) {
            (Some(c), Some([x0, y0, x1, y1])) => writeln!(
                text,
                "{} cell {} of {} (box {x0},{y0} to {x1},{y1})",
                shown(&r.image),
                c.cell + 1,
                c.of
            )?,
            (Some(c), None) => {
                writeln!(text, "{} cell {} of {}", shown(&r.image), c.cell + 1, c.of)?
            }
            (None, _) => writeln!(text, "{}", shown(&r.image))?,
        }
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
    Ok(text)
}

/// Retrieval quality for a labelled query folder (class = parent folder name).
#[derive(clap::Args)]
pub struct EvalArgs {
    pub query_dir: PathBuf,
    #[arg(long)]
    pub ef: Option<usize>,
    #[command(flatten)]
    pub report: Report,
    #[command(flatten)]
    pub common: Common,
}

/// Run `index eval`.
pub fn eval(args: EvalArgs) -> Result<u8> {
    let EvalArgs {
        query_dir,
        ef,
        report,
        common,
    } = args;
    let (index, embedder) =
        embed::open_with_model(&common.dir(), common.model.as_deref(), &common.opts())?;
    let result = embed::eval(&index, &embedder, &query_dir, ef)?;
    outcome::emit_json(report.out.as_deref(), &result)?;
    Ok(OK)
}
