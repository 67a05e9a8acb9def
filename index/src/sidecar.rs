//! Metadata sidecar: the fields a lab keeps about each cell (slide, patient, stain, label),
//! in a CSV file with a header (one column named `path`) or JSON lines (`{"path": ..., ...}`),
//! keyed by image path: absolute, or relative to the embedded image folder. Every other column
//! becomes a field of the row, shown in results and usable in `--where`; a `class` column
//! replaces the folder-name class, a `group` column the source group. Empty cells are skipped.

use crate::{Error, Result, Row};
use cellspace_core::dataset::{decode_path, encode_path};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Fields per image path, as read from a sidecar file.
#[derive(Debug, Clone, Default)]
pub struct Sidecar {
    pub file: PathBuf,
    entries: Vec<(String, BTreeMap<String, String>)>,
}

/// The rows one sidecar entry names, with the entry's fields.
pub type Matched<'a> = (Vec<usize>, &'a BTreeMap<String, String>);

/// How a sidecar met the rows it was applied to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows that got fields.
    pub rows: usize,
    /// Sidecar paths that named no row.
    pub unmatched: Vec<String>,
}

fn bad(file: &Path, line: usize, reason: impl std::fmt::Display) -> Error {
    Error::Core(cellspace_core::Error::invalid(
        file,
        format!("line {line}: {reason}"),
    ))
}

impl Sidecar {
    /// Read a `.csv` file, or JSON lines (`.jsonl`, `.json`, or any file whose first
    /// non-blank character is `{`).
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|e| cellspace_core::Error::io(file, e))?;
        let is_csv = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
            || !text.trim_start().starts_with('{');
        let entries = if is_csv {
            parse_csv(file, &text)?
        } else {
            parse_jsonl(file, &text)?
        };
        Ok(Self {
            file: file.to_path_buf(),
            entries,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Give `rows` their fields. A sidecar path matches a row by its absolute path, or by its
    /// path relative to `root` (the embedded image folder).
    pub fn apply(&self, rows: &mut [Row], root: Option<&Path>) -> Applied {
        let (matched, unmatched) = self.resolve(rows, root);
        let mut touched = std::collections::HashSet::new();
        for (ids, fields) in matched {
            for i in ids {
                touched.insert(i);
                let r = &mut rows[i];
                for (k, v) in fields {
                    match k.as_str() {
                        "class" => r.class = Some(v.clone()),
                        "group" => r.group = Some(v.clone()),
                        _ => {
                            r.meta.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        Applied {
            rows: touched.len(),
            unmatched,
        }
    }

    /// The rows each entry names (as [`apply`](Self::apply) matches them) with the entry's
    /// fields, and the paths that name no row.
    pub fn resolve(&self, rows: &[Row], root: Option<&Path>) -> (Vec<Matched<'_>>, Vec<String>) {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_key.entry(r.path.clone()).or_default().push(i);
            if let Some(root) = root
                && let Ok(rel) = decode_path(&r.path).strip_prefix(root)
            {
                by_key.entry(encode_path(rel)).or_default().push(i);
            }
        }
        let (mut matched, mut unmatched) = (Vec::new(), Vec::new());
        for (path, fields) in &self.entries {
            // a sidecar names files as they are called (`50%.png`); rows keep them encoded
            // (`50%25.png`, see `encode_path`), which a sidecar copied from our output uses
            let literal = Path::new(path);
            let ids = by_key
                .get(&encode_path(literal))
                .or_else(|| by_key.get(path))
                .or_else(|| {
                    let abs = std::fs::canonicalize(literal)
                        .or_else(|_| std::fs::canonicalize(decode_path(path)))
                        .ok()?;
                    by_key.get(&encode_path(&abs))
                });
            match ids {
                Some(ids) => matched.push((ids.clone(), fields)),
                None => unmatched.push(path.clone()),
            }
        }
        (matched, unmatched)
    }
}

/// Fields that are not data: the key, and what the index computes itself.
fn check_field(file: &Path, line: usize, key: &str) -> Result<()> {
    if matches!(key, "sha256" | "removed" | "window") || key.trim().is_empty() {
        return Err(bad(
            file,
            line,
            format!("`{key}` cannot be set from a sidecar"),
        ));
    }
    Ok(())
}

fn parse_jsonl(file: &Path, text: &str) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| bad(file, i + 1, e))?;
        let Some(path) = obj.get("path").and_then(|p| p.as_str()) else {
            return Err(bad(file, i + 1, "no \"path\" string"));
        };
        let mut fields = BTreeMap::new();
        for (k, v) in &obj {
            let v = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) if s.is_empty() => continue,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if k != "path" {
                check_field(file, i + 1, k)?;
                fields.insert(k.clone(), v);
            }
        }
        out.push((path.to_string(), fields));
    }
    Ok(out)
}

fn parse_csv(file: &Path, text: &str) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let records = csv_records(file, text)?;
    let Some((header_line, header)) = records.first() else {
        return Ok(Vec::new());
    };
    let Some(path_col) = header.iter().position(|h| h == "path") else {
        return Err(bad(file, *header_line, "the header has no `path` column"));
    };
    for h in header.iter().filter(|h| h.as_str() != "path") {
        check_field(file, *header_line, h)?;
    }
    let mut out = Vec::new();
    for (line, rec) in &records[1..] {
        if rec.len() == 1 && rec[0].is_empty() {
            continue;
        }
        if rec.len() != header.len() {
            return Err(bad(
                file,
                *line,
                format!("{} fields, the header has {}", rec.len(), header.len()),
            ));
        }
        let fields = header
            .iter()
            .zip(rec)
            .enumerate()
            .filter(|(i, (_, v))| *i != path_col && !v.is_empty())
            .map(|(_, (h, v))| (h.clone(), v.clone()))
            .collect();
        out.push((rec[path_col].clone(), fields));
    }
    Ok(out)
}

