//! Reading an index's vectors at open: `embeddings.npy` into memory for the f32 store; for the
//! int8 store, `codes.i8` into memory and `embeddings.npy` left on disk for re-ranking.
//!
//! `codes.i8`: magic `CSINT8` + format `0x0001` (8 bytes); u32 dim, u32 rows; dim x f32 scales;
//! rows x dim int8 codes (little-endian).

use crate::manifest::{CODES_FILE, VECTORS_FILE};
use crate::store::{DiskRows, StoreKind, Vectors};
use crate::{Error, IndexParams, Result};
use std::path::Path;

const MAGIC: &[u8; 8] = b"CSINT8\x00\x01";

pub fn encode_codes(codes: &[i8], scale: &[f32]) -> Vec<u8> {
    let dim = scale.len();
    let rows = codes.len().checked_div(dim).unwrap_or(0);
    let mut out = Vec::with_capacity(16 + 4 * dim + codes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    for s in scale {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend(codes.iter().map(|&c| c as u8));
    out
}

fn decode_codes(bytes: &[u8], rows: usize, dim: usize) -> Result<(Vec<i8>, Vec<f32>), String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not an int8 code file (or a newer format)".into());
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (d, n) = (word(8) as usize, word(12) as usize);
    if (d, n) != (dim, rows) {
        return Err(format!(
            "codes of {n} rows x {d} for an index of {rows} rows x {dim}"
        ));
    }
    let want = 16 + 4 * dim + rows * dim;
    if bytes.len() != want {
        return Err(format!("{} bytes, expected {want}", bytes.len()));
    }
    let scale = bytes[16..16 + 4 * dim]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let codes = bytes[16 + 4 * dim..].iter().map(|&b| b as i8).collect();
    Ok((codes, scale))
}

/// The vectors of the index in `dir` (`rows` x `dim`), as its parameters say to keep them.
pub fn load(dir: &Path, params: &IndexParams, rows: usize, dim: usize) -> Result<Vectors> {
    let npy = dir.join(VECTORS_FILE);
    match params.store {
        StoreKind::F32 => {
            let (data, d) = cellspace_core::npy::read(&npy)?;
            if data.len() != rows * dim || (rows > 0 && d != dim) {
                return Err(Error::Corrupt {
                    path: npy,
                    reason: format!("holds {} values, expected {rows} rows x {dim}", data.len()),
                });
            }
            Ok(Vectors::from_f32(data, dim))
        }
        StoreKind::Int8 => {
            let p = dir.join(CODES_FILE);
            let bytes = std::fs::read(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
            let (codes, scale) = decode_codes(&bytes, rows, dim)
                .map_err(|reason| Error::Corrupt { path: p, reason })?;
            let disk = DiskRows::open(&npy, rows, dim)?;
            Ok(Vectors::from_int8(codes, scale, disk, dim))
        }
    }
}
