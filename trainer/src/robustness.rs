//! `trainer robustness`: the cross-validated estimate under other microscopes.
//!
//! Every fold's held-out cells are changed as another lab's microscope would change them
//! ([`cellspace_core::shift`]: lamp colour, stain saturation and hue, exposure, magnification,
//! resolution, blur, JPEG, and combinations), then go through the product's whole
//! preprocessing (standardisation, localisation, the window in red-cell diameters) and query
//! the fold's *clean* training cells, as a lab's unseen cells query an atlas built elsewhere.
//! kNN-200 is reported per shift as mean ± SD over folds, for the fold's served model (from a
//! `trainer cv` folder) and for the colour histogram of the same windows, with the share of
//! shifted fields the product flagged as out of range.
//!
//! Labels only measure. The clean row is computed through the same path, so it matches the
//! cross-validation's figure for the same query cells.

use crate::candidates::{Bases, FoldModel};
use crate::cv::output_name;
use crate::data::CellImages;
use crate::eval::Split;
use crate::train::TrainConfig;
use crate::tta::TestTimeViews;
use crate::{Error, Result};
use burn::prelude::*;
use cellspace_core::classify::few_label_accuracy;
use cellspace_core::histogram::histogram_embedding;
use cellspace_core::locate::LocateFlag;
use cellspace_core::metrics::{Labeled, evaluate_unseen};
use cellspace_core::preprocess::{Preprocess, load_rgb};
use cellspace_core::shift::ShiftSpec;
use image::{RgbImage, imageops::FilterType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The report file in the output folder.
pub const ROBUSTNESS_FILE: &str = "robustness.json";

/// One shift's figures over the folds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShiftRow {
    pub shift: String,
    /// kNN-200 per fold of every learned output and blend (`trainer cv`'s names; none
    /// without models).
    pub learned: BTreeMap<String, Vec<f64>>,
    pub histogram: Vec<f64>,
    /// Share of shifted fields flagged as out of range (any out-of-range flag), per fold.
    pub flagged: Vec<f64>,
    /// How many shifted fields carried each flag, over all folds.
    #[serde(default)]
    pub flags: std::collections::BTreeMap<String, usize>,
    /// Few-label accuracy per fold of every candidate (as in `learned`) and of the histogram
    /// ([`HISTOGRAM`]), by labelled originals per class ([`FEW_LABELS`];
    /// [`cellspace_core::classify::few_label_accuracy`], mean over the draws).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub few_label: BTreeMap<String, BTreeMap<usize, Vec<f64>>>,
}

/// Name of the plain window histogram's column.
pub const HISTOGRAM: &str = "histogram of the window";

/// Labelled originals per class of the few-label measurement (`index classify`'s use).
pub const FEW_LABELS: [usize; 4] = [1, 5, 10, 50];

/// Draws of the labelled set per fold and shift.
const FEW_LABEL_DRAWS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RobustnessReport {
    pub folds: usize,
    /// Query cells per fold (at most `per_group` copies of each held-out original).
    pub query_cells: Vec<usize>,
    pub per_group: usize,
    /// The first row is the clean one.
    pub rows: Vec<ShiftRow>,
    /// The name of the folds' served embedding among `learned`.
    pub served: Option<String>,
    /// The preprocessing the shifted cells went through.
    pub preprocess: Preprocess,
    pub seconds: f64,
}

/// What to measure.
pub struct RobustnessPlan<'a> {
    pub data_dir: &'a Path,
    /// Where the decoding of the training folder is reported (`&()`: nowhere).
    pub progress: &'a dyn cellspace_core::progress::Progress,
    /// A `trainer cv` output folder: its folds' models and configuration; None measures the
    /// colour histogram alone, under `cfg`'s preprocessing.
    pub cv_dir: Option<&'a Path>,
    pub cfg: &'a TrainConfig,
    pub folds: usize,
    pub shifts: Vec<ShiftSpec>,
    pub per_group: usize,
    /// Serve the od-anchors folds of `cv_dir` with stain-anchors (see [`serve_stain_anchors`]).
    pub serve_stain_anchors: bool,
    /// Serve the folds of `cv_dir` with this anchor trust instead of their own
    /// ([`cellspace_core::standardise::shrink_to_folder`]).
    pub serve_anchor_trust: Option<f32>,
    /// The views each learned output is measured under (each one a set of candidates):
    /// `[None]` measures the plain outputs, `[None, Dihedral8]` also their test-time averages.
    pub views: Vec<TestTimeViews>,
    /// Where the folds' encoders run (the fit flags' `--device`).
    pub device: Device,
    /// A diagnosis: size every shifted folder's windows by its true red-cell scale (the
    /// training folder's calibration times the shift's [`ShiftSpec::scale`]) instead of the
    /// folder's measurement, so that what the ruler's error costs is told from the rest.
    pub oracle_scale: bool,
}

