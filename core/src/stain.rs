//! A field's stain shift: the exposure, hue turn and saturation change that another lab's
//! stain batch or camera puts on every colour of a field, measured on its red cells and undone
//! before [`Method::OdAnchors`](crate::standardise::Method::OdAnchors).
//!
//! Why this is needed beside od-anchors: two anchors (background, red cells) fix three numbers
//! per field, and od-anchors spends them on per-channel density gains. That undoes a lamp and
//! an exposure exactly, but a paler stain batch or a camera's saturation setting moves every
//! colour toward grey *along its own brightest channel* (the HSV value stays), and per-channel
//! gains fitted on the pale red cells then leave the white cell's nucleus and granules pale:
//! saturation 0.6 cost the learned embedding 0.37 kNN-200 under od-anchors. Here the same
//! three numbers are read as an exposure (the red cells' density in their brightest channel,
//! which a hue turn or saturation change keeps), a hue turn and a saturation scale (the red
//! cells' HSV hue and saturation once the exposure is undone). Undoing them in that order
//! undoes a lamp (white balance on the background), a gamma, a hue turn and a saturation
//! change each exactly, and od-anchors then takes what is left.
//!
//! One field's red cells are too faint a ruler for this: their saturation is ~0.12, and on
//! single TRAIN fields the measured turn spreads over ±20°. The median anchors of a calibrated
//! folder ([`crate::calibration`], 64 fields) vary by ±4° of turn, ±6% of saturation and ±4%
//! of gamma between sets of clean fields, so the shift is a folder's: measured on its median
//! anchors and *settled* like the red-cell scale ([`crate::scale::ramp`]): within [`Band`] of
//! no shift it is none (the fields are standardised exactly as by od-anchors, as the training
//! folder's are), beyond twice the band it is undone in full, with a continuous ramp between.
//! A field alone gets none; give it its microscope's calibration (`--calibration`).

use crate::field::Anchors;
use crate::shift::{from_hsv, to_hsv};
use serde::{Deserialize, Serialize};

/// A stain shift: what turns the reference's red cells into the field's (white balance aside).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StainShift {
    /// Exposure: density about the background multiplied by this (a gamma).
    pub gamma: f32,
    /// HSV hue turn, degrees.
    pub turn: f32,
    /// HSV saturation multiplied by this.
    pub scale: f32,
}

/// How far a measured shift may lie from its centre and still be taken as the centre: per
/// component, log gamma, hue turn (degrees) and log saturation scale. Beyond twice the band a
/// shift is taken in full.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub log_gamma: f32,
    pub turn: f32,
    pub log_scale: f32,
}

impl Default for Band {
    /// Beyond what the median of 64 clean TRAIN fields varies by between sets of fields
    /// (gamma ±4%, turn ±4°, scale ±6%), and clear of what a zoomed field's fewer red cells
    /// read (mag 2: turn 8°): README.
    fn default() -> Self {
        Band {
            log_gamma: 0.05,
            turn: 6.0,
            log_scale: 0.08,
        }
    }
}

impl StainShift {
    pub const NONE: StainShift = StainShift {
        gamma: 1.0,
        turn: 0.0,
        scale: 1.0,
    };

    /// The shift from `reference`'s red cells to `field`'s; None when either is too faint to
    /// measure one (red cells within 2% of the background in their brightest channel).
    ///
    /// With the field white-balanced on its background (a lamp gone), the exposure is the
    /// ratio of the red cells' density in the reference's brightest channel (the HSV value,
    /// which a hue turn or saturation change keeps), and the turn and scale are those of the
    /// red cells' HSV hue and saturation once the exposure is undone. The plasma background of
    /// a stained smear is near grey, so an HSV change barely moves it and is not modelled there.
    pub fn measure(field: &Anchors, reference: &Anchors) -> Option<StainShift> {
        let ref_rgb = reference.red_cell_rgb();
        let v = (0..3).max_by(|&a, &b| ref_rgb[a].total_cmp(&ref_rgb[b]))?;
        let (df, dr) = (field.red_cells[v], reference.red_cells[v]);
        if dr < 0.02 || df < 0.02 || !df.is_finite() {
            return None;
        }
        let gamma = (df / dr).clamp(0.4, 2.5);
        // the field's red cells in the reference's background, the exposure undone
        let seen: [f32; 3] =
            std::array::from_fn(|c| reference.background[c] * (-field.red_cells[c] / gamma).exp());
        let (hf, sf, _) = to_hsv(seen);
        let (hr, sr, _) = to_hsv(ref_rgb);
        if sr < 1e-3 || sf < 1e-3 {
            return None;
        }
        let turn = ((hf - hr + 0.5).rem_euclid(1.0) - 0.5) * 360.0;
        Some(StainShift {
            gamma,
            turn,
            scale: (sf / sr).clamp(0.25, 4.0),
        })
    }

    /// This shift taken as `centre` where it lies within `band` of it, in full beyond twice
    /// the band, ramped between (each component on its own).
    pub fn settle(&self, centre: &StainShift, band: &Band) -> StainShift {
        let log = |x: f32, c: f32, t: f32| (c.ln() + crate::scale::ramp(x.ln() - c.ln(), t)).exp();
        StainShift {
            gamma: log(self.gamma, centre.gamma, band.log_gamma),
            turn: centre.turn + crate::scale::ramp(self.turn - centre.turn, band.turn),
            scale: log(self.scale, centre.scale, band.log_scale),
        }
    }

