//! `index bench`: build time, queries/s and recall@10 against exact brute force at several `ef`,
//! on real embeddings (every 10th held out as a query) and on a synthetic set of any size
//! (a benchmark that prints figures, never a timed test).

use crate::{IndexBuilder, IndexParams, ModelRef, Result, Row};
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct EfRow {
    pub ef: usize,
    pub queries_per_s: f64,
    pub recall_at_10: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub name: String,
    /// What the seconds are: CPU time of the one thread that builds and searches, so other
    /// load on the machine does not move the figures (scripts/bench_hnswlib.py does the same).
    pub clock: &'static str,
    pub vectors: usize,
    pub dim: usize,
    pub params: IndexParams,
    pub build_seconds: f64,
    pub memory_bytes_per_vector: f64,
    /// Peak resident memory of the process after the build (Linux), and its growth from just
    /// before the rows were handed to the index to the end of the build, per indexed vector
    /// (the index's vectors, links and rows): measured, not estimated.
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_growth_per_vector: Option<f64>,

    pub brute_force_queries_per_s: f64,
    pub rows: Vec<EfRow>,
}

/// Index all rows but every `hold_out`-th, query with those, compare with brute force.
pub fn bench(
    name: &str,
    vectors: &[f32],
    dim: usize,
    params: IndexParams,
    efs: &[usize],
    max_queries: usize,
) -> Result<BenchReport> {
    let n = vectors.len() / dim;
    let model = ModelRef {
        name: name.into(),
        card: String::new(),
        onnx_sha256: String::new(),
        dim,
        preprocess_sha256: String::new(),
    };
    let (queries, base) = hold_out_queries(vectors, dim, max_queries);
    let rss_before = peak_rss_bytes();
    let mut builder = IndexBuilder::new(model, params)?;
    for v in base.chunks_exact(dim) {
        builder.push(Row::default(), v)?;
    }
    let t = thread_cpu_seconds();
    let built = builder.build();
    let build_seconds = thread_cpu_seconds() - t;
    let rss_after = peak_rss_bytes();
    // search the index as it is served: saved and opened again (the int8 store then holds
    // only its codes; `index stats` measures an opened index's memory in a fresh process)
    let dir = std::env::temp_dir().join(format!("cellspace-bench-{}", std::process::id()));
    built.save(&dir)?;
    drop(built);
    let index = crate::CellIndex::open(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let index = index?;
    let nq = queries.len() / dim;
    // the truth: every indexed row, exactly (whatever the index's store)
    let exact = exact_top10(&queries, &base, dim);
    drop(base);
    // the index's own scan of its store (exact on f32; codes re-ranked on int8)
    let t = thread_cpu_seconds();
    for q in queries.chunks_exact(dim) {
        index.scan_top(q, 10)?;
    }
    let brute = nq as f64 / (thread_cpu_seconds() - t);
    let rows = efs
        .iter()
        .map(|&ef| ef_row(&index, &queries, dim, &exact, ef))
        .collect::<Result<Vec<_>>>()?;
    Ok(BenchReport {
        name: name.into(),
        clock: "thread CPU time",
        vectors: n - nq,
        dim,
        params,
        build_seconds,
        memory_bytes_per_vector: index.memory_bytes() as f64 / (n - nq).max(1) as f64,
        peak_rss_bytes: rss_after,
        peak_rss_growth_per_vector: rss_before
            .zip(rss_after)
            .map(|(b, a)| a.saturating_sub(b) as f64 / (n - nq).max(1) as f64),
        brute_force_queries_per_s: brute,
        rows,
    })
}

/// Every tenth vector as a query (at most `max_queries`), the rest indexed.
fn hold_out_queries(vectors: &[f32], dim: usize, max_queries: usize) -> (Vec<f32>, Vec<f32>) {
    let mut queries = Vec::new();
    let mut base = Vec::new();
    for (i, v) in vectors.chunks_exact(dim).enumerate() {
        if i % 10 == 0 && queries.len() < max_queries * dim {
            queries.extend_from_slice(v);
        } else {
            base.extend_from_slice(v);
        }
    }
    (queries, base)
}

/// Each query's ten nearest rows of `base` by an exact scan in f32.
fn exact_top10(queries: &[f32], base: &[f32], dim: usize) -> Vec<Vec<usize>> {
    queries
        .chunks_exact(dim)
        .map(|q| {
            cellspace_core::metrics::topk(q, base, dim, 10, |_| true)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// Speed and recall@10 of the graph search at one `ef`.
fn ef_row(
    index: &crate::CellIndex,
    queries: &[f32],
    dim: usize,
    exact: &[Vec<usize>],
    ef: usize,
) -> Result<EfRow> {
    let nq = queries.len() / dim;
    let t = thread_cpu_seconds();
    let found: Vec<Vec<usize>> = queries
        .chunks_exact(dim)
        .map(|q| {
            index
                .search_ids(q, &crate::Filter::default(), 10, Some(ef))
                .map(|h| h.into_iter().map(|(id, _)| id).collect())
        })
        .collect::<Result<_>>()?;
    let qps = nq as f64 / (thread_cpu_seconds() - t);
    let recall = found
        .iter()
        .zip(exact)
        .map(|(f, e)| f.iter().filter(|i| e.contains(i)).count() as f64 / e.len().max(1) as f64)
        .sum::<f64>()
        / nq.max(1) as f64;
    Ok(EfRow {
        ef,
        queries_per_s: qps,
        recall_at_10: recall,
    })
}

/// `n` unit vectors of `dim` shaped like an atlas of augmented cells: 300 types, `n / 30`
/// originals drawn around them, and ~30 close copies of each original (any index, hnswlib
/// included, finds the near copies; a set of featureless equidistant points would measure
/// nothing a lab meets).
pub fn synthetic(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise = |rng: &mut rand_chacha::ChaCha8Rng, scale: f32| scale * (rng.random::<f32>() - 0.5);
    let centres: Vec<f32> = (0..300 * dim).map(|_| noise(&mut rng, 1.0)).collect();
    let n_originals = (n / 30).max(1);
    let mut originals = Vec::with_capacity(n_originals * dim);
    for _ in 0..n_originals {
        let c = rng.random_range(0..300);
        originals.extend((0..dim).map(|d| centres[c * dim + d] + noise(&mut rng, 0.6)));
    }
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let o = rng.random_range(0..n_originals);
        let start = out.len();
        out.extend((0..dim).map(|d| originals[o * dim + d] + noise(&mut rng, 0.15)));
        cellspace_core::l2_normalize(&mut out[start..]);
    }
    out
}

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Resident memory of this process now (Linux `VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
