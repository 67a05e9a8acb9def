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

/// (rows, dim, offset of the data) from the start of a `.npy` file of `total` bytes. The header
/// is parsed as the dict literal it is (exactly the keys `descr`, `fortran_order`, `shape`), and
/// the declared size is checked, without overflow, against the file's.
fn header_of(path: &Path, bytes: &[u8], total: usize) -> Result<(usize, usize, usize)> {
    let bad = |r: &str| Error::invalid(path, format!("not a float32 [N, D] .npy: {r}"));
    if bytes.len() < 8 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (len_bytes, start): (usize, usize) = match bytes[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        _ => return Err(bad("unknown version")),
    };
    let len_field = bytes
        .get(8..8 + len_bytes)
        .ok_or_else(|| bad("truncated header"))?;
    let hlen = len_field
        .iter()
        .rev()
        .fold(0usize, |n, &b| (n << 8) | b as usize);
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= total)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(
        bytes
            .get(start..end)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header not text"))?;
    let (rows, dim) = parse_header(header).map_err(|r| bad(&r))?;
    let expected = rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad(&format!("shape ({rows}, {dim}) is larger than any file")))?;
    let body = total - end;
    if body != expected {
        return Err(bad(&format!(
            "expected {expected} bytes of data, found {body} (truncated?)"
        )));
    }
    Ok((rows, dim, end))
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }` -> (N, D).
fn parse_header(header: &str) -> std::result::Result<(usize, usize), String> {
    let body = header
        .trim_end_matches(['\n', ' ', '\0'])
        .strip_prefix('{')
        .and_then(|h| h.strip_suffix('}'))
        .ok_or("the header is not a dict")?;
    let (mut descr, mut order, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or("a key is not a quoted name")?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or("a key without ':'")?;
        let after = after.trim_start();
        let (value, after) = match key {
            "descr" => quoted(after).map(|(v, a)| (v.to_string(), a)),
            "fortran_order" => ["True", "False"]
                .into_iter()
                .find(|w| after.starts_with(w))
                .map(|w| (w.to_string(), &after[w.len()..])),
            "shape" => after
                .strip_prefix('(')
                .and_then(|a| a.split_once(')'))
                .map(|(v, a)| (v.to_string(), a)),
            other => return Err(format!("unexpected key '{other}'")),
        }
        .ok_or_else(|| format!("bad value of '{key}'"))?;
        let slot = match key {
            "descr" => &mut descr,
            "fortran_order" => &mut order,
            _ => &mut shape,
        };
        if slot.replace(value).is_some() {
            return Err(format!("'{key}' given twice"));
        }
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(a) => a.trim_start(),
            None if after.is_empty() => after,
            None => return Err("entries not separated by ','".into()),
        };
    }
    if descr.as_deref() != Some("<f4") {
        return Err("dtype must be '<f4'".into());
    }
    if order.as_deref() != Some("False") {
        return Err("the data must be in C order ('fortran_order': False)".into());
    }
    let shape = shape.ok_or("no shape")?;
    let dims: Vec<&str> = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let parse = |d: &str| {
        d.parse::<usize>()
            .map_err(|_| format!("shape entry '{d}' is not a count"))
    };
    match dims[..] {
        [rows, dim] => {
            let (rows, dim) = (parse(rows)?, parse(dim)?);
            if dim == 0 {
                return Err("the vectors have 0 dimensions".into());
            }
            Ok((rows, dim))
        }
        _ => Err(format!("shape must be 2-D, not ({shape})")),
    }
}

/// A `'quoted'` (or `"quoted"`) name at the start of `s`, and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let (name, rest) = s[1..].split_once(q)?;
    Some((name, rest))
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

    fn file(header: &str, version: u8, body: usize) -> Vec<u8> {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend([version, 0]);
        if version == 1 {
            b.extend((header.len() as u16).to_le_bytes());
        } else {
            b.extend((header.len() as u32).to_le_bytes());
        }
        b.extend(header.as_bytes());
        b.extend(vec![0u8; body]);
        b
    }

    /// Issue 19 case 9: crafted headers are errors, never panics, and never accepted.
    #[test]
    fn case_09_crafted_npy_headers_are_refused() {
        let p = std::path::Path::new("crafted.npy");
        let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(super::decode(p, &file(ok, 1, 24)).unwrap().1, 3);
        assert_eq!(super::decode(p, &file(ok, 2, 24)).unwrap().1, 3);
        // 10-11 byte version-2 files used to index past their end
        for n in 6..12 {
            let b = &file(ok, 2, 24)[..n];
            let e = super::decode(p, b).unwrap_err().to_string();
            assert!(e.contains("crafted.npy"), "{n}: {e}");
        }
        let refused = [
            // 2^55+1 rows x 640: rows * dim * 4 used to wrap
            "{'descr': '<f4', 'fortran_order': False, 'shape': (36028797018963969, 640), }",
            "{'descr': '<f4', 'fortran_order':True, 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x, 3), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}",
            "{'descr': '<f4', 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (24, 0), }",
            "'descr': '<f4'",
        ];
        for h in refused {
            let r = std::panic::catch_unwind(|| super::decode(p, &file(h, 1, 24)));
            let r = r.unwrap_or_else(|_| panic!("panicked on {h}"));
            assert!(r.is_err(), "accepted {h}");
        }
    }
}
