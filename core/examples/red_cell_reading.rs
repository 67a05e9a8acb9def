//! How much a field's red-cell reading (the colour anchor that standardisation maps to the
//! reference) rests on, and how far it moves when the same field is magnified about its white
//! cell: the figures behind `--anchor-trust` (`standardise::shrink_to_folder`).
//!
//! `cargo run --release -p cellspace-core --example red_cell_reading -- TRAIN_DIR CARD.json [EVERY]`
//!
//! For every EVERY-th image (default 66: ~150 of TRAIN): the red cells its reading averages
//! (at the card's reference scale times the magnification) and the mean |ln| change of its
//! red-cell density per channel against the unmagnified field's; medians are printed.
use cellspace_core::{card::ModelCard, field, preprocess::ResizeRule, shift};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, card, rest @ ..] = args.as_slice() else {
        return Err("usage: red_cell_reading TRAIN_DIR CARD.json [EVERY]".into());
    };
    let every: usize = rest
        .first()
        .map_or(Ok(66), |s| s.parse())
        .map_err(|e| format!("EVERY: {e}"))?;
    let text = std::fs::read_to_string(card).map_err(|e| format!("{card}: {e}"))?;
    let card: ModelCard = serde_json::from_str(&text).map_err(|e| format!("{card}: {e}"))?;
    let ResizeRule::CellWindow(cfg) = &card.preprocess.resize else {
        return Err("the card's model does not look at a cell window".into());
    };
    let rbc_px = cfg
        .rbc_band
        .map(|b| b.reference_px)
        .ok_or("the card's window is not in red-cell diameters")?;
    let (entries, _) =
        cellspace_core::dataset::list_images(root.as_ref()).map_err(|e| format!("{root}: {e}"))?;
    let specs = shift::parse("mag:1;mag:0.7;mag:1.5;mag:2")?;
    let mut cells: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
    let mut moved: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
    for e in entries.iter().step_by(every.max(1)) {
        let img = image::open(&e.path).map_err(|err| format!("{}: {err}", e.path.display()))?;
        let img = img.to_rgb8();
        let Some(loc) = card.preprocess.window(&img).1 else {
            continue;
        };
        let half = loc.side as f32 / 2.0;
        let centre = (loc.x as f32 + half, loc.y as f32 + half);
        let readings: Vec<_> = specs
            .iter()
            .map(|s| (s.scale(), field::measure(&s.apply(&img, centre))))
            .collect();
        let Some(clean) = readings[0].1.anchors else {
            continue;
        };
        for (i, (m, f)) in readings.iter().enumerate() {
            let Some(a) = f.anchors else { continue };
            let area = std::f32::consts::FRAC_PI_4 * (rbc_px * m).powi(2);
            cells[i].push(f.red_cell_share * (img.width() * img.height()) as f32 / area);
            let d: f32 = (0..3)
                .map(|c| (a.red_cells[c] / clean.red_cells[c]).ln().abs())
                .sum();
            moved[i].push(d / 3.0);
        }
    }
    println!("shift\tfields\tred cells read (median)\t|ln| change of their density (median)");
    for (i, s) in specs.iter().enumerate() {
        println!(
            "{}\t{}\t{:.1}\t{:.3}",
            s.name,
            cells[i].len(),
            field::quantile(&cells[i], 0.5),
            field::quantile(&moved[i], 0.5)
        );
    }
    Ok(())
}
