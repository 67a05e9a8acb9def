//! `index remove`, `relabel`, `classify`, `clusters` and `compact`: curating the atlas from the
//! command line. Each that edits locks the index, edits it and saves it atomically ([`index::edit`]).

use crate::common::Common;
use anyhow::{Result, bail};
use cellspace_core::cli::{Report, shown};
use cellspace_core::outcome::{self, OK, PARTIAL};
use std::path::PathBuf;

/// Remove cells (by image path, or every cell matching --where): they are never returned
/// again; `compact` frees their space. An image path removes every white cell of that field
/// unless --cell names one.
#[derive(clap::Args)]
pub struct RemoveArgs {
    pub paths: Vec<PathBuf>,
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub conditions: Vec<index::Condition>,
    /// Only this white cell of each field named by path (1 = the largest: "cell N of M" in
    /// `index query`'s text, the JSON's and the manifest's 0-based `cell` + 1).
    #[arg(long, value_name = "N", requires = "paths", value_parser = cellspace_core::cli::number::at_least_one)]
    pub cell: Option<usize>,
    #[command(flatten)]
    pub common: Common,
}

/// Set the class of an indexed cell. A field of several white cells needs --cell: a class is
/// one cell's, not a field's.
#[derive(clap::Args)]
pub struct RelabelArgs {
    pub path: PathBuf,
    pub class: String,
    /// Which white cell of the field (1 = the largest: "cell N of M" in `index query`'s text,
    /// the JSON's and the manifest's 0-based `cell` + 1).
    #[arg(long, value_name = "N", value_parser = cellspace_core::cli::number::at_least_one)]
    pub cell: Option<usize>,
    #[command(flatten)]
    pub common: Common,
}

/// Classify every indexed cell from a few labelled ones: the kNN-200 vote of the most
/// similar labelled cells, with its confidence (share of the vote); a differential count.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// The labels: CSV with `path` and `class` columns (or JSON lines), naming indexed
    /// images (as indexed, or relative to the current folder).
    #[arg(long)]
    pub labels: PathBuf,
    /// Labelled cells that vote, the most similar first.
    #[arg(short, default_value_t = 200, value_parser = cellspace_core::cli::number::at_least_one)]
    pub k: usize,
    #[command(flatten)]
    pub out: Answers,
}

/// Clusters of the atlas without labels (k-means on the embeddings): each cluster's size, and
/// where cells carry a class, NMI, ARI and the cluster x class table.
#[derive(clap::Args)]
pub struct ClustersArgs {
    /// Number of clusters.
    #[arg(short, default_value_t = 8, value_parser = cellspace_core::cli::number::at_least_one)]
    pub k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub out: Answers,
}

/// Where `classify` and `clusters` put each cell's answer, and how they count them.
#[derive(clap::Args)]
pub struct Answers {
    /// Store each cell's answer in this field of the index, saved atomically (classify: the
    /// class, and its share of the vote in FIELD_confidence; clusters: `c0`, `c1`, ...):
    /// `--where FIELD=VALUE` and the lab page then see it.
    #[arg(long, value_name = "FIELD")]
    pub write: Option<String>,
    /// Also count the answers per value of this field (slide, patient: a differential count
    /// of each).
    #[arg(long, value_name = "FIELD")]
    pub by: Option<String>,
    #[command(flatten)]
    pub report: Report,
    #[command(flatten)]
    pub common: Common,
}

/// Rebuild the graph without the removed cells (row ids change).
#[derive(clap::Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Run `index remove`.
pub fn remove(args: RemoveArgs) -> Result<u8> {
    let (dir, paths, conditions) = (&args.common.dir(), &args.paths, &args.conditions);
    if paths.is_empty() && conditions.is_empty() {
        bail!("name the cells to remove: image paths, or --where FIELD=VALUE");
    }
    let _lock = index::ops::lock(dir)?;
    let mut index = index::CellIndex::open(dir)?;
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        let found = cells_of(&index, p, args.cell)?;
        if found.is_empty() {
            missing.push(p.display().to_string());
        }
        ids.extend(found);
    }
    if !conditions.is_empty() {
        ids.extend(index.find_where(conditions));
    }
    if ids.is_empty() {
        bail!(
            "no indexed cell matches ({} paths not indexed); nothing removed",
            missing.len()
        );
    }
    let n = index.remove(&ids);
    index.save(dir)?;
    eprintln!(
        "removed {n} cells; {} remain ({} removed cells held until `index compact`)",
        index.live(),
        index.removed()
    );
    for m in &missing {
        eprintln!("not indexed: {m}");
    }
    if !missing.is_empty() {
        return Ok(PARTIAL);
    }
    Ok(OK)
}

