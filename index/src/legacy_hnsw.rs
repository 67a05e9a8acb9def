//! The reader of format-1 and -2 indexes, whose graph hnsw_rs wrote (`cells.hnsw.graph` and
//! `cells.hnsw.data`). Everything that touches hnsw_rs is here: opening such an index converts
//! its graph into cellspace's own [`Graph`] once, and the next save writes format 3
//! (`graph.bin`). Dropping support for the old formats is deleting this module, its one call
//! in [`crate::cellindex`], the format-2 test in `tests/index_store.rs` and the `hnsw_rs`
//! dependency.

use crate::graph::Graph;
use crate::manifest::{GRAPH_FILE, HNSW_BASENAME};
use crate::{Error, Result};
use hnsw_rs::prelude::{Distance, Hnsw, HnswIo};
use std::path::{Path, PathBuf};

/// Cosine distance `1 - dot` on L2-normalised vectors, clamped at 0 (hnsw_rs's own `DistDot`
/// asserts `dot <= 1`, which rounding breaks for duplicate images). The distance the old
/// formats were built with; their files name it (hnsw_rs checks the type's last name on load:
/// do not rename it).
#[derive(Debug, Clone, Copy, Default)]
pub struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - cellspace_core::metrics::dot(a, b)).max(0.0)
    }
}

type HnswRs = Hnsw<'static, f32, CosineDistance>;

/// The graph of the format-1 or -2 index in `dir`, which holds `n` rows, as a [`Graph`] with
/// the index's `m` and `ef_construction`.
pub(crate) fn read_graph(dir: &Path, n: usize, m: usize, ef_construction: usize) -> Result<Graph> {
    if n == 0 {
        // hnsw_rs panics reloading an empty graph: a format-2 empty index has none
        return Ok(Graph::new(m, ef_construction));
    }
    let g = load(dir)?;
    // graph files of another index (checksums rewritten to match) would send searches to rows
    // that do not exist
    if g.get_nb_point() != n {
        return Err(Error::Corrupt {
            path: dir.join(GRAPH_FILE),
            reason: format!(
                "the HNSW graph holds {} points but the index has {n} rows: graph files of another index?",
                g.get_nb_point(),
            ),
        });
    }
    Ok(convert(&g, n, m, ef_construction))
}

/// Reload the hnsw_rs graph. hnsw_rs's loaded graph borrows its `HnswIo`, so the (small) loader
/// is leaked to give the graph a `'static` life; one per opened old index. Its panics on
/// malformed files become errors.
fn load(dir: &Path) -> Result<HnswRs> {
    let dir_owned: PathBuf = dir.to_path_buf();
    let r = std::panic::catch_unwind(move || {
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir_owned, HNSW_BASENAME)));
        io.load_hnsw::<f32, CosineDistance>()
    });
    match r {
        Ok(Ok(g)) => Ok(g),
        Ok(Err(e)) => Err(Error::Corrupt {
            path: dir.join(GRAPH_FILE),
            reason: format!("cannot load HNSW graph: {e}"),
        }),
        Err(_) => Err(Error::Corrupt {
            path: dir.join(GRAPH_FILE),
            reason: "malformed HNSW graph".into(),
        }),
    }
}

/// hnsw_rs's graph, whose data ids are rows `0..n`, as a [`Graph`].
fn convert(g: &HnswRs, n: usize, m: usize, ef_construction: usize) -> Graph {
    let mut out = Graph::new(m, ef_construction);
    out.levels = vec![0; n];
    out.links0 = vec![0; n * out.m0];
    out.len0 = vec![0; n];
    out.upper = vec![Vec::new(); n];
    out.max_level = g.get_max_level_observed();
    let mut entry = None;
    for p in g.get_point_indexation() {
        let id = p.get_origin_id();
        if id >= n {
            continue;
        }
        let level = p.get_point_id().0;
        out.levels[id] = level;
        out.upper[id] = vec![Vec::new(); level as usize];
        if level == out.max_level && entry.is_none() {
            entry = Some(id as u32);
        }
        for (l, ns) in p.get_neighborhood_id().into_iter().enumerate() {
            if l > level as usize {
                break;
            }
            let ids: Vec<u32> = ns
                .into_iter()
                .map(|nb| nb.d_id)
                .filter(|&d| d < n)
                .map(|d| d as u32)
                .collect();
            out.set_links(id as u32, l as u8, &ids);
        }
    }
    out.entry = entry.unwrap_or(0);
    out
}
