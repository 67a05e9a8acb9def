//! `trainer groups`, `eval` and `export`: source groups, a run measured, a run exported.

use anyhow::Result;
use cellspace_core::cli::Report;
use cellspace_core::outcome::{self, OK};
use std::path::PathBuf;
use trainer::model::EmbeddingOutput;
use trainer::tta::TestTimeViews;

/// Estimate which images are copies of one original (no labels): writes path<TAB>group.
#[derive(clap::Args)]
pub struct GroupsArgs {
    /// Folder of images.
    pub dir: PathBuf,
    #[arg(short, long)]
    pub out: PathBuf,
    /// Cosine similarity of colour signatures above which two images are copies.
    #[arg(long, default_value_t = cellspace_core::duplicates::DEFAULT_THRESHOLD, value_parser = cellspace_core::cli::number::finite_f32)]
    pub threshold: f32,
    /// A reference grouping to report agreement with (default: source_groups.tsv in or
    /// beside DIR, when there is one).
    #[arg(long)]
    pub reference: Option<PathBuf>,
}

/// Run `trainer groups`.
pub fn groups(args: GroupsArgs) -> Result<u8> {
    let GroupsArgs {
        dir,
        out,
        threshold,
        reference,
    } = args;
    write_groups(&dir, &out, threshold, reference.as_deref())?;
    Ok(OK)
}

/// Retrieval metrics of a run's served model on labelled folders, beside the histogram baseline.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Folder searched.
    #[arg(long)]
    pub gallery: PathBuf,
    /// Folder of query images (other cells); without it the gallery queries itself.
    #[arg(long)]
    pub query: Option<PathBuf>,
    /// With one folder: never count another copy of the same original cell as a match.
    #[arg(long)]
    pub exclude_same_group: bool,
    #[command(flatten)]
    pub out: Report,
}

/// Run `trainer eval`.
pub fn eval(args: EvalArgs) -> Result<u8> {
    let EvalArgs {
        run,
        gallery,
        query,
        exclude_same_group,
        out,
    } = args;
    let device = burn::tensor::Device::flex();
    let (model, cfg, best) = trainer::train::load_served_model(&run, &device)?;
    let pre = cfg.preprocess();
    let bar = cellspace_core::cli::terminal_bar();
    let g = trainer::data::CellImages::load(&gallery, &pre, pre.size, None, &bar)?;
    let q = query
        .map(|q| trainer::data::CellImages::load(&q, &pre, pre.size, None, &bar))
        .transpose()?;
    let full = trainer::colour::RetrievalModel {
        colour: trainer::colour::ColourHistogram::new(&pre, &device),
        encoder: model,
    };
    let report = trainer::eval::eval_folders(
        &full,
        best.output,
        best.colour_weight,
        &pre,
        &g,
        q.as_ref(),
        exclude_same_group,
    );
    outcome::emit_json(out.out.as_deref(), &report)?;
    Ok(OK)
}

/// Export a run's served model to NAME.onnx + NAME.json.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Output path without extension, e.g. models/cellspace.
    #[arg(short, long, visible_alias = "to")]
    pub out: PathBuf,
    /// The run's data folder: measure the run's held-out validation again with this build.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A `trainer cv` report (cv.json) of the same recipe, carried in the card.
    #[arg(long)]
    pub cv: Option<PathBuf>,
    /// A `trainer robustness` report (robustness.json) of the same recipe's folds: serve the
    /// output and colour weight best over its clean row and every shift (unless --output or
    /// --colour-weight is given), and carry the nested estimate of that choice in the card.
    #[arg(long)]
    pub robustness: Option<PathBuf>,
    /// Serve this output instead of the run's (backbone or head).
    #[arg(long, value_enum)]
    pub output: Option<EmbeddingOutput>,
    /// Serve this colour weight instead of the run's.
    #[arg(long, value_parser = cellspace_core::cli::number::non_negative_f32)]
    pub colour_weight: Option<f32>,
    /// Serve the embedding averaged over these views: none, or dihedral-8 (the window's eight
    /// symmetries, inside the graph; 8x the inference). Like --output and --colour-weight a
    /// hand choice: the --robustness report's choice is then not used.
    #[arg(long, value_parser = parse_views)]
    pub views: Option<TestTimeViews>,
}

fn parse_views(s: &str) -> Result<TestTimeViews, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?}: not one of none, dihedral-8"))
}

/// Run `trainer export`.
pub fn export(args: ExportArgs) -> Result<u8> {
    let opts = trainer::export::ExportOptions {
        data: args.data,
        cv: args.cv,
        robustness: args.robustness,
        output: args.output,
        colour_weight: args.colour_weight,
        views: args.views,
    };
    let card = trainer::export::export_run(&args.run, &args.out, None, &opts)?;
    eprintln!(
        "model exported: {} (card {})",
        card.with_extension("onnx").display(),
        card.display()
    );
    Ok(OK)
}

/// `trainer groups`: estimated source groups as `path<TAB>group`, and their agreement with a
/// reference grouping where there is one.
fn write_groups(
    dir: &std::path::Path,
    out: &std::path::Path,
    threshold: f32,
    reference: Option<&std::path::Path>,
) -> Result<()> {
    use cellspace_core::dataset::SourceGroups;
    let cellspace_core::duplicates::Estimate {
        images: entries,
        groups: ids,
        failed,
    } = cellspace_core::duplicates::estimate_groups(dir, threshold)?;
    for (path, reason) in &failed {
        eprintln!("skipped {path}: {reason}");
    }
    let mut text = String::from("path\tgroup\n");
    for (e, g) in entries.iter().zip(&ids) {
        text.push_str(&format!("{}\tg{g}\n", e.rel));
    }
    cellspace_core::atomic::write_atomic(out, text.as_bytes())?;
    let n = ids.iter().collect::<std::collections::HashSet<_>>().len();
    eprintln!(
        "{} images in {n} estimated source groups -> {}",
        entries.len(),
        out.display()
    );
    let reference = match reference {
        Some(p) => Some(SourceGroups::load(p)?),
        None => SourceGroups::find(dir)?,
    };
    let mut summary = serde_json::json!({
        "images": entries.len(), "groups": n, "threshold": threshold, "failed": failed.len(),
    });
    if let Some(r) = reference {
        let known: Vec<usize> = (0..entries.len())
            .filter(|&i| r.group_of(&entries[i].rel).is_some())
            .collect();
        let est: Vec<usize> = known.iter().map(|&i| ids[i]).collect();
        let refs: Vec<&str> = known
            .iter()
            .filter_map(|&i| r.group_of(&entries[i].rel))
            .collect();
        let (p, rc) = cellspace_core::duplicates::pair_agreement(&est, &refs);
        let ref_groups = refs.iter().collect::<std::collections::HashSet<_>>().len();
        eprintln!(
            "agreement with the reference ({} images in it, {ref_groups} groups): pairwise precision {p:.3}, recall {rc:.3}",
            known.len()
        );
        summary["reference"] = serde_json::json!({
            "images": known.len(), "groups": ref_groups, "pair_precision": p, "pair_recall": rc,
        });
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
