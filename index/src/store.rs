//! The vectors of an index, as the graph reads them.
//!
//! `f32` keeps every row in memory, exactly. `int8` (`index build --store int8`) keeps one
//! signed byte per dimension in memory (a scale per dimension, from the largest magnitude the
//! build saw) and the exact f32 rows only on disk, in the index's `embeddings.npy`: the graph
//! walk scores the codes, and the best candidates are re-ranked with their exact rows, read
//! back by offset. Vectors take a quarter of the memory; the answers are exact similarities.

use crate::{Error, Result};
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How an index keeps its vectors in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Every row in memory as f32.
    #[default]
    F32,
    /// int8 codes in memory, exact rows on disk for re-ranking.
    Int8,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "int8" => Ok(Self::Int8),
            _ => Err(format!("`{s}`: the vector store is f32 or int8")),
        }
    }
}

/// Exact rows on disk: a float32 `.npy` file and where its data starts. The file is only
/// trusted as it was when the index was opened (and verified): each row's hash is kept, and
/// a row read back that no longer matches it is an error, never a similarity, so a file
/// replaced, zeroed or cut short under a running server cannot change an answer.
#[derive(Debug)]
pub(crate) struct DiskRows {
    file: File,
    path: std::path::PathBuf,
    data_offset: u64,
    rows: usize,
    /// FNV-1a of each row's bytes at open.
    hashes: Vec<u64>,
    /// Size and modification time at open.
    len: u64,
    modified: Option<std::time::SystemTime>,
}

