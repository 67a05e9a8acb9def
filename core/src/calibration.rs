//! A microscope's red-cell scale, measured on many of its fields at once.
//!
//! One field's red-cell diameter is noisy: between copies of one cell it varies by a median 3%
//! and a 90th percentile of ~20%, more in a crowded field or a zoomed one with few red cells,
//! and a window that follows that noise shows the model a cell at the wrong size. The fields of
//! one folder nearly always come from one microscope, so their median is the microscope's
//! scale, to a percent or two; each field's window is then sized by that median, a field whose
//! own scale cannot be measured (few red cells at a high power) still gets the folder's, and
//! one whose own reading lies far from it is flagged `scale-unlike-folder` (a field from
//! another objective belongs in its own folder). This is what a lab does when it calibrates a microscope once, done for them.
//!
//! The fields measured are spread evenly over the folder's sorted listing, so every shard of
//! a sharded run measures the same fields and gets the same calibration.

use crate::field::Anchors;
use crate::preprocess::Preprocess;
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Fields measured for a calibration.
pub const SAMPLE: usize = 64;
/// Fewest fields with a measured scale for a calibration; a folder with fewer is measured
/// field by field.
pub const MIN_MEASURED: usize = 8;

/// The median red-cell scale of a folder's fields.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Median red-cell diameter of the measured fields, px.
    pub rbc_px: f32,
    /// Fields looked at, and how many of them had a measurable scale.
    pub fields: usize,
    pub measured: usize,
    /// Median colour anchors of the fields whose anchors were measured: what a field whose
    /// own cannot be trusted is standardised by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchors: Option<Anchors>,
}

/// Up to `n` indices spread evenly over `0..len`, in order.
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let step = len as f64 / n as f64;
    (0..n).map(|i| (i as f64 * step) as usize).collect()
}

/// The calibration of `len` fields (decoded lazily by `load`, in parallel, up to [`SAMPLE`]
/// of them spread over the list) as `pre` measures a field's scale; None when the model's
/// window is not in red-cell diameters or fewer than [`MIN_MEASURED`] fields have a scale.
pub fn measure<F>(pre: &Preprocess, len: usize, load: F) -> Option<Calibration>
where
    F: Fn(usize) -> Option<RgbImage> + Sync,
{
    let picked = spread(len, SAMPLE);
    let measured: Vec<(Option<Anchors>, Option<f32>)> = picked
        .par_iter()
        .map(|&i| load(i).map_or((None, None), |img| pre.field_measures(&img)))
        .collect();
    let scales: Vec<Option<f32>> = measured.iter().map(|m| m.1).collect();
    let anchors: Vec<Anchors> = measured.iter().filter_map(|m| m.0).collect();
    let mut c = of_scales(&scales)?;
    if anchors.len() >= MIN_MEASURED {
        let med = |f: &dyn Fn(&Anchors) -> f32| {
            crate::field::quantile(&anchors.iter().map(f).collect::<Vec<_>>(), 0.5)
        };
        c.anchors = Some(Anchors {
            background: std::array::from_fn(|k| med(&|a| a.background[k])),
            red_cells: std::array::from_fn(|k| med(&|a| a.red_cells[k])),
        });
    }
    Some(c)
}

/// A microscope's calibration saved earlier: the `embed.json` that `runtime embed` wrote for
/// a folder of its fields (its `calibration`), or that object alone. Single images are then
/// sized and standardised as that folder's fields were (`--calibration` of `runtime` and
/// `index`).
pub fn load(path: &std::path::Path) -> crate::Result<Calibration> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| crate::Error::invalid(path, e.to_string()))?;
    let object = match value.get("calibration") {
        Some(c) if !c.is_null() => c.clone(),
        Some(_) => {
            return Err(crate::Error::invalid(
                path,
                "this folder was embedded without a calibration (too few fields with a \
                 measurable red-cell scale, or with --pixel-size)",
            ));
        }
        None => value,
    };
    let c: Calibration = serde_json::from_value(object).map_err(|e| {
        crate::Error::invalid(path, format!("not a calibration or an embed.json: {e}"))
    })?;
    if !(c.rbc_px.is_finite() && c.rbc_px > 0.0) {
        return Err(crate::Error::invalid(
            path,
            format!("red-cell diameter {} px is not a positive number", c.rbc_px),
        ));
    }
    Ok(c)
}

