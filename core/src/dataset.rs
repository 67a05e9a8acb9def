//! Finding images in a folder tree: the class is the parent folder's name (used only to
//! measure), and the source group (which original cell an augmented copy came from) comes from
//! `source_groups.tsv` so that splits and metrics never reward near-duplicates.

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// File extensions taken as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff"];
/// The groups file looked for in the data folder and its parent.
pub const GROUPS_FILE: &str = "source_groups.tsv";

/// One image found under a root folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    pub path: PathBuf,
    /// Path relative to the root, `/`-separated.
    pub rel: String,
    /// Parent folder name (None for images directly in the root).
    pub class: Option<String>,
}

/// A path under the root that could not even be listed (permissions, symlink loop).
#[derive(Debug, Clone)]
pub struct ListingProblem {
    pub path: PathBuf,
    pub reason: String,
}

pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// All images below `root`, sorted by relative path, plus what could not be listed.
pub fn list_images(root: &Path) -> Result<(Vec<ImageEntry>, Vec<ListingProblem>)> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(root, "not a folder"));
    }
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for item in walkdir::WalkDir::new(root).follow_links(true) {
        match item {
            Ok(e) if e.file_type().is_file() && is_image_path(e.path()) => {
                let rel_path = e.path().strip_prefix(root).unwrap_or(e.path());
                let rel = encode_path(rel_path);
                let class = rel_path
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned());
                entries.push(ImageEntry {
                    path: e.path().to_path_buf(),
                    rel,
                    class,
                });
            }
            // a pipe, device or socket named like an image is reported, never skipped silently
            Ok(e) if !e.file_type().is_dir() && is_image_path(e.path()) => {
                problems.push(ListingProblem {
                    path: e.path().to_path_buf(),
                    reason: format!("not a regular file ({})", special_kind(&e.file_type())),
                });
            }
            Ok(_) => {}
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                let reason = if err.loop_ancestor().is_some() {
                    "symlink loop".to_string()
                } else {
                    err.io_error()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| err.to_string())
                };
                problems.push(ListingProblem { path, reason });
            }
        }
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((entries, problems))
}

/// What a file that is neither a regular file nor a folder is, in words.
fn special_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a named pipe"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// A path as text, losslessly: `/`-separated components; a byte that is not part of valid
/// UTF-8, and `%` itself, are written `%XX`. Two different file names never give the same
/// text (a lossy conversion maps every invalid byte to U+FFFD, so `a\xff` and `a\xfe`
/// collided), and [`decode_path`] gives the path back.
pub fn encode_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for (i, c) in path.components().enumerate() {
        if i > 0 && !out.ends_with('/') {
            out.push('/');
        }
        let bytes = c.as_os_str().as_bytes();
        let mut rest = bytes;
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(&text.replace('%', "%25"));
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    let good = std::str::from_utf8(good).expect("valid prefix");
                    out.push_str(&good.replace('%', "%25"));
                    let n = e.error_len().unwrap_or(bad.len());
                    for b in &bad[..n] {
                        out.push_str(&format!("%{b:02X}"));
                    }
                    rest = &bad[n..];
                }
            }
        }
    }
    out
}

/// The path [`encode_path`] wrote.
pub fn decode_path(text: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| (b[j] as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Key used to match an image with `source_groups.tsv`: its last two path components
/// (`CLASS/file.jpeg`), so the data folder may be `blood-cells/` or `blood-cells/TRAIN/`.
fn group_key(rel: &str) -> String {
    let parts: Vec<&str> = rel.rsplitn(3, '/').collect();
    match parts.as_slice() {
        [file, class, ..] => format!("{class}/{file}"),
        [file] => file.to_string(),
        _ => rel.to_string(),
    }
}

/// Estimated original cell of each image (see the data README).
#[derive(Debug, Clone, Default)]
pub struct SourceGroups {
    by_key: HashMap<String, String>,
}

impl SourceGroups {
    /// Look for `source_groups.tsv` in `data_dir` and its parent; None when there is none.
    pub fn find(data_dir: &Path) -> Result<Option<Self>> {
        for dir in [Some(data_dir), data_dir.parent()].into_iter().flatten() {
            let f = dir.join(GROUPS_FILE);
            if f.is_file() {
                return Self::load(&f).map(Some);
            }
        }
        Ok(None)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut by_key = HashMap::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let Some((p, g)) = line.split_once('\t') else {
                return Err(Error::invalid(
                    path,
                    format!("line {}: expected path<TAB>group", i + 1),
                ));
            };
            by_key.insert(group_key(p), g.trim().to_string());
        }
        Ok(Self { by_key })
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The group of an image given its path relative to the data folder.
    pub fn group_of(&self, rel: &str) -> Option<&str> {
        self.by_key.get(&group_key(rel)).map(String::as_str)
    }
}

/// Group label of every entry: the source group where known, else the image itself.
pub fn groups_for(entries: &[ImageEntry], groups: Option<&SourceGroups>) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            groups
                .and_then(|g| g.group_of(&e.rel))
                .map(str::to_string)
                .unwrap_or_else(|| format!("img:{}", e.rel))
        })
        .collect()
}

