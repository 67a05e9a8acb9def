//! NumPy `.npy` (format 1.0, little-endian float32, C order) reading and writing for the
//! `[N, D]` embedding matrix, so Python tools read `embeddings.npy` with a plain `np.load`.

use crate::{Error, Result};
use std::path::Path;

/// The `.npy` header of a `[rows, dim]` float32 array (its data follows, row by row).
pub fn header(rows: usize, dim: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// The `.npy` bytes of `data` (`rows * dim` floats) as a `[rows, dim]` float32 array.
pub fn encode(data: &[f32], dim: usize) -> Vec<u8> {
    let rows = data.len().checked_div(dim).unwrap_or(0);
    let mut out = header(rows, dim);
    out.reserve(4 * data.len());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Write `data` atomically as a `[rows, dim]` float32 array; returns the file's sha256.
pub fn write(path: &Path, data: &[f32], dim: usize) -> Result<String> {
    let bytes = encode(data, dim);
    crate::atomic::write_atomic(path, &bytes)?;
    Ok(crate::sha256_hex(&bytes))
}

/// Read a float32 `[rows, dim]` array written by [`write`] (or NumPy). Returns (data, dim).
/// The data is converted as it is read, so the file is never in memory twice.
pub fn read(path: &Path) -> Result<(Vec<f32>, usize)> {
    use std::io::Read;
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len() as usize;
    // the header is short: parse it from the first bytes, with no data expected yet
    let mut head = vec![0u8; len.min(1 << 16)];
    f.read_exact(&mut head).map_err(io)?;
    let (rows, dim, start) = header_of(path, &head, len)?;
    let mut data = Vec::with_capacity(rows * dim);
    // bytes of a float split between two reads wait in `carry`
    let mut carry: Vec<u8> = Vec::with_capacity(4);
    let mut convert = |mut bytes: &[u8]| {
        if !carry.is_empty() {
            let take = (4 - carry.len()).min(bytes.len());
            carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if carry.len() == 4 {
                data.push(f32::from_le_bytes([carry[0], carry[1], carry[2], carry[3]]));
                carry.clear();
            }
        }
        let whole = bytes.chunks_exact(4);
        carry.extend_from_slice(whole.remainder());
        data.extend(whole.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    };
    convert(&head[start..]);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        convert(&buf[..n]);
    }
    if data.len() != rows * dim {
        return Err(Error::invalid(path, "the file changed while it was read"));
    }
    Ok((data, dim))
}

/// [`read`] of bytes already in memory (`path` names them in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<(Vec<f32>, usize)> {
    let (_, dim, start) = header_of(path, bytes, bytes.len())?;
    let data = bytes[start..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((data, dim))
}

/// (rows, dim, offset of the data) from the start of a `.npy` file of `total` bytes.
fn header_of(path: &Path, bytes: &[u8], total: usize) -> Result<(usize, usize, usize)> {
    let bad = |r: &str| Error::invalid(path, format!("not a float32 [N, D] .npy: {r}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header not text"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("dtype must be '<f4' in C order"));
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| {
            s.trim()
                .trim_start_matches('(')
                .split(',')
                .filter_map(|d| d.trim().parse::<usize>().ok())
                .collect::<Vec<_>>()
        })
        .ok_or_else(|| bad("no shape"))?;
    let [rows, dim] = shape[..] else {
        return Err(bad("shape must be 2-D"));
    };
    let body = total.saturating_sub(start + hlen);
    if body != rows * dim * 4 {
        return Err(bad(&format!(
            "expected {} bytes of data, found {body} (truncated?)",
            rows * dim * 4,
        )));
    }
    Ok((rows, dim, start + hlen))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        super::write(&p, &data, 4).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 48) % 64, 0, "header padded to 64 bytes");
        assert_eq!(super::read(&p).unwrap(), (data, 4));
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = super::read(&p).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("e.npy"), "{e}");
    }
}
