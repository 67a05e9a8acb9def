//! The map's file (`map.bin`): the 2-D place of every row ([`crate::layout`]), listed with its
//! sha256 in the manifest like every other file, so a damaged map is detected at open.
//!
//! Layout: `CSMAP001`, the row count (u64 LE), then `x, y` per row (f32 LE).

use crate::CellIndex;
use crate::layout::Cells;
use std::borrow::Cow;

pub const MAP_FILE: &str = "map.bin";
const MAGIC: &[u8; 8] = b"CSMAP001";

pub fn encode(map: &[[f32; 2]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 * map.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for p in map {
        out.extend_from_slice(&p[0].to_le_bytes());
        out.extend_from_slice(&p[1].to_le_bytes());
    }
    out
}

/// The places of `rows` rows, or why the bytes are not that.
pub fn decode(bytes: &[u8], rows: usize) -> Result<Vec<[f32; 2]>, String> {
    let (Some(magic), Some(count)) = (bytes.get(..8), bytes.get(8..16)) else {
        return Err("shorter than its header".into());
    };
    if magic != MAGIC {
        return Err("not a cellspace map (bad magic)".into());
    }
    let n = u64::from_le_bytes(count.try_into().expect("8 bytes")) as usize;
    if n != rows {
        return Err(format!("{n} places for {rows} rows"));
    }
    let body = &bytes[16..];
    if body.len() != n * 8 {
        return Err(format!("{} bytes of places for {n} rows", body.len()));
    }
    let f = |c: &[u8]| f32::from_le_bytes(c.try_into().expect("4 bytes"));
    let map: Vec<[f32; 2]> = body
        .chunks_exact(8)
        .map(|c| [f(&c[..4]), f(&c[4..])])
        .collect();
    if let Some(i) = map
        .iter()
        .position(|p| !p[0].is_finite() || !p[1].is_finite())
    {
        return Err(format!("row {i}'s place is not a finite number"));
    }
    Ok(map)
}

/// The index as the layout reads it: live rows, layer-0 links and the graph's vectors (in
/// memory for either store: the int8 codes decoded).
pub(crate) struct IndexCells<'a>(pub &'a CellIndex);

impl Cells for IndexCells<'_> {
    fn rows(&self) -> usize {
        self.0.rows.len()
    }
    fn live(&self, i: usize) -> bool {
        !self.0.rows[i].removed
    }
    fn links(&self, i: usize) -> &[u32] {
        self.0.graph.links(i as u32, 0)
    }
    fn vector(&self, i: usize) -> Cow<'_, [f32]> {
        self.0.vectors.graph_row(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_round_trips_and_damage_is_named() {
        let map = vec![[1.0, -2.5], [0.0, 3.25]];
        let bytes = encode(&map);
        assert_eq!(decode(&bytes, 2).unwrap(), map);
        assert!(
            decode(&bytes, 3)
                .unwrap_err()
                .contains("2 places for 3 rows")
        );
        assert!(
            decode(&bytes[..20], 2)
                .unwrap_err()
                .contains("bytes of places")
        );
        let mut nan = bytes.clone();
        nan[16..20].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(decode(&nan, 2).unwrap_err().contains("row 0"));
        assert!(
            decode(b"CSGRAPH1xxxxxxxx", 0)
                .unwrap_err()
                .contains("magic")
        );
    }
}