/// Fold (0..k) of every item for k-fold cross-validation over groups: the distinct groups,
/// shuffled by their salted hash, are dealt to the folds in turn, so every fold holds the
/// same number of originals (±1) and a group is never split.
pub fn group_folds(groups: &[String], k: usize, seed: u64) -> Vec<usize> {
    let mut distinct: Vec<&str> = groups.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.sort_by_key(|g| (crate::hash::stable_hash(g.as_bytes(), seed), *g));
    let fold: HashMap<&str, usize> = distinct
        .iter()
        .enumerate()
        .map(|(i, g)| (*g, i % k.max(1)))
        .collect();
    groups.iter().map(|g| fold[g.as_str()]).collect()
}

/// Deterministic group-aware split: a group is in validation when its hash (salted by `seed`)
/// falls under `fraction`. Returns (train indices, validation indices).
pub fn split_by_group(groups: &[String], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let h = crate::hash::stable_hash(g.as_bytes(), seed);
        if ((h >> 11) as f64 / (1u64 << 53) as f64) < fraction {
            val.push(i);
        } else {
            train.push(i);
        }
    }
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_split_keeps_groups_whole() {
        let groups: Vec<String> = (0..1000).map(|i| format!("g{}", i % 97)).collect();
        let (tr, va) = split_by_group(&groups, 0.2, 7);
        assert_eq!(tr.len() + va.len(), 1000);
        assert!(!va.is_empty() && !tr.is_empty());
        for &v in &va {
            assert!(tr.iter().all(|&t| groups[t] != groups[v]));
        }
        // consecutive group names (the data's classes are runs of them) spread over both sides
        let first_half = va.iter().filter(|&&i| groups[i].as_str() < "g48").count();
        assert!(
            first_half > va.len() / 5 && first_half < va.len() * 4 / 5,
            "{first_half} of {}",
            va.len()
        );
    }

    #[test]
    fn group_folds_are_balanced_and_keep_groups_whole() {
        let groups: Vec<String> = (0..1000).map(|i| format!("g{}", i % 53)).collect();
        let folds = group_folds(&groups, 5, 3);
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if g == h {
                    assert_eq!(folds[i], folds[j]);
                }
            }
        }
        let mut per_fold = [
            std::collections::HashSet::new(),
            Default::default(),
            Default::default(),
            Default::default(),
            Default::default(),
        ];
        for (g, &f) in groups.iter().zip(&folds) {
            per_fold[f].insert(g.clone());
        }
        let sizes: Vec<usize> = per_fold.iter().map(|s| s.len()).collect();
        assert!(sizes.iter().all(|&n| n == 10 || n == 11), "{sizes:?}");
        assert_ne!(folds, group_folds(&groups, 5, 4), "the seed reshuffles");
    }

    #[test]
    fn non_utf8_names_are_kept_apart_and_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let a = Path::new(std::ffi::OsStr::from_bytes(b"cells/a\xff.png"));
        let b = Path::new(std::ffi::OsStr::from_bytes(b"cells/a\xfe.png"));
        let (ea, eb) = (encode_path(a), encode_path(b));
        assert_ne!(ea, eb);
        assert_eq!(ea, "cells/a%FF.png");
        assert_eq!(decode_path(&ea), a);
        assert_eq!(decode_path(&eb), b);
        // a literal % is escaped too, so it never reads as an escape
        let pct = Path::new("/data/50%FF.png");
        assert_eq!(encode_path(pct), "/data/50%25FF.png");
        assert_eq!(decode_path(&encode_path(pct)), pct);
        assert_eq!(
            encode_path(Path::new("EOSINOPHIL/_0_1.jpeg")),
            "EOSINOPHIL/_0_1.jpeg"
        );
    }

    #[test]
    fn group_key_matches_both_roots() {
        assert_eq!(
            group_key("TRAIN/EOSINOPHIL/_0_1.jpeg"),
            "EOSINOPHIL/_0_1.jpeg"
        );
        assert_eq!(group_key("EOSINOPHIL/_0_1.jpeg"), "EOSINOPHIL/_0_1.jpeg");
    }
}
