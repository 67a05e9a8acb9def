//! `runtime embed`, `merge` and `embed-one`: folders, shards and single images to embeddings.

use crate::model::{ModelArgs, load};
use anyhow::Result;
use cellspace_core::cli::Report;
use cellspace_core::outcome::{self, ERROR, OK, PARTIAL};
use std::path::PathBuf;

/// Embed every image below DIR into DIR.embeddings/ (embeddings.npy, manifest.jsonl, failures.jsonl).
#[derive(clap::Args)]
pub struct EmbedArgs {
    pub dir: PathBuf,
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Embed only shard I of N (0-based; by a hash of each image's path, so the split is
    /// stable when images are added) into a folder of its own (default
    /// DIR.shard-I-of-N.embeddings); `runtime merge` puts the shards together.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<cellspace_core::shard::Shard>,
    /// Which white cells of each field become rows: the largest (one row per image), or
    /// all of them (one row per cell, with its number and box; a one-cell image is one row
    /// as before).
    #[arg(long, value_enum, default_value_t = cellspace_core::embeddings::Cells::Largest)]
    pub cells: cellspace_core::embeddings::Cells,
}

/// Run `runtime embed`.
pub fn embed(args: EmbedArgs) -> Result<u8> {
    let EmbedArgs {
        dir,
        out,
        model,
        json,
        shard,
        cells,
    } = args;
    let e = load(&model)?;
    let out = out.unwrap_or_else(|| match shard {
        Some(s) => runtime::folder::default_shard_out(&dir, s),
        None => runtime::folder::default_out(&dir),
    });
    let bar = cellspace_core::cli::terminal_bar();
    let progress: &dyn runtime::folder::Progress = if json { &() } else { &bar };
    let (s, failures) = runtime::folder::embed_shard(&e, &dir, &out, progress, shard, cells)?;
    for f in &failures {
        eprintln!(
            "failed: {}: {}",
            cellspace_core::cli::shown(&f.path),
            cellspace_core::cli::shown(&f.reason)
        );
    }
    print_summary(&s);
    if json {
        outcome::emit_json(None, &s)?;
    }
    // a shard may hold none of a small folder's images: that is a finished shard
    Ok(match (s.embedded + s.reused, s.failed, shard) {
        (0, 0, Some(_)) => OK,
        (0, _, None) => ERROR,
        (_, 0, _) => OK,
        _ => PARTIAL,
    })
}

/// The folder's summary on stderr: counts, speed, scale, stain shift and the windows' flags.
fn print_summary(s: &runtime::folder::EmbedSummary) {
    eprintln!(
        "embedded {}, skipped {} (unchanged), failed {}, {:.1} images/s on {} -> {}",
        s.embedded,
        s.reused,
        s.failed,
        s.images_per_s,
        s.provider,
        s.out_dir.display()
    );
    if s.rows != s.embedded + s.reused {
        eprintln!(
            "{} rows: every white cell of each field (manifest `cell`, `window.cell_box`)",
            s.rows
        );
    }
    if let Some(c) = &s.scale.calibration {
        eprintln!(
            "red-cell scale of the folder: {:.1} px (median of {} of {} fields measured); every window is sized by it (fields whose own red cells read unlike it are flagged scale-unlike-folder)",
            c.rbc_px, c.measured, c.fields
        );
    }
    if let Some(shift) = &s.scale.stain_shift {
        eprintln!("stain shift of the folder: {}", shift.describe());
    }
    if !s.flagged.is_empty() {
        let flags: Vec<String> = s.flagged.iter().map(|(f, n)| format!("{n} {f}")).collect();
        eprintln!(
            "white-cell windows flagged: {} (see window.flags in the manifest; no-stain: the field's centre was used, several: the largest stained cell, border: window padded past the field's edge, cut: the nucleus touches the edge; no-background, no-red-cells: colour could not be standardised; no-scale: the red-cell scale could not be measured; colour-out-of-range, scale-out-of-range: unlike the fields the model was trained and checked on; scale-unlike-folder: the field's own red cells read far from the folder's scale, which sized the window)",
            flags.join(", ")
        );
        let odd: usize = s
            .flagged
            .iter()
            .filter(|(f, _)| {
                cellspace_core::locate::LocateFlag::ALL
                    .iter()
                    .any(|l| l.out_of_range() && l.name() == f.as_str())
            })
            .map(|(_, n)| n)
            .sum();
        if odd > 0 {
            eprintln!(
                "warning: {odd} field flags say the images are unlike the model's training fields: their neighbours may be wrong without looking wrong"
            );
        }
    }
}

/// Merge the embeddings folders of every shard of one split (`embed --shard I/N`) into one
/// folder, the same, row for row, as a single `runtime embed` of the images.
#[derive(clap::Args)]
pub struct MergeArgs {
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    #[arg(short, long)]
    pub out: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `runtime merge`.
pub fn merge(args: MergeArgs) -> Result<u8> {
    let MergeArgs { shards, out, json } = args;
    let _lock =
        cellspace_core::atomic::OutputLock::acquire(&out.join(runtime::folder::LOCK_FILE), &out)?;
    let m = cellspace_core::shard::merge(&shards)?;
    cellspace_core::embeddings::save_folder(&out, &m.rows, &m.data, &m.failures, &m.state)?;
    let summary = serde_json::json!({
        "out_dir": out,
        "shards": shards.len(),
        "rows": m.rows.len(),
        "failed": m.failures.len(),
        "model": m.state.model,
    });
    eprintln!(
        "merged {} shards: {} rows, {} failures -> {}",
        shards.len(),
        m.rows.len(),
        m.failures.len(),
        out.display()
    );
    if json {
        outcome::emit_json(None, &summary)?;
    }
    Ok(if m.failures.is_empty() { OK } else { PARTIAL })
}

/// Print one image's embedding as JSON.
#[derive(clap::Args)]
pub struct EmbedOneArgs {
    pub image: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub report: Report,
}

/// Run `runtime embed-one`.
pub fn embed_one(args: EmbedOneArgs) -> Result<u8> {
    let EmbedOneArgs {
        image,
        model,
        report,
    } = args;
    let e = load(&model)?;
    let img = cellspace_core::preprocess::load_rgb(&image)?;
    let (v, window) = e.embed_image_located(&img)?;
    let warning = window.as_ref().and_then(|w| w.out_of_range_warning());
    if let Some(w) = &warning {
        eprintln!("warning: {}: {w}", image.display());
    }
    let result = serde_json::json!({
        "path": image, "model": e.card().name, "embedding": v,
        "window": window, "warning": warning,
    });
    outcome::emit_json(report.out.as_deref(), &result)?;
    Ok(OK)
}
