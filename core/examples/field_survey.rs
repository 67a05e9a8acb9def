//! Survey of the field measurements on real data (development aid).
use cellspace_core::{field, scale};
use std::collections::HashMap;
fn main() {
    let shared = std::path::Path::new("../shared/data");
    let mut boxes: HashMap<String, Vec<f32>> = HashMap::new();
    let text = std::fs::read_to_string(shared.join("bccd/boxes.csv")).unwrap();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        if f[1].trim() == "RBC" {
            let n = |i: usize| f[i].trim().parse::<f32>().unwrap();
            boxes
                .entry(f[0].into())
                .or_default()
                .push((n(3) - n(2) + n(5) - n(4)) / 2.0);
        }
    }
    let mut names: Vec<_> = boxes.keys().cloned().collect();
    names.sort();
    let t = std::time::Instant::now();
    let mut ratios = vec![];
    for n in &names {
        let img =
            cellspace_core::preprocess::load_rgb(&shared.join("bccd/fields").join(n)).unwrap();
        let img = if std::env::var("CUT").is_ok() {
            let loc = cellspace_core::locate::locate(&img, &Default::default());
            let (cx, cy) = (loc.x + loc.side as i32 / 2, loc.y + loc.side as i32 / 2);
            let x0 = (cx - 160).clamp(0, 320) as u32;
            let y0 = (cy - 120).clamp(0, 240) as u32;
            image::imageops::crop_imm(&img, x0, y0, 320, 240).to_image()
        } else {
            img
        };
        let c = field::measure(&img);
        let Some(a) = c.anchors else {
            println!("{n}: {:?}", c.problems);
            continue;
        };
        match scale::measure(&img, &a, |p| p[2] as i32 - p[1] as i32 > 50) {
            Some(s) => {
                let mut b = boxes[n].clone();
                b.sort_by(f32::total_cmp);
                ratios.push(s.diameter / b[b.len() / 2]);
                if std::env::var("SHOW").is_ok() && ratios.len() <= 14 {
                    println!(
                        "{n}: d {:.1} box {:.1} prom {:.2}",
                        s.diameter,
                        b[b.len() / 2],
                        s.prominence
                    );
                }
            }
            None => println!("{n}: no scale"),
        }
    }
    let per = t.elapsed().as_secs_f64() / names.len() as f64;
    ratios.sort_by(f32::total_cmp);
    let q = |p: f32| ratios[((ratios.len() - 1) as f32 * p) as usize];
    let within =
        ratios.iter().filter(|r| (**r - 1.0).abs() < 0.15).count() as f32 / ratios.len() as f32;
    let m = q(0.5);
    let within_m = ratios
        .iter()
        .filter(|r| (**r / m - 1.0).abs() < 0.15)
        .count() as f32
        / ratios.len() as f32;
    println!(
        "BCCD {} fields, {:.1} ms each: ratio median {:.3} p5 {:.3} p10 {:.3} p90 {:.3} p95 {:.3}; within 15%: {:.2}, of median {:.2}",
        ratios.len(),
        per * 1e3,
        m,
        q(0.05),
        q(0.1),
        q(0.9),
        q(0.95),
        within,
        within_m
    );
    // TRAIN: a sample
    let root = shared.join("blood-cells/TRAIN");
    let mut ds = vec![];
    for class in ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().step_by(50) {
            let img = cellspace_core::preprocess::load_rgb(f).unwrap();
            let img = match std::env::var("MAG") {
                Ok(m) => {
                    let loc = cellspace_core::locate::locate(&img, &Default::default());
                    let c = (
                        loc.x as f32 + loc.side as f32 / 2.0,
                        loc.y as f32 + loc.side as f32 / 2.0,
                    );
                    cellspace_core::shift::parse(&format!("mag:{m}")).unwrap()[0].apply(&img, c)
                }
                Err(_) => img,
            };
            let c = field::measure(&img);
            if let Some(a) = c.anchors
                && let Some(s) = scale::measure(&img, &a, |p| p[2] as i32 - p[1] as i32 > 50)
            {
                ds.push(s.diameter);
                if s.diameter > 58.0 {
                    println!(
                        "high {} {:.1} prom {:.2}",
                        f.display(),
                        s.diameter,
                        s.prominence
                    );
                }
            } else {
                ds.push(f32::NAN);
            }
        }
    }
    let nan = ds.iter().filter(|d| d.is_nan()).count();
    ds.retain(|d| !d.is_nan());
    ds.sort_by(f32::total_cmp);
    let q = |p: f32| ds[((ds.len() - 1) as f32 * p) as usize];
    let m = q(0.5);
    let within_m =
        ds.iter().filter(|r| (**r / m - 1.0).abs() < 0.15).count() as f32 / ds.len() as f32;
    println!(
        "TRAIN {} ({nan} unmeasured): median {:.1} rel p5 {:.3} p10 {:.3} p90 {:.3} p95 {:.3}; within 15% of median {:.2}",
        ds.len(),
        m,
        q(0.05) / m,
        q(0.1) / m,
        q(0.9) / m,
        q(0.95) / m,
        within_m
    );
}
