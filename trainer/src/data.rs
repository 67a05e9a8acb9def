//! Training data: images are decoded once, in parallel, into small cached squares; batches of
//! two augmented views are produced by rayon workers on a background thread, one batch ahead,
//! so the backend never waits on JPEG decoding. Every view is seeded from (seed, epoch, image),
//! which makes a run, and a resumed run, reproducible.

use crate::augment::{AugmentConfig, view};
use cellspace_core::dataset::{ImageEntry, SourceGroups, groups_for, list_images};
use cellspace_core::preprocess::{Preprocess, center_square, load_rgb};
use image::{RgbImage, imageops::FilterType};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// Decoded images of a folder, labels kept only for measuring.
pub struct CellImages {
    pub entries: Vec<ImageEntry>,
    /// Central square of each image, resized to the cache size (the augmentation source).
    pub squares: Vec<RgbImage>,
    /// Class (parent folder) per image, "" when unknown.
    pub labels: Vec<String>,
    /// Source group per image (the image itself when unknown).
    pub groups: Vec<String>,
    /// Files that could not be read, with the reason.
    pub failed: Vec<(String, String)>,
}

impl CellImages {
    /// Read up to `limit` images under `root` (all when None), keeping each one's central square
    /// at `cache` x `cache` pixels. An unreadable image is reported on stderr and skipped; an
    /// empty folder is an error.
    pub fn load(root: &Path, cache: u32, limit: Option<usize>) -> crate::Result<Self> {
        let (mut entries, problems) = list_images(root)?;
        let mut failed: Vec<(String, String)> = problems
            .into_iter()
            .map(|p| (p.path.display().to_string(), p.reason))
            .collect();
        if let Some(n) = limit {
            entries = spread(entries, n);
        }
        if entries.is_empty() {
            return Err(crate::Error::Data(format!(
                "{}: no images found (looked for {:?} files below it)",
                root.display(),
                cellspace_core::dataset::IMAGE_EXTENSIONS
            )));
        }
        let bar = progress(entries.len() as u64, "decoding");
        let decoded: Vec<Result<RgbImage, String>> = entries
            .par_iter()
            .map(|e| {
                let r = load_rgb(&e.path)
                    .map(|img| {
                        image::imageops::resize(
                            &center_square(&img),
                            cache,
                            cache,
                            FilterType::Triangle,
                        )
                    })
                    .map_err(|err| err.to_string());
                bar.inc(1);
                r
            })
            .collect();
        bar.finish_and_clear();
        let mut kept = Vec::new();
        let mut squares = Vec::new();
        for (e, d) in entries.into_iter().zip(decoded) {
            match d {
                Ok(img) => {
                    kept.push(e);
                    squares.push(img);
                }
                Err(reason) => {
                    eprintln!("skipped {}: {reason}", e.path.display());
                    failed.push((e.path.display().to_string(), reason));
                }
            }
        }
        if kept.is_empty() {
            return Err(crate::Error::Data(format!(
                "{}: no readable image",
                root.display()
            )));
        }
        let groups_file = SourceGroups::find(root)?;
        let groups = groups_for(&kept, groups_file.as_ref());
        let labels = kept
            .iter()
            .map(|e| e.class.clone().unwrap_or_default())
            .collect();
        Ok(Self {
            entries: kept,
            squares,
            labels,
            groups,
            failed,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The serving-path input of image `i`; exactly the runtime's when the cache size is the
    /// model's input size, else up to resampling of the cache.
    pub fn prepared(&self, i: usize, pre: &Preprocess) -> Vec<f32> {
        pre.prepare(&self.squares[i])
    }
}

/// Take `n` entries spread evenly over the sorted list, so every class is represented.
fn spread(entries: Vec<ImageEntry>, n: usize) -> Vec<ImageEntry> {
    if n >= entries.len() {
        return entries;
    }
    let step = entries.len() as f64 / n as f64;
    (0..n)
        .map(|i| entries[(i as f64 * step) as usize].clone())
        .collect()
}

pub fn progress(len: u64, msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    bar
}

/// One training batch: two views of the same images, [N, 3, S, S] each, row-major.
pub struct Batch {
    pub index: usize,
    pub n: usize,
    pub view1: Vec<f32>,
    pub view2: Vec<f32>,
}

/// The images of an epoch in order: a permutation seeded by (seed, epoch).
pub fn epoch_order(train: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = train.to_vec();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9E3779B97F4A7C15),
    );
    order.shuffle(&mut rng);
    order
}

/// What the batch producer of one epoch needs.
pub struct EpochPlan {
    pub order: Vec<usize>,
    pub batch_size: usize,
    /// First batch to produce (a resumed epoch skips the ones already trained).
    pub start_batch: usize,
    pub aug: AugmentConfig,
    pub pre: Preprocess,
    pub seed: u64,
    pub epoch: usize,
}

impl EpochPlan {
    pub fn batches(&self) -> usize {
        self.order.len() / self.batch_size
    }
}

/// Produce the batches of one epoch on a background thread, one ahead of the trainer.
/// Incomplete last batches are dropped (batch-hard mining wants full batches).
pub fn spawn_batches(data: Arc<CellImages>, plan: EpochPlan) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        let p = &plan;
        for (bi, chunk) in p
            .order
            .chunks_exact(p.batch_size)
            .enumerate()
            .skip(p.start_batch)
        {
            let views: Vec<(Vec<f32>, Vec<f32>)> = chunk
                .par_iter()
                .map(|&i| {
                    let s = p.seed ^ ((p.epoch as u64) << 40) ^ ((i as u64) << 8);
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
                    let a = view(&data.squares[i], &p.aug, &p.pre, &mut rng);
                    let b = view(&data.squares[i], &p.aug, &p.pre, &mut rng);
                    (a, b)
                })
                .collect();
            let (mut v1, mut v2) = (Vec::new(), Vec::new());
            for (a, b) in views {
                v1.extend(a);
                v2.extend(b);
            }
            if tx
                .send(Batch {
                    index: bi,
                    n: chunk.len(),
                    view1: v1,
                    view2: v2,
                })
                .is_err()
            {
                return;
            }
        }
    });
    rx
}
