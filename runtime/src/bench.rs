//! `runtime bench`: decode-only, inference-only and end-to-end images/s on a folder of real
//! images for several batch sizes (a benchmark that prints figures, never a timed test).

use crate::{Embedder, Result};
use cellspace_core::dataset::list_images;
use cellspace_core::preprocess::load_rgb;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct BenchRow {
    pub batch_size: usize,
    pub inference_images_per_s: f64,
    pub end_to_end_images_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub images: usize,
    pub provider: String,
    pub model: String,
    /// The folder's calibration, measured once as `runtime embed` measures it (None: the
    /// model's window is not in red-cell diameters, or too few fields could be measured).
    pub calibration: Option<cellspace_core::calibration::Calibration>,
    /// Seconds the calibration took (inside every end-to-end figure, as in `runtime embed`).
    pub calibration_s: f64,
    pub decode_images_per_s: f64,
    pub rows: Vec<BenchRow>,
    pub threads: usize,
}

/// Time `embedder` on up to `limit` images under `dir` for each batch size.
pub fn bench(
    model: &Path,
    opts: &crate::EmbedOptions,
    dir: &Path,
    limit: usize,
    batch_sizes: &[usize],
) -> Result<BenchReport> {
    let (entries, _) = list_images(dir)?;
    let paths: Vec<PathBuf> = entries.into_iter().take(limit).map(|e| e.path).collect();
    let probe = Embedder::new(model, opts)?;
    // timed as `runtime embed` runs: the folder calibrated once, each field then sized by it
    // (and its own red-cell reading taken at half resolution, for the flags alone)
    let t = Instant::now();
    let pre = probe.calibrated(&paths);
    let calibration_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let prepared: Vec<Vec<f32>> = paths
        .par_iter()
        .filter_map(|p| load_rgb(p).ok().map(|img| pre.prepare(&img)))
        .collect();
    if prepared.is_empty() {
        return Err(cellspace_core::Error::invalid(
            dir,
            format!(
                "none of the {} images listed could be decoded: nothing to time",
                paths.len()
            ),
        )
        .into());
    }
    let decode = prepared.len() as f64 / t.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for &bs in batch_sizes {
        let e = Embedder::new(
            model,
            &crate::EmbedOptions {
                batch_size: bs,
                ..opts.clone()
            },
        )?;
        // warm-up
        e.embed_prepared(&prepared[0], 1)?;
        let n = prepared
            .len()
            .min(if bs == 1 { 500 } else { prepared.len() });
        let t = Instant::now();
        for chunk in prepared[..n].chunks(bs) {
            let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
            e.embed_prepared(&flat, chunk.len())?;
        }
        let inference = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let done = e
            .embed_paths_as(&pre, &paths[..n], |_| {})
            .iter()
            .filter(|r| r.is_ok())
            .count();
        let end_to_end = done as f64 / (t.elapsed().as_secs_f64() + calibration_s);
        rows.push(BenchRow {
            batch_size: bs,
            inference_images_per_s: inference,
            end_to_end_images_per_s: end_to_end,
        });
    }
    Ok(BenchReport {
        images: prepared.len(),
        provider: probe.provider().label().into(),
        model: probe.card().name.clone(),
        calibration: pre.calibration,
        calibration_s,
        decode_images_per_s: decode,
        rows,
        threads: rayon::current_num_threads(),
    })
}