/// A row's fingerprint: FNV-1a over 8-byte words (a word at a time: re-ranking checks every
/// row it reads). Not a defence against a forger, who could also rewrite the index's manifest;
/// against a file changed by mistake under a running server.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl DiskRows {
    pub fn open(path: &Path, rows: usize, dim: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| cellspace_core::Error::io(path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| cellspace_core::Error::io(path, e))?;
        let len = meta.len();
        let data = (rows * dim * 4) as u64;
        let data_offset = len.checked_sub(data).ok_or_else(|| Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("shorter than {rows} rows of {dim} floats"),
        })?;
        let mut hashes = Vec::with_capacity(rows);
        let mut buf = vec![0u8; dim * 4];
        for i in 0..rows {
            file.read_exact_at(&mut buf, data_offset + (i * dim * 4) as u64)
                .map_err(|e| cellspace_core::Error::io(path, e))?;
            hashes.push(fnv1a(&buf));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            data_offset,
            rows,
            hashes,
            len,
            modified: meta.modified().ok(),
        })
    }

    fn changed(&self, what: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            reason: format!(
                "{what} since the index was opened: the file was changed under the running program; restore or rebuild the index, then restart"
            ),
        }
    }

    /// Row `i`'s bytes, as they were at open.
    fn read(&self, i: usize, dim: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; dim * 4];
        self.file
            .read_exact_at(&mut buf, self.data_offset + (i * dim * 4) as u64)
            .map_err(|e| self.changed(format!("vector {i} can no longer be read ({e})")))?;
        if fnv1a(&buf) != self.hashes[i] {
            return Err(self.changed(format!("vector {i} changed")));
        }
        Ok(buf)
    }

    /// Whether the file is still the size and age it was at open.
    fn check(&self) -> Result<()> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| cellspace_core::Error::io(&self.path, e))?;
        if meta.len() != self.len || meta.modified().ok() != self.modified {
            return Err(self.changed("it changed size or time".into()));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Data {
    F32(Vec<f32>),
    Int8 {
        codes: Vec<i8>,
        /// Per dimension: code = round(x * scale).
        scale: Vec<f32>,
        /// Rows `0..disk.rows` are on disk, the rest in `added`.
        disk: Option<DiskRows>,
        added: Vec<f32>,
    },
}

/// The rows' vectors (`dim` wide).
#[derive(Debug)]
pub struct Vectors {
    dim: usize,
    len: usize,
    data: Data,
}

impl Vectors {
    pub fn new(kind: StoreKind, dim: usize) -> Self {
        let data = match kind {
            StoreKind::F32 => Data::F32(Vec::new()),
            StoreKind::Int8 => Data::Int8 {
                codes: Vec::new(),
                scale: Vec::new(),
                disk: None,
                added: Vec::new(),
            },
        };
        Self { dim, len: 0, data }
    }

    /// f32 rows already in memory.
    pub fn from_f32(data: Vec<f32>, dim: usize) -> Self {
        Self {
            dim,
            len: data.len() / dim.max(1),
            data: Data::F32(data),
        }
    }

    /// int8 codes and scales, with the exact rows in a float32 `.npy` on disk.
    pub(crate) fn from_int8(codes: Vec<i8>, scale: Vec<f32>, disk: DiskRows, dim: usize) -> Self {
        Self {
            dim,
            len: disk.rows,
            data: Data::Int8 {
                codes,
                scale,
                disk: Some(disk),
                added: Vec::new(),
            },
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self.data {
            Data::F32(_) => StoreKind::F32,
            Data::Int8 { .. } => StoreKind::Int8,
        }
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All rows, when they are in memory (the f32 store).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::Int8 { .. } => None,
        }
    }

    /// The int8 codes and per-dimension scales (the int8 store).
    pub(crate) fn codes(&self) -> Option<(&[i8], &[f32])> {
        match &self.data {
            Data::Int8 { codes, scale, .. } => Some((codes, scale)),
            Data::F32(_) => None,
        }
    }

    /// Append rows. The int8 store takes its scales from the first rows it is given.
    pub fn push(&mut self, rows: &[f32]) {
        let dim = self.dim;
        match &mut self.data {
            Data::F32(v) => v.extend_from_slice(rows),
            Data::Int8 {
                codes,
                scale,
                added,
                ..
            } => {
                if scale.is_empty() {
                    *scale = (0..dim)
                        .map(|d| {
                            let m = rows
                                .iter()
                                .skip(d)
                                .step_by(dim)
                                .fold(0f32, |m, x| m.max(x.abs()));
                            if m > 0.0 { 127.0 / m } else { 1.0 }
                        })
                        .collect();
                }
                codes.extend(
                    rows.iter()
                        .enumerate()
                        .map(|(i, x)| (x * scale[i % dim]).round().clamp(-127.0, 127.0) as i8),
                );
                added.extend_from_slice(rows);
            }
        }
        self.len += rows.len() / dim.max(1);
    }

    /// Whether the rows on disk (int8 store) are still the file that was opened.
    pub fn check_disk(&self) -> Result<()> {
        match &self.data {
            Data::Int8 { disk: Some(d), .. } => d.check(),
            _ => Ok(()),
        }
    }

    /// The exact row `i` (from disk for the int8 store).
    pub fn row(&self, i: usize) -> Result<Cow<'_, [f32]>> {
        let dim = self.dim;
        match &self.data {
            Data::F32(v) => Ok(Cow::Borrowed(&v[i * dim..(i + 1) * dim])),
            Data::Int8 { disk, added, .. } => {
                let on_disk = disk.as_ref().map_or(0, |d| d.rows);
                if i >= on_disk {
                    let j = i - on_disk;
                    return Ok(Cow::Borrowed(&added[j * dim..(j + 1) * dim]));
                }
                let d = disk.as_ref().expect("row on disk");
                let buf = d.read(i, dim)?;
                Ok(Cow::Owned(
                    buf.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                ))
            }
        }
    }

    /// The query as the graph scores it: as is for f32; for int8, scaled so that a dot with a
    /// row's codes is the dot with the row.
    pub fn prepare<'q>(&self, query: &'q [f32]) -> Cow<'q, [f32]> {
        match &self.data {
            Data::F32(_) => Cow::Borrowed(query),
            Data::Int8 { scale, .. } => {
                Cow::Owned(query.iter().zip(scale).map(|(q, s)| q / s).collect())
            }
        }
    }

    /// Row `i` as the graph's query for it (its codes decoded for int8).
    pub fn graph_row(&self, i: usize) -> Cow<'_, [f32]> {
        let dim = self.dim;
        match &self.data {
            Data::F32(v) => Cow::Borrowed(&v[i * dim..(i + 1) * dim]),
            Data::Int8 { codes, scale, .. } => Cow::Owned(
                codes[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(scale)
                    .map(|(&c, s)| c as f32 / s)
                    .collect(),
            ),
        }
    }

    /// Cosine distance of a [`Vectors::prepare`]d query to row `i`, as the graph sees it.
    #[inline]
    pub fn dist(&self, prepared: &[f32], i: u32) -> f32 {
        let (i, dim) = (i as usize, self.dim);
        match &self.data {
            Data::F32(v) => 1.0 - cellspace_core::dot::dot(prepared, &v[i * dim..(i + 1) * dim]),
            Data::Int8 { codes, .. } => {
                1.0 - cellspace_core::dot::dot_i8(prepared, &codes[i * dim..(i + 1) * dim])
            }
        }
    }

    /// Ask the CPU for row `i` ahead of scoring it.
    #[inline]
    pub fn prefetch(&self, i: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let at = i as usize * self.dim;
            let p: Option<*const i8> = match &self.data {
                Data::F32(v) => v.get(at).map(|x| (x as *const f32).cast()),
                Data::Int8 { codes, .. } => codes.get(at).map(|x| x as *const i8),
            };
            if let Some(p) = p {
                // SAFETY: a prefetch is only a hint, and the address is inside the store.
                unsafe { std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0) };
            }
        }
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len() * 4,
            Data::Int8 {
                codes,
                scale,
                added,
                ..
            } => codes.len() + scale.len() * 4 + added.len() * 4,
        }
    }
}
