//! Training data: images are decoded once, in parallel; the window around each image's white
//! cell (the serving preprocessing's own [`Preprocess::window`]) is cached as a small square for
//! the augmentations, and the exact model input the runtime would build is kept for
//! measuring. Batches of two augmented views are produced by rayon workers on a background
//! thread, one batch ahead, so the backend never waits on JPEG decoding. Every view is seeded
//! from (seed, epoch, image), which makes a run, and a resumed run, reproducible.

use crate::augment::{AugmentConfig, view};
use cellspace_core::calibration::Calibration;
use cellspace_core::dataset::{ImageEntry, SourceGroups, groups_for, list_images};
use cellspace_core::locate::{LocateFlag, Location};
use cellspace_core::preprocess::{Preprocess, load_rgb};
use cellspace_core::progress::Progress;
use image::{RgbImage, imageops::FilterType};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// Decoded images of a folder, labels kept only for measuring.
pub struct CellImages {
    pub entries: Vec<ImageEntry>,
    /// The window each image is looked at through (around its white cell, or the central
    /// square), resized to the cache size: the histogram's input, and the augmentation source
    /// when there is no context.
    pub squares: Vec<RgbImage>,
    /// With a `context` above 1, each window with that much more field about it, at the
    /// same pixels per window (`cache · context` px): the augmentation source. Empty without.
    pub sources: Vec<RgbImage>,
    /// The side of a source in windows (1: the square itself).
    pub context: f32,
    /// The model's input for each image, exactly as the runtime prepares it (before
    /// normalisation), so validation measures what is served.
    pub inputs: Vec<RgbImage>,
    /// Where the white cell was found (None with the whole-field rule).
    pub locations: Vec<Option<Location>>,
    /// Class (parent folder) per image, "" when unknown.
    pub labels: Vec<String>,
    /// Source group per image (the image itself when unknown).
    pub groups: Vec<String>,
    /// Files that could not be read, with the reason.
    pub failed: Vec<(String, String)>,
    /// The folder's red-cell scale the windows were sized by ([`cellspace_core::calibration`]),
    /// as the runtime measures it on a folder.
    pub calibration: Option<Calibration>,
}

impl CellImages {
    /// Read up to `limit` images under `root` (all when None), keeping each one's window (as
    /// `pre` cuts it) at `cache` x `cache` pixels and its model input. An unreadable image is
    /// reported on stderr and skipped; an empty folder is an error. Source groups come from
    /// `source_groups.tsv` in or beside `root`, or else are estimated from the images
    /// ([`cellspace_core::duplicates`]). The decoding is reported to `progress`.
    pub fn load(
        root: &Path,
        pre: &Preprocess,
        cache: u32,
        limit: Option<usize>,
        progress: &dyn Progress,
    ) -> crate::Result<Self> {
        Self::load_in_context(root, pre, cache, 1.0, limit, progress)
    }