/// Run `index relabel`.
pub fn relabel(args: RelabelArgs) -> Result<u8> {
    let (dir, path, class) = (&args.common.dir(), &args.path, args.class.as_str());
    let _lock = index::ops::lock(dir)?;
    let mut index = index::CellIndex::open(dir)?;
    let ids = cells_of(&index, path, args.cell)?;
    if ids.is_empty() {
        bail!("{}: not an indexed cell", path.display());
    }
    if ids.len() > 1 {
        bail!(
            "{}: the field holds {} white cells; name one with --cell N (1 = the largest, as \
             `index query` numbers them): nothing was relabelled",
            path.display(),
            ids.len()
        );
    }
    let id = ids[0];
    let old = index.relabel(id, class)?;
    let cell = index.rows()[id]
        .cell
        .map_or(String::new(), |c| format!(" (cell {})", c + 1));
    eprintln!(
        "{}{cell}: {} -> {class}",
        index.rows()[id].path,
        old.as_deref().unwrap_or("-")
    );
    index.save(dir)?;
    Ok(OK)
}

/// The live rows of the image at `path` (none: not indexed), only its white cell `cell`
/// (1-based) when given; a cell the field does not hold is an error naming how many it does.
fn cells_of(
    index: &index::CellIndex,
    path: &std::path::Path,
    cell: Option<usize>,
) -> Result<Vec<usize>> {
    let ids = index.find_path(path);
    let Some(n) = cell.filter(|_| !ids.is_empty()) else {
        return Ok(ids);
    };
    let one: Vec<usize> = ids
        .iter()
        .copied()
        .filter(|&i| index.rows()[i].cell.unwrap_or(0) as usize + 1 == n)
        .collect();
    if one.is_empty() {
        let live: Vec<String> = ids
            .iter()
            .map(|&i| (index.rows()[i].cell.unwrap_or(0) + 1).to_string())
            .collect();
        bail!(
            "{}: no live cell {n} (removed, or never there); its indexed cells are {}: nothing \
             was changed",
            path.display(),
            live.join(", ")
        );
    }
    Ok(one)
}

