//! `index remove`, `relabel`, `classify` and `compact`: curating the atlas from the command
//! line. Each that edits locks the index, edits it and saves it atomically ([`index::edit`]).

use anyhow::{Result, bail};
use cellspace_core::cli::{Report, shown};
use cellspace_core::outcome::{self, OK, PARTIAL};
use std::path::{Path, PathBuf};

/// Tombstone the cells at `paths` and those matching `conditions`; 2 when a path is not indexed.
pub fn remove(dir: &Path, paths: &[PathBuf], conditions: &[index::Condition]) -> Result<u8> {
    if paths.is_empty() && conditions.is_empty() {
        bail!("name the cells to remove: image paths, or --where FIELD=VALUE");
    }
    let _lock = index::ops::lock(dir)?;
    let mut index = index::CellIndex::open(dir)?;
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        let found = index.find_path(p);
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

/// Set the class of the cell at `path`.
pub fn relabel(dir: &Path, path: &Path, class: &str) -> Result<u8> {
    let _lock = index::ops::lock(dir)?;
    let mut index = index::CellIndex::open(dir)?;
    let ids = index.find_path(path);
    if ids.is_empty() {
        bail!("{}: not an indexed cell", path.display());
    }
    for &id in &ids {
        let old = index.relabel(id, class)?;
        eprintln!(
            "{}: {} -> {class}",
            index.rows()[id].path,
            old.as_deref().unwrap_or("-")
        );
    }
    index.save(dir)?;
    Ok(OK)
}

/// Rebuild the graph without the removed cells.
pub fn compact(dir: &Path) -> Result<u8> {
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

/// Classify every cell from the labels in `file`; with `write`, store the classes in the rows.
pub fn classify(
    dir: &Path,
    file: &Path,
    k: usize,
    write: Option<&str>,
    report: &Report,
) -> Result<u8> {
    if let Some(f) = write
        && matches!(
            f,
            "class" | "group" | "path" | "sha256" | "removed" | "window" | ""
        )
    {
        bail!("--write {f}: choose a field of its own (the labels stay the cells' `class`)");
    }
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