    /// For people: "none" or the exposure, turn and scale that are undone.
    pub fn describe(&self) -> String {
        if self.is_none() {
            return "none (within what the training fields vary by)".into();
        }
        format!(
            "gamma {:.2}, hue turn {:+.1}°, saturation x{:.2} (undone before the cell is located)",
            self.gamma, self.turn, self.scale
        )
    }

    pub fn is_none(&self) -> bool {
        *self == StainShift::NONE
    }
}

/// The shift the fields of a folder whose median anchors are `folder` are standardised by:
/// the folder's shift settled about no shift; no shift for a field alone (None), whose own
/// red cells are too faint a ruler (see the module docs).
pub fn of_folder(folder: Option<&Anchors>, reference: &Anchors, band: &Band) -> StainShift {
    folder
        .and_then(|f| StainShift::measure(f, reference))
        .map_or(StainShift::NONE, |s| s.settle(&StainShift::NONE, band))
}

/// The per-pixel map that undoes `shift` on a field (anchors `a`): the white balance on the
/// background, the exposure, then the hue turn and saturation scale (float RGB in and out);
/// and the anchors the field's red cells then have.
pub fn undoer(
    a: &Anchors,
    reference: &Anchors,
    shift: &StainShift,
) -> (impl Fn([f32; 3]) -> [f32; 3] + Sync + use<>, Anchors) {
    let bg = reference.background;
    let wb: [f32; 3] = std::array::from_fn(|c| bg[c] / a.background[c].max(1.0));
    let (turn, gamma, scale) = (-shift.turn / 360.0, shift.gamma, shift.scale);
    let map = move |p: [f32; 3]| -> [f32; 3] {
        let e: [f32; 3] = std::array::from_fn(|c| {
            let q = (p[c] * wb[c]).max(0.5);
            bg[c] * (q / bg[c]).powf(1.0 / gamma)
        });
        let (h, s, v) = to_hsv(e);
        from_hsv((h + turn).rem_euclid(1.0), (s / scale).min(1.0), v)
    };
    let rbc = map(a.red_cell_rgb());
    let anchors = Anchors {
        background: bg,
        red_cells: std::array::from_fn(|c| (bg[c].max(1.0) / rbc[c].max(1.0)).ln()),
    };
    (map, anchors)
}

/// A smear like [`crate::field::tests::typical_smear`] on a near-grey background, as a
/// stained smear's plasma is (TRAIN's median: 207, 208, 204).
#[cfg(test)]
pub(crate) fn grey_plasma_smear() -> image::RgbImage {
    crate::field::tests::field_of([212, 214, 210], [200, 150, 160], [120, 80, 200])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::measure;

    #[test]
    fn each_family_is_measured_as_itself() {
        let img = grey_plasma_smear();
        let reference = measure(&img).anchors.unwrap();
        let of = |spec: &str| {
            let s = crate::shift::parse(spec).unwrap()[0].apply(&img, (160.0, 120.0));
            StainShift::measure(&measure(&s).anchors.unwrap(), &reference).unwrap()
        };
        let none = of("jpeg:95");
        assert!((none.gamma - 1.0).abs() < 0.05, "{none:?}");
        assert!(
            none.turn.abs() < 3.0 && (none.scale - 1.0).abs() < 0.05,
            "{none:?}"
        );
        let lamp = of("lamp:1.1,1,0.9");
        assert!(
            (lamp.gamma - 1.0).abs() < 0.06 && lamp.turn.abs() < 3.0,
            "{lamp:?}"
        );
        assert!((lamp.scale - 1.0).abs() < 0.08, "{lamp:?}");
        let pale = of("sat:0.6");
        // the background's red moves a little toward its green (the HSV change of the
        // plasma, not modelled), which is 10% of the red cells' faint red density here
        assert!((pale.scale - 0.6).abs() < 0.08, "{pale:?}");
        assert!((pale.gamma - 1.0).abs() < 0.1, "{pale:?}");
        let turned = of("hue:15");
        assert!((turned.turn - 15.0).abs() < 3.0, "{turned:?}");
        let dark = of("gamma:1.4");
        assert!((dark.gamma - 1.4).abs() < 0.1, "{dark:?}");
        assert!((dark.scale - 1.0).abs() < 0.1, "{dark:?}");
    }

    #[test]
    fn small_shifts_settle_to_none_and_large_ones_are_taken_in_full() {
        let band = Band::default();
        let small = StainShift {
            gamma: 1.04,
            turn: 3.0,
            scale: 0.95,
        };
        assert!(small.settle(&StainShift::NONE, &band).is_none());
        let pale = StainShift {
            gamma: 1.0,
            turn: 0.0,
            scale: 0.6,
        };
        assert_eq!(pale.settle(&StainShift::NONE, &band), pale);
        // just past the band: a little of it, continuously
        let past = StainShift {
            scale: 0.91,
            ..pale
        }
        .settle(&StainShift::NONE, &band);
        assert!(past.scale < 1.0 && past.scale > 0.91, "{past:?}");
        // a field alone, or a folder that cannot be measured: no shift
        let img = grey_plasma_smear();
        let reference = crate::field::measure(&img).anchors.unwrap();
        assert!(of_folder(None, &reference, &band).is_none());
        let pale_field = crate::shift::parse("sat:0.6").unwrap()[0].apply(&img, (160.0, 120.0));
        let folder = crate::field::measure(&pale_field).anchors.unwrap();
        assert!((of_folder(Some(&folder), &reference, &band).scale - 0.6).abs() < 0.08);
    }
}