/// RFC 4180 records with the line each starts on: commas, double quotes (`""` inside quotes),
/// quoted line breaks, LF or CRLF.
fn csv_records(file: &Path, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let (mut rec, mut field) = (Vec::new(), String::new());
    let (mut line, mut start) = (1, 1);
    let mut quoted = false;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => rec.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                rec.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut rec)));
                line += 1;
                start = line;
            }
            (_, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
        }
    }
    if quoted {
        return Err(bad(file, start, "a quoted field is not closed"));
    }
    if !field.is_empty() || !rec.is_empty() {
        rec.push(field);
        records.push((start, rec));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_and_crlf() {
        let recs = csv_records(
            Path::new("m.csv"),
            "path,slide,note\r\na.png,S1,\"x, \"\"y\"\"\nz\"\r\nb.png,S2,\n",
        )
        .unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].1, vec!["a.png", "S1", "x, \"y\"\nz"]);
        assert_eq!(
            recs[2],
            (4, vec!["b.png".into(), "S2".into(), String::new()])
        );
        assert!(csv_records(Path::new("m.csv"), "path\n\"open").is_err());
    }

    /// Case 21 of the hardening round: a sidecar could not name files whose names hold `%`.
    #[test]
    fn case_21_a_sidecar_names_files_with_percent_signs() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("meta.csv");
        std::fs::write(&csv, "path,slide\nA/50%.png,S1\n/abs/100%25 b.png,S2\n").unwrap();
        let side = Sidecar::load(&csv).unwrap();
        let row = |p: &str| Row {
            path: encode_path(Path::new(p)),
            ..Default::default()
        };
        let mut rows = vec![row("/data/A/50%.png"), row("/abs/100%25 b.png")];
        let a = side.apply(&mut rows, Some(Path::new("/data")));
        assert_eq!(a.unmatched, Vec::<String>::new());
        assert_eq!(a.rows, 2);
        assert_eq!(rows[0].meta["slide"], "S1");
        assert_eq!(rows[1].meta["slide"], "S2");
    }

    #[test]
    fn apply_matches_relative_and_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("meta.csv");
        std::fs::write(
            &csv,
            "path,slide,class\nA/1.png,S12,MONOCYTE\n/abs/B/2.png,S13,\nnowhere.png,S9,\n",
        )
        .unwrap();
        let side = Sidecar::load(&csv).unwrap();
        let mut rows = vec![
            Row {
                path: "/data/A/1.png".into(),
                class: Some("A".into()),
                ..Default::default()
            },
            Row {
                path: "/abs/B/2.png".into(),
                class: Some("B".into()),
                ..Default::default()
            },
        ];
        let a = side.apply(&mut rows, Some(Path::new("/data")));
        assert_eq!(a.rows, 2);
        assert_eq!(a.unmatched, vec!["nowhere.png".to_string()]);
        assert_eq!(rows[0].class.as_deref(), Some("MONOCYTE"));
        assert_eq!(rows[0].meta["slide"], "S12");
        assert_eq!(
            rows[1].class.as_deref(),
            Some("B"),
            "empty class keeps the folder's"
        );
        assert_eq!(rows[1].meta["slide"], "S13");
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "path,slide\nA/1.png,S1,extra\n").unwrap();
        let e = Sidecar::load(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.csv") && e.contains("line 2"), "{e}");
        let jl = dir.path().join("meta.jsonl");
        std::fs::write(&jl, "{\"path\":\"A/1.png\",\"slide\":\"S7\",\"age\":61}\n").unwrap();
        let side = Sidecar::load(&jl).unwrap();
        side.apply(&mut rows, Some(Path::new("/data")));
        assert_eq!(rows[0].meta["age"], "61");
        std::fs::write(&jl, "{\"file\":\"A/1.png\"}\n").unwrap();
        assert!(Sidecar::load(&jl).unwrap_err().to_string().contains("path"));
    }
}