    /// [`CellImages::load`], each window also kept with `context` times its side of field
    /// about it ([`Preprocess::window_in_context`]) for the augmentations.
    pub fn load_in_context(
        root: &Path,
        pre: &Preprocess,
        cache: u32,
        context: f32,
        limit: Option<usize>,
        progress: &dyn Progress,
    ) -> crate::Result<Self> {
        let (entries, mut failed) = listed(root, limit)?;
        let calibration = cellspace_core::calibration::measure(pre, entries.len(), |i| {
            load_rgb(&entries[i].path).ok()
        });
        let pre = &pre.clone().with_calibration(calibration);
        let groups_file = SourceGroups::find(root)?;
        let shape = Shape::of(pre, cache, context);
        let context = shape.context;
        let decoded = decode_all(&entries, pre, shape, groups_file.is_none(), progress);
        let mut kept = Vec::new();
        let mut squares = Vec::new();
        let mut sources = Vec::new();
        let mut inputs = Vec::new();
        let mut locations = Vec::new();
        let mut signatures = Vec::new();
        for (e, d) in entries.into_iter().zip(decoded) {
            match d {
                Ok(d) => {
                    kept.push(e);
                    squares.push(d.square);
                    sources.extend(d.source);
                    inputs.push(d.input);
                    locations.push(d.location);
                    signatures.extend(d.signature.into_iter().flatten());
                }
                Err(reason) => {
                    log::warn!("skipped {}: {reason}", e.path.display());
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
        let groups = match &groups_file {
            Some(g) => groups_for(&kept, Some(g)),
            None => estimated_groups(&signatures, root),
        };
        let labels = kept
            .iter()
            .map(|e| e.class.clone().unwrap_or_default())
            .collect();
        let data = Self {
            entries: kept,
            squares,
            sources,
            context,
            inputs,
            locations,
            labels,
            groups,
            failed,
            calibration,
        };
        data.log_summary(pre);
        Ok(data)
    }

    /// Image `i`'s augmentation source: its window in context, or its square without one.
    pub fn source(&self, i: usize) -> &RgbImage {
        self.sources.get(i).unwrap_or(&self.squares[i])
    }

    /// The folder's calibration, stain shift and localisation flags, in the log.
    fn log_summary(&self, pre: &Preprocess) {
        if let Some(c) = &self.calibration {
            log::info!(
                "red-cell scale of the folder: {:.1} px (median of {} of {} fields measured)",
                c.rbc_px,
                c.measured,
                c.fields
            );
        }
        if let Some(s) = pre.folder_stain_shift() {
            log::info!("stain shift of the folder: {}", s.describe());
        }
        let flags = self.flag_counts();
        if !flags.is_empty() {
            let text: Vec<String> = flags
                .iter()
                .map(|(f, n)| format!("{n} {}", f.name()))
                .collect();
            log::info!(
                "white cell located in {} images; flagged: {}",
                self.len(),
                text.join(", ")
            );
        }
    }

    /// How many images carry each localisation flag.
    pub fn flag_counts(&self) -> Vec<(LocateFlag, usize)> {
        LocateFlag::ALL
            .into_iter()
            .map(|f| {
                let n = self
                    .locations
                    .iter()
                    .filter(|l| l.as_ref().is_some_and(|l| l.has(f)))
                    .count();
                (f, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The serving-path input of image `i`, exactly the runtime's.
    pub fn prepared(&self, i: usize, pre: &Preprocess) -> Vec<f32> {
        pre.normalize(&self.inputs[i])
    }
}

/// One decoded image, before it is sorted into [`CellImages`].
struct Decoded {
    square: RgbImage,
    source: Option<RgbImage>,
    input: RgbImage,
    location: Option<Location>,
    signature: Option<Vec<f32>>,
}

/// The error of a folder that holds no image.
fn no_images(root: &Path) -> crate::Error {
    crate::Error::Data(format!(
        "{}: no images found (looked for {:?} files below it)",
        root.display(),
        cellspace_core::dataset::IMAGE_EXTENSIONS
    ))
}

/// The reference of the fields under `root` ([`cellspace_core::reference`]), measured on up
/// to [`cellspace_core::reference::SAMPLE`] images spread over the folder.
pub fn measure_reference(root: &Path) -> crate::Result<cellspace_core::reference::Reference> {
    let (entries, _) = list_images(root)?;
    if entries.is_empty() {
        return Err(no_images(root));
    }
    let sample = spread(entries, cellspace_core::reference::SAMPLE);
    let threshold = cellspace_core::locate::LocateConfig::default().stain_threshold;
    cellspace_core::reference::measure(
        sample.len(),
        |i| load_rgb(&sample[i].path).ok(),
        threshold,
    )
    .ok_or_else(|| {
        crate::Error::Data(format!(
            "{}: too few fields with a plasma background, red cells and a measurable red-cell scale to standardise against (pass --colour none --scale field to train on absolute colour and a fixed window)",
            root.display()
        ))
    })
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

/// One training batch: two views of the same images, [N, 3, S, S] each, row-major, and
/// with multi-crop ([`AugmentConfig::local_views`]) its local views, [N, 3, L, L] each.
pub struct Batch {
    pub index: usize,
    pub n: usize,
    pub view1: Vec<f32>,
    pub view2: Vec<f32>,
    /// The local views, one [N, 3, L, L] block per local view (none without multi-crop).
    pub locals: Vec<Vec<f32>>,
    /// L, the local views' side in px (0 without them).
    pub local_size: usize,
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
#[derive(Clone)]
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
        let local = p.aug.local(&p.pre);
        for (bi, chunk) in p
            .order
            .chunks_exact(p.batch_size)
            .enumerate()
            .skip(p.start_batch)
        {
            let views: Vec<Views> = chunk
                .par_iter()
                .map(|&i| views_of(&data, i, p, local.as_ref()))
                .collect();
            if tx.send(batch_of(bi, views, local.as_ref())).is_err() {
                return;
            }
        }
    });
    rx
}

/// One image's views: the two global ones, then its local ones.
type Views = (Vec<f32>, Vec<f32>, Vec<Vec<f32>>);

/// Image `i`'s views in epoch `p.epoch`, seeded by (seed, epoch, image). The local views are
/// drawn after the global ones, so multi-crop leaves the global views as they were.
fn views_of(
    data: &CellImages,
    i: usize,
    p: &EpochPlan,
    local: Option<&(AugmentConfig, Preprocess)>,
) -> Views {
    let s = p.seed ^ ((p.epoch as u64) << 40) ^ ((i as u64) << 8);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
    let src = data.source(i);
    let a = view(src, data.context, &p.aug, &p.pre, &mut rng);
    let b = view(src, data.context, &p.aug, &p.pre, &mut rng);
    let locals = local.map_or_else(Vec::new, |(aug, pre)| {
        (0..aug.local_views())
            .map(|_| view(src, data.context, aug, pre, &mut rng))
            .collect()
    });
    (a, b, locals)
}

/// The batch of `views`, each view's rows stacked image after image.
fn batch_of(index: usize, views: Vec<Views>, local: Option<&(AugmentConfig, Preprocess)>) -> Batch {
    let n = views.len();
    let k = local.map_or(0, |(aug, _)| aug.local_views());
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    let mut locals = vec![Vec::new(); k];
    for (a, b, ls) in views {
        v1.extend(a);
        v2.extend(b);
        for (block, l) in locals.iter_mut().zip(ls) {
            block.extend(l);
        }
    }
    Batch {
        index,
        n,
        view1: v1,
        view2: v2,
        locals,
        local_size: local.map_or(0, |(_, pre)| pre.size as usize),
    }
}

/// The cached squares' side in px, and the sources' side in windows.
#[derive(Clone, Copy)]
struct Shape {
    cache: u32,
    context: f32,
}

impl Shape {
    /// `context` as `pre` can give it: the whole-field rule has no field beyond its square.
    fn of(pre: &Preprocess, cache: u32, context: f32) -> Self {
        let context = match pre.resize {
            cellspace_core::preprocess::ResizeRule::CellWindow(_) => context.max(1.0),
            _ => 1.0,
        };
        Self { cache, context }
    }
}

/// Files that could not be read, each with the reason.
type Failed = Vec<(String, String)>;

/// The images under `root` (up to `limit`, spread over the listing), and the files that could
/// not be listed, with the reason; an error when there is no image.
fn listed(root: &Path, limit: Option<usize>) -> crate::Result<(Vec<ImageEntry>, Failed)> {
    let (mut entries, problems) = list_images(root)?;
    let failed = problems
        .into_iter()
        .map(|p| (p.path.display().to_string(), p.reason))
        .collect();
    if let Some(n) = limit {
        entries = spread(entries, n);
    }
    if entries.is_empty() {
        return Err(no_images(root));
    }
    Ok((entries, failed))
}

/// Every entry decoded and cut to its window (and the window's `cache`-px square, and its
/// source in context), in parallel, reported to `progress`; with `signatures`, each field's
/// near-duplicate signature.
fn decode_all(
    entries: &[ImageEntry],
    pre: &Preprocess,
    shape: Shape,
    signatures: bool,
    progress: &dyn Progress,
) -> Vec<Result<Decoded, String>> {
    progress.start("decoding", entries.len(), 0);
    let Shape { cache, context } = shape;
    let wide_px = (cache as f32 * context).round() as u32;
    let decoded = entries
        .par_iter()
        .map(|e| {
            let r = load_rgb(&e.path)
                .map(|img| {
                    // without context the window alone, cut once
                    let (window, wide, location) = if context > 1.0 {
                        let (window, wide, loc) = pre.window_in_context(&img, context);
                        (window, Some(wide), loc)
                    } else {
                        let (window, loc) = pre.window(&img);
                        (window, None, loc)
                    };
                    let square =
                        image::imageops::resize(&window, cache, cache, FilterType::Triangle);
                    let source = wide.map(|wide| {
                        image::imageops::resize(&wide, wide_px, wide_px, FilterType::Triangle)
                    });
                    let input = pre.resize_window(window);
                    let signature = signatures.then(|| cellspace_core::duplicates::signature(&img));
                    Decoded {
                        square,
                        source,
                        input,
                        location,
                        signature,
                    }
                })
                .map_err(|err| err.to_string());
            progress.advance(1);
            r
        })
        .collect();
    progress.finish();
    decoded
}

/// Source groups estimated from near-duplicate signatures, where no groups file exists.
fn estimated_groups(signatures: &[f32], root: &Path) -> Vec<String> {
    let est = cellspace_core::duplicates::group(
        signatures,
        cellspace_core::duplicates::DEFAULT_THRESHOLD,
    );
    log::info!(
        "no {} in or beside {}: estimated {} source groups of near-duplicate images",
        cellspace_core::dataset::GROUPS_FILE,
        root.display(),
        est.iter().collect::<std::collections::HashSet<_>>().len()
    );
    est.into_iter().map(|g| format!("est:{g}")).collect()
}
