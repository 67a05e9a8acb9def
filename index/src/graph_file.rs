//! `graph.bin`, the on-disk form of [`Graph`] (index format 3): little-endian, versioned by its
//! magic, every length and link checked on reading (the manifest's sha256 catches corruption;
//! these checks keep a crafted file from sending a search out of bounds).
//!
//! Layout: magic `CSHNSW` + format `0x0001` (8 bytes); u32 m, ef_construction, n, entry;
//! u8 max_level and three zero bytes; `levels` (n x u8); `len0` (n x u16); `links0`
//! (n x 2m x u32); then for each node with level >= 1, for layers 1..=level: u16 count and
//! count x u32.

use crate::graph::Graph;

const MAGIC: &[u8; 8] = b"CSHNSW\x00\x01";

pub fn encode(g: &Graph) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + g.len() * (3 + 4 * g.m0));
    out.extend_from_slice(MAGIC);
    for x in [g.m, g.ef_construction, g.len(), g.entry as usize] {
        out.extend_from_slice(&(x as u32).to_le_bytes());
    }
    out.extend_from_slice(&[g.max_level, 0, 0, 0]);
    out.extend_from_slice(&g.levels);
    for l in &g.len0 {
        out.extend_from_slice(&l.to_le_bytes());
    }
    for l in &g.links0 {
        out.extend_from_slice(&l.to_le_bytes());
    }
    for layers in &g.upper {
        for links in layers {
            out.extend_from_slice(&(links.len() as u16).to_le_bytes());
            for l in links {
                out.extend_from_slice(&l.to_le_bytes());
            }
        }
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
}

/// The graph in `bytes`, which must hold `rows` nodes.
pub fn decode(bytes: &[u8], rows: usize) -> Result<Graph, String> {
    let mut r = Reader { b: bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a cellspace HNSW graph (or a newer format)".into());
    }
    let (m, efc, n, entry) = (r.u32()?, r.u32()?, r.u32()? as usize, r.u32()?);
    let max_level = r.take(4)?[0];
    if n != rows {
        return Err(format!(
            "the graph holds {n} nodes but the index has {rows} rows"
        ));
    }
    if m == 0 || m > 256 || (n > 0 && entry as usize >= n) {
        return Err(format!("bad header (m {m}, entry {entry} of {n})"));
    }
    let mut g = Graph::new(m as usize, efc as usize);
    g.levels = r.take(n)?.to_vec();
    if g.levels.iter().any(|&l| l > max_level) {
        return Err("a node above the top layer".into());
    }
    g.len0 = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
    let slots = n.checked_mul(g.m0).ok_or("size overflow")?;
    let raw = r.take(slots.checked_mul(4).ok_or("size overflow")?)?;
    g.links0 = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let in_range = |l: &u32| (*l as usize) < n;
    for i in 0..n {
        let len = g.len0[i] as usize;
        if len > g.m0 || !g.links0[i * g.m0..i * g.m0 + len].iter().all(in_range) {
            return Err(format!("node {i}: bad layer-0 links"));
        }
    }
    g.upper = Vec::with_capacity(n);
    for i in 0..n {
        let mut layers = Vec::with_capacity(g.levels[i] as usize);
        for _ in 0..g.levels[i] {
            let c = r.u16()? as usize;
            let links: Vec<u32> = (0..c).map(|_| r.u32()).collect::<Result<_, _>>()?;
            if c > g.m0 || !links.iter().all(in_range) {
                return Err(format!("node {i}: bad upper-layer links"));
            }
            layers.push(links);
        }
        g.upper.push(layers);
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes past the graph", bytes.len() - r.at));
    }
    g.entry = entry;
    g.max_level = max_level;
    Ok(g)
}