/// Run `index compact`.
pub fn compact(args: CompactArgs) -> Result<u8> {
    let dir = &args.common.dir();
    let _lock = index::ops::lock(dir)?;
    let index = index::CellIndex::open(dir)?;
    let removed = index.removed();
    let t = std::time::Instant::now();
    let compacted = index.compact()?;
    compacted.save(dir)?;
    eprintln!(
        "compacted: dropped {removed} removed cells, {} remain ({:.1}s)",
        compacted.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(OK)
}

/// Run `index classify`.
pub fn classify(args: ClassifyArgs) -> Result<u8> {
    let dir = &args.out.common.dir();
    let (file, k, write, report) = (
        &args.labels,
        args.k,
        args.out.write.as_deref(),
        &args.out.report,
    );
    own_field(write)?;
    let _lock = write.map(|_| index::ops::lock(dir)).transpose()?;
    let mut index = index::CellIndex::open(dir)?;
    let labels = index::classify::labels(&index, file, None)?;
    let c = index::classify::classify(&index, &labels, k)?;
    if let Some(field) = write {
        index::classify::write(&mut index, &c, field);
        index.save(dir)?;
    }
    let summary = summary(&c);
    eprint!("{summary}");
    if let Some(by) = &args.out.by {
        let class: std::collections::HashMap<usize, &str> = c
            .predictions
            .iter()
            .map(|p| (p.id, p.class.as_str()))
            .collect();
        let t = index::clusters::counts_by(&index, by, |id| class.get(&id).map(|c| c.to_string()));
        eprint!("{}", by_table(by, &t));
    }
    if let Some(field) = write {
        eprintln!("written: field `{field}` and `{field}_confidence` of every live cell");
    }
    for m in &labels.unmatched {
        eprintln!("not indexed: {}", shown(m));
    }
    if report.json {
        outcome::emit_json(report.out.as_deref(), &c)?;
    } else {
        let mut text = String::from("path\tclass\tconfidence\tlabelled\n");
        for p in &c.predictions {
            text += &format!(
                "{}\t{}\t{:.3}\t{}\n",
                shown(&p.path),
                shown(&p.class),
                p.confidence,
                p.label.is_some()
            );
        }
        outcome::emit_text(report.out.as_deref(), &text)?;
    }
    Ok(if labels.unmatched.is_empty() {
        OK
    } else {
        PARTIAL
    })
}

/// What a lab reads first: the differential count, how well the labels agree, the unsure.
fn summary(c: &index::classify::Classification) -> String {
    let live = c.predictions.len();
    let mut s = format!("{live} cells, {} labelled; per class:\n", c.labelled);
    for (class, n) in &c.counts {
        s += &format!(
            "  {:<16} {n:>8}  {:>5.1}%\n",
            shown(class),
            100.0 * *n as f64 / live.max(1) as f64
        );
    }
    match c.label_agreement {
        Some(a) => {
            s += &format!(
                "labelled cells voted for their own label by the other originals' labels: {:.1}%\n",
                100.0 * a
            )
        }
        None => s += "labelled cells: too few originals to check them against each other\n",
    }
    s += &format!(
        "{} predictions under {:.0}% of the vote (uncertain)\n",
        c.low_confidence,
        100.0 * index::classify::LOW_CONFIDENCE
    );
    s
}

/// A field a command may write: not one the index computes or the labels live in.
fn own_field(write: Option<&str>) -> Result<()> {
    if let Some(f) = write
        && matches!(
            f,
            "class" | "group" | "path" | "sha256" | "removed" | "window" | ""
        )
    {
        bail!("--write {f}: choose a field of its own (the labels stay the cells' `class`)");
    }
    Ok(())
}

/// Counts per value of `by`, one line each: `slide S1: A 12 (40.0%) · B 18 (60.0%)`.
fn by_table(
    by: &str,
    t: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
) -> String {
    let mut s = format!("per {}:\n", shown(by));
    for (key, counts) in t {
        let total: usize = counts.values().sum();
        let parts: Vec<String> = counts
            .iter()
            .map(|(c, n)| {
                format!(
                    "{} {n} ({:.1}%)",
                    shown(c),
                    100.0 * *n as f64 / total.max(1) as f64
                )
            })
            .collect();
        s += &format!("  {}: {total} cells: {}\n", shown(key), parts.join(" · "));
    }
    s
}

/// Run `index clusters`.
pub fn clusters(args: ClustersArgs) -> Result<u8> {
    let dir = &args.out.common.dir();
    let write = args.out.write.as_deref();
    own_field(write)?;
    let _lock = write.map(|_| index::ops::lock(dir)).transpose()?;
    let mut index = index::CellIndex::open(dir)?;
    let c = index::clusters::clusters(&index, args.k, args.seed)?;
    let live = c.assignment.len();
    let mut s = format!(
        "{live} cells in {} clusters (k-means on the embeddings):\n",
        c.k
    );
    for (i, n) in c.sizes.iter().enumerate() {
        let classes: Vec<String> = c
            .classes
            .get(&i)
            .map(|m| {
                let mut v: Vec<(&String, &usize)> = m.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1));
                v.iter().map(|(k, n)| format!("{} {n}", shown(k))).collect()
            })
            .unwrap_or_default();
        s += &format!("  c{i:<3} {n:>8}  {}\n", classes.join(" · "));
    }
    if let (Some(nmi), Some(ari)) = (c.nmi, c.ari) {
        s += &format!("against the cells' classes: NMI {nmi:.3}, ARI {ari:.3}\n");
    }
    if let Some(by) = &args.out.by {
        let of: std::collections::HashMap<usize, usize> = c.assignment.iter().copied().collect();
        let t = index::clusters::counts_by(&index, by, |id| of.get(&id).map(|c| format!("c{c}")));
        s += &by_table(by, &t);
    }
    eprint!("{s}");
    if let Some(field) = write {
        index::clusters::write(&mut index, &c, field);
        index.save(dir)?;
        eprintln!("written: field `{field}` of every live cell");
    }
    if args.out.report.json {
        outcome::emit_json(args.out.report.out.as_deref(), &c)?;
    } else {
        let mut text = String::from("path\tcluster\n");
        for &(id, cluster) in &c.assignment {
            text += &format!("{}\tc{cluster}\n", shown(&index.rows()[id].path));
        }
        outcome::emit_text(args.out.report.out.as_deref(), &text)?;
    }
    Ok(OK)
}
