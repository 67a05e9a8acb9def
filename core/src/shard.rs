//! Splitting a folder's images among N workers, and putting their embeddings folders back
//! together. Image `rel` belongs to shard `hash(rel) mod N` (FNV-1a then a splitmix64 finaliser
//! of its path relative to the folder), so the split needs no listing to agree on, and adding
//! images never moves one already embedded to another shard.

use crate::embeddings::{EmbedState, Embeddings, Failure, ManifestRow};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Shard `index` of `count` (0-based: `0/4` … `3/4`); read back from a file only when
/// `index < count` (an `embed.json` edited by hand or damaged is an error, not a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// A shard as written, before it is checked.
#[derive(Deserialize)]
struct ShardFields {
    index: usize,
    count: usize,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;
    fn try_from(f: ShardFields) -> Result<Self, String> {
        if f.count == 0 || f.index >= f.count {
            return Err(format!(
                "shard {}/{}: expected I/N with 0 <= I < N",
                f.index, f.count
            ));
        }
        Ok(Self {
            index: f.index,
            count: f.count,
        })
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        Self::try_from(ShardFields { index, count }).map_err(|_| bad())
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the image at `rel` (relative to the folder, `/`-separated) is in this shard.
    pub fn contains(&self, rel: &str) -> bool {
        let h = crate::hash::stable_hash(rel.as_bytes(), 0);
        (h % self.count as u64) as usize == self.index
    }
}

/// Every row of complete shard folders `dirs` (one per shard of one split, of one model), in
/// the order a single `runtime embed` writes them (by path), with their failures.
pub struct Merged {
    pub rows: Vec<ManifestRow>,
    pub data: Vec<f32>,
    pub failures: Vec<Failure>,
    pub state: EmbedState,
}

fn refuse(dir: &Path, reason: impl Into<String>) -> Error {
    Error::invalid(dir, reason)
}

/// Check and merge shard folders. Refused, each with the folder named: a folder that is not a
/// complete, intact embeddings folder (its own checks: checksums, unit rows); one made by
/// another model or preprocessing, or of another folder; one not made as a shard, or of another
/// split; the same shard twice; a missing shard; an image in two shards.
pub fn merge(dirs: &[PathBuf]) -> Result<Merged> {
    let Some(first) = dirs.first() else {
        return Err(Error::Other("no shard folders given".into()));
    };
    let loaded = dirs
        .iter()
        .map(|d| load_shard(d).map(|(s, e)| (d, s, e)))
        .collect::<Result<Vec<_>>>()?;
    let (_, s0, e0) = &loaded[0];
    for (d, s, e) in &loaded[1..] {
        if let Some(why) = unlike_first(e, s, e0, s0, first) {
            return Err(refuse(d, why));
        }
    }
    check_every_shard_once(&loaded, s0.count)?;
    let dim = e0.dim;
    let mut all: Vec<(ManifestRow, &[f32], &Path)> = Vec::new();
    let mut failures = Vec::new();
    for (d, s, e) in &loaded {
        for (i, r) in e.rows.iter().enumerate() {
            if !s.contains(&r.path) {
                return Err(refuse(
                    d,
                    format!("{} is not in shard {s}: a folder of another split", r.path),
                ));
            }
            all.push((r.clone(), e.row(i), d.as_path()));
        }
        failures.extend(read_failures(d)?);
    }
    all.sort_by(|a, b| (&a.0.path, a.0.cell).cmp(&(&b.0.path, b.0.cell)));
    if let Some(w) = all
        .windows(2)
        .find(|w| w[0].0.path == w[1].0.path && (w[0].2 != w[1].2 || w[0].0.cell == w[1].0.cell))
    {
        return Err(refuse(
            w[1].2,
            format!(
                "{} is also in {}: shards overlap",
                w[1].0.path,
                w[0].2.display()
            ),
        ));
    }
    failures.sort_by(|a, b| a.path.cmp(&b.path));
    let mut data = Vec::with_capacity(all.len() * dim);
    let mut rows = Vec::with_capacity(all.len());
    for (r, v, _) in all {
        data.extend_from_slice(v);
        rows.push(r);
    }
    let state = EmbedState {
        rows: rows.len(),
        shard: None,
        complete: true,
        manifest_sha256: String::new(),
        embeddings_sha256: String::new(),
        ..e0.state.clone()
    };
    Ok(Merged {
        rows,
        data,
        failures,
        state,
    })
}

/// A finished shard folder and its shard, or why it cannot be merged.
fn load_shard(d: &Path) -> Result<(Shard, Embeddings)> {
    let e = Embeddings::load(d)?;
    if !e.state.complete {
        return Err(refuse(
            d,
            format!(
                "an incomplete shard ({} rows so far): run its `runtime embed --shard` again to finish it",
                e.state.rows
            ),
        ));
    }
    let Some(shard) = e.state.shard else {
        return Err(refuse(d, "not a shard (made without --shard)"));
    };
    Ok((shard, e))
}

/// Each of the `count` shards given exactly once.
fn check_every_shard_once(loaded: &[(&PathBuf, Shard, Embeddings)], count: usize) -> Result<()> {
    let mut seen = vec![None::<&Path>; count];
    for (d, s, _) in loaded {
        if let Some(other) = seen[s.index] {
            return Err(refuse(
                d,
                format!("shard {s} given twice (also {})", other.display()),
            ));
        }
        seen[s.index] = Some(d.as_path());
    }
    let missing: Vec<String> = (0..count)
        .filter(|&i| seen[i].is_none())
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Other(format!(
            "missing shards {}: embed them (`runtime embed DIR --shard I/N`) and merge again",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// The failures a shard folder recorded (none without the file).
fn read_failures(d: &Path) -> Result<Vec<Failure>> {
    let fp = d.join(crate::embeddings::FAILURES_FILE);
    let Ok(text) = std::fs::read_to_string(&fp) else {
        return Ok(vec![]);
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| serde_json::from_str::<Failure>(line).map_err(|e| refuse(&fp, e.to_string())))
        .collect()
}

/// One embeddings folder, or the shard folders of one split merged ([`merge`]).
pub fn load(dirs: &[PathBuf]) -> Result<Embeddings> {
    match dirs {
        [one] => Embeddings::load(one),
        _ => {
            let m = merge(dirs)?;
            Ok(Embeddings {
                dim: m.state.dim,
                rows: m.rows,
                data: m.data,
                state: m.state,
            })
        }
    }
}

/// Why shard `s` (folder contents `e`) cannot be merged with the first one (`e0`, `s0`, in
/// folder `first`), or None when they are of one run: the same model and preprocessing, folder,
/// window rule, choice of cells, red-cell scale and split.
fn unlike_first(
    e: &Embeddings,
    s: &Shard,
    e0: &Embeddings,
    s0: &Shard,
    first: &Path,
) -> Option<String> {
    let (a, b, first) = (&e.state, &e0.state, first.display());
    if a.model_sha256 != b.model_sha256
        || a.preprocess_sha256 != b.preprocess_sha256
        || e.dim != e0.dim
    {
        return Some(format!(
            "embedded with model {} (or other preprocessing), but {first} with model {}: embed every shard with one model",
            a.model, b.model
        ));
    }
    if a.root != b.root {
        return Some(format!(
            "a shard of {}, but {first} is a shard of {}",
            a.root, b.root
        ));
    }
    if a.window_rule != b.window_rule {
        return Some(format!(
            "its windows were placed by another version of the window rule ({}) than {first}'s ({}): embed every shard with one version",
            a.window_rule, b.window_rule
        ));
    }
    if a.cells != b.cells {
        return Some(format!(
            "embedded with --cells {:?}, but {first} with --cells {:?}: embed every shard alike",
            a.cells, b.cells
        ));
    }
    if !a.scale.compatible(&b.scale) {
        let scale = |x: &EmbedState| {
            (
                x.scale.calibration.map(|c| c.rbc_px),
                x.scale.pixel_size_rbc_px,
            )
        };
        return Some(format!(
            "its windows were sized by another red-cell scale {:?} (calibration, pixel size) than {first}'s {:?}: embed every shard of a folder with the same --pixel-size",
            scale(a),
            scale(b)
        ));
    }
    (s.count != s0.count).then(|| format!("shard {s} of another split than {first} ({s0})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard out of its range in a file (`embed.json` edited or damaged) made `merge` index
    /// past its table and panic; it is now a read error.
    #[test]
    fn a_shard_out_of_range_does_not_read() {
        for bad in [r#"{"index":4,"count":4}"#, r#"{"index":0,"count":0}"#] {
            let err = serde_json::from_str::<Shard>(bad).unwrap_err().to_string();
            assert!(err.contains("0 <= I < N"), "{bad}: {err}");
        }
        let ok: Shard = serde_json::from_str(r#"{"index":3,"count":4}"#).unwrap();
        assert_eq!(ok, "3/4".parse().unwrap());
        assert!("4/4".parse::<Shard>().is_err() && "0/0".parse::<Shard>().is_err());
    }

    #[test]
    fn shards_split_every_path_once_and_stay_put() {
        let paths: Vec<String> = (0..1000)
            .map(|i| format!("C{}/img_{i}.jpeg", i % 4))
            .collect();
        let n = 4;
        let mut sizes = vec![0; n];
        for p in &paths {
            let owners: Vec<usize> = (0..n)
                .filter(|&i| Shard { index: i, count: n }.contains(p))
                .collect();
            assert_eq!(owners.len(), 1, "{p}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (200..300).contains(&s)), "{sizes:?}");
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/4", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
