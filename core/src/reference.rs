//! What a model's training fields look like: the reference that colour standardisation maps
//! every field to, the red-cell scale its window is defined against, and the ranges beyond
//! which a field is flagged as out of what the model was trained and checked on.
//!
//! Measured once, by the trainer, on up to [`SAMPLE`] images spread over the training folder
//! (no labels), and stored in the run's configuration and the model card, so the runtime needs
//! no training data.

use crate::field::{self, Anchors};
use crate::standardise::{LabStats, lab_stats, od_gain};
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Images measured for the reference.
pub const SAMPLE: usize = 512;

/// What the robustness protocol checks beyond the training fields' own spread: density gains
/// within this factor of theirs (saturation 0.6–1.4, gamma 0.7–1.4 and lamp ±15% stay well
/// inside), red cells from half to twice their size.
pub const GAIN_MARGIN: f32 = 1.8;
pub const SCALE_MARGIN: f32 = 2.0;

/// The reference of a model (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Median background and red-cell density of the training fields.
    pub anchors: Anchors,
    /// Median CIELAB statistics of their background and red cells.
    pub lab: LabStats,
    /// Density gains accepted without a flag: the training fields' 1st–99th percentile of
    /// their gains to the reference, widened by [`GAIN_MARGIN`].
    pub gain_range: [f32; 2],
    /// Median red-cell diameter of the training fields, px.
    pub rbc_px: f32,
    /// Median shorter side of the training fields in red-cell diameters.
    pub field_rbc: f32,
    /// Red-cell diameters accepted without a flag: the training fields' 1st–99th percentile,
    /// widened by [`SCALE_MARGIN`].
    pub rbc_px_range: [f32; 2],
    /// How many fields were measured, and how many of them had no anchors or no scale.
    pub fields: usize,
    pub unmeasured: usize,
}

/// One field's measurements.
struct Sample {
    anchors: Anchors,
    lab: Option<LabStats>,
    rbc: Option<f32>,
    short: f32,
}

/// Measure the reference on `images` (decoded lazily by `load`, in parallel); None when fewer
/// than 8 fields could be measured.
pub fn measure<F>(n: usize, load: F, stain_threshold: f32) -> Option<Reference>
where
    F: Fn(usize) -> Option<RgbImage> + Sync,
{
    let samples: Vec<Option<Sample>> = (0..n)
        .into_par_iter()
        .map(|i| sample(load(i)?, stain_threshold))
        .collect();
    let unmeasured = samples
        .iter()
        .filter(|s| s.as_ref().is_none_or(|s| s.rbc.is_none()))
        .count();
    let ok: Vec<Sample> = samples.into_iter().flatten().collect();
    if ok.len() < 8 {
        return None;
    }
    let med = |f: &dyn Fn(&Sample) -> Option<f32>| -> f32 {
        let v: Vec<f32> = ok.iter().filter_map(f).collect();
        field::quantile(&v, 0.5)
    };
    let anchors = Anchors {
        background: std::array::from_fn(|c| med(&|s| Some(s.anchors.background[c]))),
        red_cells: std::array::from_fn(|c| med(&|s| Some(s.anchors.red_cells[c]))),
    };
    let lab = LabStats {
        mean: std::array::from_fn(|c| med(&|s| s.lab.map(|l| l.mean[c]))),
        sd: std::array::from_fn(|c| med(&|s| s.lab.map(|l| l.sd[c]))),
    };
    let gains: Vec<f32> = ok
        .iter()
        .flat_map(|s| od_gain(&s.anchors, &anchors))
        .collect();
    let rbcs: Vec<f32> = ok.iter().filter_map(|s| s.rbc).collect();
    let fields_rbc: Vec<f32> = ok
        .iter()
        .filter_map(|s| s.rbc.map(|r| s.short / r))
        .collect();
    if rbcs.len() < 8 {
        return None;
    }
    Some(Reference {
        anchors,
        lab,
        gain_range: [
            field::quantile(&gains, 0.01) / GAIN_MARGIN,
            field::quantile(&gains, 0.99) * GAIN_MARGIN,
        ],
        rbc_px: field::quantile(&rbcs, 0.5),
        field_rbc: field::quantile(&fields_rbc, 0.5),
        rbc_px_range: [
            field::quantile(&rbcs, 0.01) / SCALE_MARGIN,
            field::quantile(&rbcs, 0.99) * SCALE_MARGIN,
        ],
        fields: n,
        unmeasured,
    })
}

fn sample(img: RgbImage, stain_threshold: f32) -> Option<Sample> {
    let colour = field::measure(&img);
    let anchors = colour.anchors?;
    let stained = |p: [u8; 3]| p[2] as f32 - p[1] as f32 > stain_threshold;
    Some(Sample {
        anchors,
        lab: lab_stats(&img, |p| !stained(p)),
        rbc: crate::scale::measure(&img, &anchors, stained).map(|s| s.diameter),
        short: img.width().min(img.height()) as f32,
    })
}
