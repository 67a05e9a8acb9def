//! The cell window on real images: the window the product looks through holds the stained
//! white cell, and the trainer and the runtime cut the same one.

mod util;

use cellspace_core::locate::{LocateFlag, crop, locate};
use cellspace_core::preprocess::{Preprocess, ResizeRule, load_rgb};

/// Pixels of the nucleus stain (blue well above green), counted independently of the locator's
/// own block grid and threshold.
fn stained(img: &image::RgbImage) -> Vec<(u32, u32)> {
    img.enumerate_pixels()
        .filter(|(_, _, p)| p.0[2] as i32 - p.0[1] as i32 > 70)
        .map(|(x, y, _)| (x, y))
        .collect()
}

#[test]
fn window_holds_the_stained_cell_on_real_images() {
    let Some(train) = util::real_data("window_holds_the_stained_cell_on_real_images") else {
        return;
    };
    let subset = util::real_subset(&train, 50, 7);
    let (entries, _) = cellspace_core::dataset::list_images(subset.path()).unwrap();
    let pre = Preprocess::blood_cells(64);
    let ResizeRule::CellWindow(cfg) = &pre.resize else {
        panic!("the default rule is the cell window")
    };
    let (mut held, mut centred, mut flagged) = (0, 0, 0);
    for e in &entries {
        let img = load_rgb(&e.path).unwrap();
        let loc = locate(&img, cfg);
        // `border` (the window reaches past the field, padded) is routine; these are not
        if loc.has(LocateFlag::NoStain) || loc.has(LocateFlag::Several) {
            flagged += 1;
        }
        let stain = stained(&img);
        assert!(!stain.is_empty(), "{}: no stain at all", e.rel);
        let inside = |&(x, y): &(u32, u32), margin: i32| {
            let (x, y) = (x as i32, y as i32);
            x >= loc.x + margin
                && y >= loc.y + margin
                && x < loc.x + loc.side as i32 - margin
                && y < loc.y + loc.side as i32 - margin
        };
        let share = stain.iter().filter(|p| inside(p, 0)).count() as f64 / stain.len() as f64;
        if share >= 0.8 {
            held += 1;
        }
        // the nucleus is near the middle: the centroid of the window's stain is within a
        // quarter side of the window's centre
        let within: Vec<&(u32, u32)> = stain.iter().filter(|p| inside(p, 0)).collect();
        let k = within.len().max(1) as f64;
        let cx = within.iter().map(|p| p.0 as f64).sum::<f64>() / k;
        let cy = within.iter().map(|p| p.1 as f64).sum::<f64>() / k;
        let half = loc.side as f64 / 2.0;
        let (dx, dy) = (cx - (loc.x as f64 + half), cy - (loc.y as f64 + half));
        if (dx * dx + dy * dy).sqrt() < loc.side as f64 / 4.0 {
            centred += 1;
        }
        // the crop the model sees is this window
        let c = crop(&img, &loc);
        assert_eq!(c.dimensions(), (loc.side, loc.side));
    }
    let n = entries.len();
    println!(
        "cell window on {n} real images: holds >= 80% of the stain in {held}, centred in {centred}, no-stain or several in {flagged}"
    );
    assert_eq!(n, 200);
    assert!(held as f64 >= 0.95 * n as f64, "held {held} of {n}");
    assert!(centred as f64 >= 0.9 * n as f64, "centred {centred} of {n}");
    assert!(
        flagged as f64 <= 0.05 * n as f64,
        "flagged {flagged} of {n}"
    );
}

#[test]
fn trainer_and_runtime_see_the_same_window() {
    let Some(train) = util::real_data("trainer_and_runtime_see_the_same_window") else {
        return;
    };
    let subset = util::real_subset(&train, 3, 11);
    let pre = Preprocess::blood_cells(32);
    let data = trainer::data::CellImages::load(subset.path(), &pre, 64, None, &()).unwrap();
    for i in 0..data.len() {
        let img = load_rgb(&data.entries[i].path).unwrap();
        let (served, loc) = pre.prepare_located(&img);
        assert_eq!(data.prepared(i, &pre), served, "{}", data.entries[i].rel);
        assert_eq!(data.locations[i], loc);
        assert!(!loc.unwrap().has(LocateFlag::NoStain));
    }
}