/// The calibration of fields whose own scales are `scales` (None: not measured).
pub fn of_scales(scales: &[Option<f32>]) -> Option<Calibration> {
    let mut ok: Vec<f32> = scales.iter().flatten().copied().collect();
    if ok.len() < MIN_MEASURED {
        return None;
    }
    ok.sort_by(f32::total_cmp);
    Some(Calibration {
        rbc_px: crate::field::quantile(&ok, 0.5),
        fields: scales.len(),
        measured: ok.len(),
        anchors: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::tests::smear;
    use crate::locate::{LocateConfig, LocateFlag};
    use crate::preprocess::ResizeRule;
    use crate::scale::Band;

    /// A model whose window is 2.33 red-cell diameters, with the training band about 48 px.
    fn red_cell_model() -> (Preprocess, LocateConfig) {
        let cfg = LocateConfig {
            window_rbc: Some(2.33),
            rbc_band: Some(Band {
                reference_px: 48.0,
                ratio: 1.2,
            }),
            ..LocateConfig::default()
        };
        let pre = Preprocess::blood_cells_with(16, ResizeRule::CellWindow(cfg.clone()));
        (pre, cfg)
    }

    /// A pixel size in the wrong unit (or a damaged calibration) asked for a window of
    /// u32::MAX px, and cutting it panicked (or tried to allocate terabytes): the window is now
    /// capped at a few fields, and the field flagged.
    #[test]
    fn a_scale_far_off_is_flagged_and_its_window_capped() {
        let (_, mut cfg) = red_cell_model();
        // the accepted scales, as every card records them
        cfg.rbc_px_range = Some([24.0, 96.0]);
        let pre = Preprocess::blood_cells_with(16, ResizeRule::CellWindow(cfg.clone()));
        let img = field(true);
        let far = [
            pre.clone().with_pixel_size(Some(1e-30)),
            pre.clone().with_calibration(Some(folder(1e6, None))),
        ];
        for p in far {
            let (window, loc) = p.window(&img);
            let side = loc.expect("a cell window").side;
            assert!(side <= 4 * 320, "{side}");
            assert_eq!(window.width(), side);
            let flags = p.field_view(&img, &cfg).flags;
            assert!(flags.contains(&LocateFlag::ScaleOutOfRange), "{flags:?}");
        }
    }

    /// A 320x240 smear with one white cell, with 30 px red cells or none.
    fn field(red_cells: bool) -> RgbImage {
        let rbc = if red_cells {
            [200, 150, 160]
        } else {
            [215, 218, 222]
        };
        smear(320, 240, 30.0, [215, 218, 222], rbc, [90, 40, 160])
    }

    /// [`red_cell_model`] standardising by od-anchors with `scope`, and its reference.
    fn od_anchor_model(
        scope: crate::standardise::AnchorScope,
    ) -> (Preprocess, LocateConfig, Anchors) {
        let (mut pre, cfg) = red_cell_model();
        let reference = Anchors {
            background: [215.0, 218.0, 222.0],
            red_cells: [0.07, 0.37, 0.33],
        };
        pre.colour = Some(crate::standardise::ColourStandard {
            method: crate::standardise::Method::OdAnchors { reference },
            gain_range: [0.5, 2.0],
            scope,
            trust_cells: 0.0,
        });
        (pre, cfg, reference)
    }

    /// A field under a warmer lamp than the reference's, with paler red cells than the folder
    /// the tests give it, and its own anchors.
    fn pale_field() -> (RgbImage, Anchors) {
        let pale = smear(
            320,
            240,
            30.0,
            [226, 214, 200],
            [205, 175, 180],
            [90, 40, 160],
        );
        let own = crate::field::measure(&pale)
            .anchors
            .expect("its own anchors");
        (pale, own)
    }

    /// A folder calibration of 64 fields at `rbc_px`.
    fn folder(rbc_px: f32, anchors: Option<Anchors>) -> Calibration {
        Calibration {
            rbc_px,
            fields: 64,
            measured: 64,
            anchors,
        }
    }

    #[test]
    fn a_calibrated_folder_sizes_windows_by_its_median_and_flags_a_field_far_from_it() {
        let (pre, cfg) = red_cell_model();
        let img = field(true);
        let own = pre.field_scale(&img).expect("measured");
        let view = |c: Option<f32>| {
            let cal = c.map(|rbc_px| folder(rbc_px, None));
            pre.clone().with_calibration(cal).field_view(&img, &cfg)
        };
        // near the folder's median: the median, no flag
        let near = view(Some(own * 1.12));
        assert_eq!(near.rbc_px, Some(own * 1.12));
        assert!(!near.flags.contains(&LocateFlag::ScaleUnlikeFolder));
        // a field reading 2.5x off its folder's: still the folder's (such readings were
        // nearly all noise), and flagged
        for ratio in [2.5, 0.4] {
            let far = view(Some(own * ratio));
            assert_eq!(far.rbc_px, Some(own * ratio), "{ratio}");
            assert!(
                far.flags.contains(&LocateFlag::ScaleUnlikeFolder),
                "{ratio}"
            );
        }
        // no calibration: the field's own against the training band (48 px)
        let alone = view(None);
        assert_eq!(
            alone.rbc_px,
            Some(
                Band {
                    reference_px: 48.0,
                    ratio: 1.2
                }
                .settle(own)
            )
        );
    }

    /// In a calibrated folder, a field whose own red cells read far outside the model's range
    /// (blur and half resolution did that to 13% of one protocol set) was sized by its own
    /// wrong reading; it takes the folder's now, and stays flagged.
    #[test]
    fn a_field_measured_out_of_range_in_a_calibrated_folder_takes_the_folder_s_scale() {
        let (pre, mut cfg) = red_cell_model();
        let img = field(true);
        let own = pre.field_scale(&img).expect("measured");
        cfg.rbc_px_range = Some([own * 1.5, own * 4.0]);
        let mut pre = pre;
        if let crate::preprocess::ResizeRule::CellWindow(c) = &mut pre.resize {
            *c = cfg.clone();
        }
        let cal = folder(own * 2.0, None);
        let view = pre.with_calibration(Some(cal)).field_view(&img, &cfg);
        assert_eq!(view.rbc_px, Some(own * 2.0));
        assert!(
            view.flags.contains(&LocateFlag::ScaleOutOfRange),
            "{:?}",
            view.flags
        );
    }

    #[test]
    fn a_field_without_a_scale_of_its_own_takes_the_folder_s() {
        let (pre, cfg) = red_cell_model();
        // plasma and one white cell, no red cells
        let img = field(false);
        let alone = pre.field_view(&img, &cfg);
        assert_eq!(alone.rbc_px, None);
        assert!(
            alone.flags.contains(&LocateFlag::NoScale),
            "{:?}",
            alone.flags
        );
        let cal = folder(50.0, None);
        let calibrated = pre
            .clone()
            .with_calibration(Some(cal))
            .field_view(&img, &cfg);
        assert_eq!(calibrated.rbc_px, Some(50.0));
        assert!(!calibrated.flags.contains(&LocateFlag::NoScale));
    }

    #[test]
    fn a_field_whose_colour_cannot_be_trusted_is_standardised_by_its_folder() {
        let (pre, cfg, reference) = od_anchor_model(Default::default());
        // plasma and one white cell, no red cells: no anchors of its own
        let img = field(false);
        let alone = pre.field_view(&img, &cfg);
        let own_colour_problem =
            |f: &LocateFlag| matches!(f, LocateFlag::NoRedCells | LocateFlag::NoBackground);
        assert!(
            alone.flags.iter().any(own_colour_problem),
            "{:?}",
            alone.flags
        );
        let cal = folder(40.0, Some(reference));
        let calibrated = pre
            .clone()
            .with_calibration(Some(cal))
            .field_view(&img, &cfg);
        assert!(calibrated.flags.is_empty(), "{:?}", calibrated.flags);
        assert_eq!(calibrated.rbc_px, Some(40.0));
    }

    #[test]
    fn under_the_folder_scope_every_field_takes_the_folder_s_anchors() {
        let (pre, cfg, _) = od_anchor_model(crate::standardise::AnchorScope::Folder);
        // one folder, one lamp: a field's red cells are paler than the folder's median
        let (pale, own) = pale_field();
        let folder_anchors = crate::field::Anchors {
            background: own.background,
            red_cells: own.red_cells.map(|d| d * 1.4),
        };
        let cal = folder(30.0, Some(folder_anchors));
        let at = |p: &Preprocess| {
            p.clone()
                .with_calibration(Some(cal))
                .field_view(&pale, &cfg)
        };
        let by_folder = at(&pre);
        let mut field_scope = pre.clone();
        field_scope.colour.as_mut().unwrap().scope = Default::default();
        let by_own = at(&field_scope);
        // the folder's denser red cells get a smaller gain: the pale field stays paler
        let green_density = |v: &crate::preprocess::FieldView| {
            crate::field::measure(&v.image).anchors.unwrap().red_cells[1]
        };
        assert!(
            green_density(&by_folder) < 0.9 * green_density(&by_own),
            "{} vs {}",
            green_density(&by_folder),
            green_density(&by_own)
        );
        // a field alone has no folder: its own anchors, as under the field scope
        let alone = pre.field_view(&pale, &cfg).image;
        assert_eq!(alone, field_scope.field_view(&pale, &cfg).image);
    }

    #[test]
    fn a_field_reading_few_red_cells_is_pulled_toward_its_folder_s_anchors() {
        let (mut pre, cfg, _) = od_anchor_model(Default::default());
        let (pale, own) = pale_field();
        let folder_anchors = crate::field::Anchors {
            background: own.background,
            red_cells: own.red_cells.map(|d| d * 1.4),
        };
        let green_at = |p: &Preprocess, rbc_px: f32| {
            let cal = folder(rbc_px, Some(folder_anchors));
            let v = p
                .clone()
                .with_calibration(Some(cal))
                .field_view(&pale, &cfg);
            crate::field::measure(&v.image).anchors.unwrap().red_cells[1]
        };
        let by_own = green_at(&pre, 30.0);
        let mut by_folder = pre.clone();
        by_folder.colour.as_mut().unwrap().scope = crate::standardise::AnchorScope::Folder;
        let by_folder = green_at(&by_folder, 30.0);
        assert!(by_folder < 0.9 * by_own, "{by_folder} vs {by_own}");
        pre.colour.as_mut().unwrap().trust_cells = 8.0;
        // at the folder's scale of 30 px the field holds dozens of red cells: its own reading
        let many = green_at(&pre, 30.0);
        assert_eq!(many, by_own);
        // read as if its red cells were 4x wider (a 4x magnified folder): a few, so mostly
        // the folder's
        let few = green_at(&pre, 120.0);
        let share = |g: f32| (by_own - g) / (by_own - by_folder);
        assert!(
            share(many) < 0.25,
            "many red cells: {:.2} of the way",
            share(many)
        );
        assert!(
            share(few) > 0.4,
            "few red cells: {:.2} of the way",
            share(few)
        );
        assert!(
            share(few) < 1.0,
            "never past the folder's: {:.2}",
            share(few)
        );
        // a field alone has no folder to be pulled to
        let mut field_only = pre.clone();
        field_only.colour.as_mut().unwrap().trust_cells = 0.0;
        assert_eq!(
            pre.field_view(&pale, &cfg).image,
            field_only.field_view(&pale, &cfg).image
        );
    }

    #[test]
    fn under_the_folder_stain_scope_a_field_keeps_its_own_background() {
        use crate::standardise::AnchorScope;
        let (pre, cfg, reference) = od_anchor_model(AnchorScope::FolderStain);
        let (pale, own) = pale_field();
        // the folder's median: a dimmer lamp (its background) and a denser stain (its red cells)
        let folder_anchors = crate::field::Anchors {
            background: own.background.map(|b| 0.93 * b),
            red_cells: own.red_cells.map(|d| d * 1.4),
        };
        let cal = folder(30.0, Some(folder_anchors));
        let at = |scope: AnchorScope| {
            let mut p = pre.clone();
            p.colour.as_mut().unwrap().scope = scope;
            let image = p.with_calibration(Some(cal)).field_view(&pale, &cfg).image;
            crate::field::measure(&image).anchors.unwrap()
        };
        let (mixed, by_folder, by_own) = (
            at(AnchorScope::FolderStain),
            at(AnchorScope::Folder),
            at(AnchorScope::Field),
        );
        let off = |a: &crate::field::Anchors| {
            (0..3)
                .map(|c| (a.background[c] - reference.background[c]).abs())
                .fold(0.0, f32::max)
        };
        // the field's own lamp is undone: its background lands on the reference's, as under
        // the field scope, and not where the folder's dimmer lamp would put it
        assert!(off(&mixed) < 3.0, "{:?}", mixed.background);
        assert!(off(&by_own) < 3.0, "{:?}", by_own.background);
        assert!(off(&by_folder) > 10.0, "{:?}", by_folder.background);
        // the folder's denser stain decides the red cells' gain, as under the folder scope
        let green = |a: &crate::field::Anchors| a.red_cells[1];
        assert!(
            green(&mixed) < 0.9 * green(&by_own),
            "{} vs {}",
            green(&mixed),
            green(&by_own)
        );
        // a field alone has no folder: its own anchors, as under the field scope
        let mut field_scope = pre.clone();
        field_scope.colour.as_mut().unwrap().scope = AnchorScope::Field;
        assert_eq!(
            pre.field_view(&pale, &cfg).image,
            field_scope.field_view(&pale, &cfg).image
        );
    }

    #[test]
    fn a_folder_is_calibrated_on_its_fields() {
        let (pre, _) = red_cell_model();
        let fields: Vec<RgbImage> = (0..12)
            .map(|i| {
                let d = if i == 5 { 70.0 } else { 30.0 };
                smear(320, 240, d, [215, 218, 222], [200, 150, 160], [90, 40, 160])
            })
            .collect();
        let c = measure(&pre, fields.len(), |i| Some(fields[i].clone())).expect("calibrated");
        let typical = pre.field_scale(&fields[0]).unwrap();
        assert_eq!((c.fields, c.measured), (12, 12));
        assert!(c.anchors.is_some(), "the folder's colour anchors");
        assert!(
            (c.rbc_px / typical - 1.0).abs() < 0.02,
            "{} vs {typical}",
            c.rbc_px
        );
        assert!(
            measure(&pre, 3, |i| Some(fields[i].clone())).is_none(),
            "3 fields"
        );
    }

    #[test]
    fn the_median_of_enough_measured_fields() {
        let mut s: Vec<Option<f32>> = (0..9).map(|i| Some(40.0 + i as f32)).collect();
        s.push(None);
        s.push(Some(200.0)); // one field far off moves the median by one rank only
        let c = of_scales(&s).expect("calibrated");
        assert_eq!((c.fields, c.measured), (11, 10));
        assert!((c.rbc_px - 44.5).abs() < 0.6, "{}", c.rbc_px);
        assert!(
            of_scales(&[Some(48.0); 7]).is_none(),
            "7 fields are too few"
        );
    }

    #[test]
    fn a_saved_calibration_loads_from_an_embed_json_or_alone_and_bad_ones_say_why() {
        let dir = std::env::temp_dir().join(format!("cal-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = folder(47.5, None);
        let alone = dir.join("cal.json");
        std::fs::write(&alone, serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(load(&alone).unwrap(), c);
        let embed = dir.join("embed.json");
        let state = serde_json::json!({"root": "/x", "calibration": c});
        std::fs::write(&embed, state.to_string()).unwrap();
        assert_eq!(load(&embed).unwrap(), c);
        let none = dir.join("none.json");
        std::fs::write(&none, r#"{"root": "/x", "calibration": null}"#).unwrap();
        let e = load(&none).unwrap_err().to_string();
        assert!(
            e.contains("none.json") && e.contains("without a calibration"),
            "{e}"
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"rbc_px": -3, "fields": 1, "measured": 1}"#).unwrap();
        assert!(
            load(&bad)
                .unwrap_err()
                .to_string()
                .contains("not a positive")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spread_covers_the_list_in_order() {
        assert_eq!(spread(3, 64), vec![0, 1, 2]);
        let s = spread(1000, 4);
        assert_eq!(s, vec![0, 250, 500, 750]);
    }
}