/// Run the protocol (see the module docs).
pub fn robustness(plan: &RobustnessPlan) -> Result<RobustnessReport> {
    let started = std::time::Instant::now();
    let (cfg, folds) = protocol_config(plan)?;
    let pre = cfg.preprocess();
    // queries and galleries only: no augmentation sources, whatever context the folds trained with
    let data = CellImages::load(
        plan.data_dir,
        &pre,
        2 * cfg.image_size,
        cfg.limit,
        plan.progress,
    )?;
    if plan.serve_stain_anchors {
        check_no_stain_shift(&pre, &data)?;
    }
    let mut specs = vec![ShiftSpec {
        name: "clean".into(),
        steps: vec![],
    }];
    specs.extend(plan.shifts.iter().cloned());
    let mut rows: Vec<ShiftRow> = specs.iter().map(|s| ShiftRow::empty(&s.name)).collect();
    let mut query_cells = Vec::new();
    let served = plan
        .cv_dir
        .map(|_| output_name(cfg.output, cfg.colour_weight));
    for k in 0..folds {
        let split = Split::fold(&data, k, folds, cfg.seed, usize::MAX);
        let queries = per_group(&data, &split.val, plan.per_group);
        query_cells.push(queries.len());
        let model = match plan.cv_dir {
            Some(dir) => Some(FoldModel::load(dir, k, &plan.views, &plan.device, &pre)?),
            None => None,
        };
        let fold = FoldData::new(&data, &split.train, &pre, model);
        for (spec, row) in specs.iter().zip(rows.iter_mut()) {
            let pre = match (plan.oracle_scale, &data.calibration) {
                (true, Some(c)) => pre.clone().with_pixel_size(Some(
                    cellspace_core::preprocess::RED_CELL_UM / (c.rbc_px * spec.scale()),
                )),
                _ => pre.clone(),
            };
            row.push(fold.shifted(&data, &queries, spec, &pre, cfg.seed)?);
        }
        log::info!(
            "fold {}/{folds}: {} query cells under {} shifts; clean kNN-200 {} (histogram {:.3})",
            k + 1,
            queries.len(),
            specs.len() - 1,
            served
                .as_ref()
                .and_then(|n| rows[0].learned.get(n))
                .and_then(|v| v.last())
                .map_or("-".into(), |x| format!("{x:.3}")),
            rows[0].histogram.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(RobustnessReport {
        folds,
        query_cells,
        per_group: plan.per_group,
        rows,
        served,
        preprocess: pre,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The folds' configuration (from the `trainer cv` folder, else the plan's) and their count.
fn protocol_config(plan: &RobustnessPlan) -> Result<(TrainConfig, usize)> {
    Ok(match plan.cv_dir {
        Some(dir) => {
            let mut cfg = crate::train::load_config(&dir.join("fold-1"))?;
            if plan.serve_stain_anchors {
                cfg = serve_stain_anchors(cfg)?;
            }
            if let Some(trust) = plan.serve_anchor_trust {
                cfg = cfg.with_anchor_trust(Some(trust));
            }
            let folds = cfg.fold.map_or(plan.folds, |[_, n]| n);
            (cfg, folds)
        }
        None => (
            plan.cfg.clone().with_measured_reference(plan.data_dir)?,
            plan.folds,
        ),
    })
}

/// `--serve-stain-anchors` holds only where the training folder's stain shift settles to none.
fn check_no_stain_shift(pre: &Preprocess, data: &CellImages) -> Result<()> {
    let shift = pre
        .clone()
        .with_calibration(data.calibration)
        .folder_stain_shift();
    if !shift.is_some_and(|s| s.is_none()) {
        return Err(Error::Config(format!(
            "the training folder's stain shift is {shift:?}, not none: its fields would not \
             come out as the folds were trained on them; train with --colour stain-anchors"
        )));
    }
    Ok(())
}

impl ShiftRow {
    fn empty(shift: &str) -> Self {
        ShiftRow {
            shift: shift.into(),
            learned: BTreeMap::new(),
            histogram: vec![],
            flagged: vec![],
            flags: Default::default(),
            few_label: Default::default(),
        }
    }

    /// Add one fold's figures under this row's shift.
    fn push(&mut self, m: Measured) {
        for (name, x) in m.learned {
            self.learned.entry(name).or_default().push(x);
        }
        for (name, per_n) in m.few_label {
            let e = self.few_label.entry(name).or_default();
            for (n, x) in per_n {
                e.entry(n).or_default().push(x);
            }
        }
        self.histogram.push(m.histogram);
        self.flagged.push(m.flagged);
        for f in m.flags {
            *self.flags.entry(f.name().to_string()).or_default() += 1;
        }
    }
}

/// At most `n` images of each source group among `idx`, the first ones in order.
fn per_group(data: &CellImages, idx: &[usize], n: usize) -> Vec<usize> {
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    idx.iter()
        .copied()
        .filter(|&i| {
            let c = seen.entry(data.groups[i].as_str()).or_default();
            *c += 1;
            *c <= n
        })
        .collect()
}

/// A fold's clean gallery, embedded once.
struct FoldData {
    model: Option<FoldModel>,
    gallery: Option<Bases>,
    gallery_hist: Vec<f32>,
    gallery_labels: Vec<String>,
    gallery_groups: Vec<String>,
}

/// The configuration of od-anchors folds served with stain-anchors: on a folder whose stain
/// shift settles to none (the training folder, checked after loading), stain-anchors gives
/// every field exactly what od-anchors gave, so the folds' models are the models stain-anchors
/// would have trained; shifted query folders then have their folder's shift undone.
fn serve_stain_anchors(mut cfg: TrainConfig) -> Result<TrainConfig> {
    if cfg.colour != crate::train::ColourChoice::OdAnchors {
        return Err(Error::Config(format!(
            "--serve-stain-anchors needs folds trained with od-anchors, not {:?}",
            cfg.colour
        )));
    }
    cfg.colour = crate::train::ColourChoice::StainAnchors;
    Ok(cfg)
}

impl FoldData {
    fn new(data: &CellImages, train: &[usize], pre: &Preprocess, model: Option<FoldModel>) -> Self {
        let gallery = model.as_ref().map(|m| {
            let inputs: Vec<Vec<f32>> = train.iter().map(|&i| data.prepared(i, pre)).collect();
            Bases::of(m, &inputs, pre.size)
        });
        Self {
            model,
            gallery,
            gallery_hist: train
                .iter()
                .flat_map(|&i| histogram_embedding(&data.squares[i]))
                .collect(),
            gallery_labels: train.iter().map(|&i| data.labels[i].clone()).collect(),
            gallery_groups: train.iter().map(|&i| data.groups[i].clone()).collect(),
        }
    }

    /// Few-label accuracy of queries `q` (labels `labels`) from the gallery `g`'s labelled
    /// originals, for each of [`FEW_LABELS`].
    fn few_label(&self, g: &[f32], q: &[f32], labels: &[String], seed: u64) -> Vec<(usize, f64)> {
        let dim = q.len() / labels.len().max(1);
        let atlas = Labeled {
            emb: g,
            dim,
            labels: &self.gallery_labels,
            groups: Some(&self.gallery_groups),
        };
        let query = Labeled {
            emb: q,
            dim,
            labels,
            groups: None,
        };
        FEW_LABELS
            .iter()
            .map(|&n| {
                let r = few_label_accuracy(&atlas, &query, n, FEW_LABEL_DRAWS, seed);
                (n, r.accuracy)
            })
            .collect()
    }

    /// What `queries` under `spec` give (see [`Measured`]).
    fn shifted(
        &self,
        data: &CellImages,
        queries: &[usize],
        spec: &ShiftSpec,
        pre: &Preprocess,
        seed: u64,
    ) -> Result<Measured> {
        let prepared = prepare_shifted(data, queries, spec, pre)?;
        let labels: Vec<String> = queries.iter().map(|&i| data.labels[i].clone()).collect();
        let groups: Vec<String> = queries.iter().map(|&i| data.groups[i].clone()).collect();
        let score = |g: &[f32], q: &[f32]| {
            let dim = q.len() / labels.len().max(1);
            evaluate_unseen(
                g,
                &self.gallery_labels,
                q,
                &labels,
                Some(&groups),
                dim,
                seed,
            )
            .knn200_acc
        };
        let hist: Vec<f32> = prepared.iter().flat_map(|p| p.1.iter().copied()).collect();
        let mut learned = Vec::new();
        let mut few_label = vec![(
            HISTOGRAM.to_string(),
            self.few_label(&self.gallery_hist, &hist, &labels, seed),
        )];
        if let (Some(m), Some(g)) = (&self.model, &self.gallery) {
            let inputs: Vec<Vec<f32>> = prepared.iter().map(|p| p.0.clone()).collect();
            let q = Bases::of(m, &inputs, pre.size);
            let gallery = g.candidates(self.gallery_labels.len());
            for ((name, qe), (_, ge)) in q.candidates(labels.len()).into_iter().zip(gallery) {
                if qe.iter().any(|x| !x.is_finite()) {
                    return Err(Error::Data(format!(
                        "shift {}: a non-finite {name} embedding",
                        spec.name
                    )));
                }
                few_label.push((name.clone(), self.few_label(&ge, &qe, &labels, seed)));
                learned.push((name, score(&ge, &qe)));
            }
        }
        let flagged = prepared
            .iter()
            .filter(|p| p.2.iter().any(|f| f.out_of_range()))
            .count();
        Ok(Measured {
            learned,
            few_label,
            histogram: score(&self.gallery_hist, &hist),
            flagged: flagged as f64 / prepared.len().max(1) as f64,
            flags: prepared.into_iter().flat_map(|p| p.2).collect(),
        })
    }
}

/// One shifted query as the product prepares it: the model's input, the histogram of its
/// window, and the window's flags.
type Prepared = (Vec<f32>, Vec<f32>, Vec<LocateFlag>);

/// Each query image shifted, then prepared as the product prepares a folder of fields: the
/// shifted queries are one lab's folder, calibrated together ([`cellspace_core::calibration`]).
fn prepare_shifted(
    data: &CellImages,
    queries: &[usize],
    spec: &ShiftSpec,
    pre: &Preprocess,
) -> Result<Vec<Prepared>> {
    let cache = data.squares.first().map_or(2 * pre.size, |s| s.width());
    let shifted: Vec<RgbImage> = queries
        .par_iter()
        .map(|&i| -> Result<_> {
            let img = load_rgb(&data.entries[i].path)?;
            let centre = data.locations[i].as_ref().map_or(
                (img.width() as f32 / 2.0, img.height() as f32 / 2.0),
                |l| {
                    (
                        l.x as f32 + l.side as f32 / 2.0,
                        l.y as f32 + l.side as f32 / 2.0,
                    )
                },
            );
            Ok(spec.apply(&img, centre))
        })
        .collect::<Result<_>>()?;
    let calibration =
        cellspace_core::calibration::measure(pre, shifted.len(), |i| Some(shifted[i].clone()));
    let pre = &pre.clone().with_calibration(calibration);
    Ok(shifted
        .par_iter()
        .map(|img| {
            let (window, loc) = pre.window(img);
            let flags = loc.map(|l| l.flags).unwrap_or_default();
            let square = image::imageops::resize(&window, cache, cache, FilterType::Triangle);
            let input = pre.normalize(&pre.resize_window(window));
            (input, histogram_embedding(&square), flags)
        })
        .collect())
}

/// One fold under one shift: kNN-200 of every learned candidate (with a model) and of the
/// histogram, few-label accuracy of each of them, the share of fields
/// flagged out of range, and every flag raised.
struct Measured {
    learned: Vec<(String, f64)>,
    few_label: Vec<(String, Vec<(usize, f64)>)>,
    histogram: f64,
    flagged: f64,
    flags: Vec<LocateFlag>,
}

/// Mean and sample SD.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

pub use crate::robustness_table::table;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = mean_sd(&[0.5, 0.7, 0.6]);
        assert!((m - 0.6).abs() < 1e-12 && (s - 0.1).abs() < 1e-12);
        assert!(mean_sd(&[]).0.is_nan());
    }
}
