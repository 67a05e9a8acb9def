//! Pictures of a run, drawn without a plotting or font dependency: the loss / validation curve
//! and the embedding map (t-SNE of held-out embeddings coloured by class), as PNG.

use image::{Rgb, RgbImage};
use std::path::Path;

/// Distinct colours for classes and series.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);

/// 5x7 bitmap glyphs (rows top to bottom, 5 low bits each, MSB left).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [1, 1, 2, 4, 8, 16, 16],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '@' => [14, 17, 1, 13, 21, 21, 14],
        _ => [0; 7],
    }
}

/// Draw `text` with its top-left corner at (x, y), 2x scaled.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>) {
    for (k, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (16 >> col) != 0 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        put(
                            img,
                            x + (k as i64) * 12 + col * 2 + dx,
                            y + row as i64 * 2 + dy,
                            color,
                        );
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            put(img, x as i64 + dx, y as i64 + dy, c);
        }
    }
}

/// A named series of (x, y) points, drawn against its own y range.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Line chart: each series gets its own panel (stacked), with min/max labels.
pub fn line_chart(path: &Path, title: &str, series: &[Series]) -> crate::Result<()> {
    let (w, ph) = (900u32, 260u32);
    let h = 40 + ph * series.len().max(1) as u32;
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    text(&mut img, 20, 10, title, INK);
    for (k, s) in series.iter().enumerate() {
        let top = 40.0 + k as f64 * ph as f64;
        let (l, r, t, b) = (90.0, w as f64 - 30.0, top + 30.0, top + ph as f64 - 30.0);
        let color = Rgb(PALETTE[k % PALETTE.len()]);
        text(&mut img, l as i64, top as i64 + 6, &s.name, color);
        line(&mut img, (l, b), (r, b), INK);
        line(&mut img, (l, t), (l, b), INK);
        if s.points.is_empty() {
            continue;
        }
        let (xmin, xmax) = bounds(s.points.iter().map(|p| p.0));
        let (ymin, ymax) = bounds(s.points.iter().map(|p| p.1));
        text(&mut img, 4, t as i64, &format!("{ymax:.3}"), INK);
        text(&mut img, 4, b as i64 - 14, &format!("{ymin:.3}"), INK);
        text(&mut img, l as i64, b as i64 + 6, &format!("{xmin:.0}"), INK);
        text(
            &mut img,
            r as i64 - 40,
            b as i64 + 6,
            &format!("{xmax:.0}"),
            INK,
        );
        let map = |(x, y): (f64, f64)| {
            (
                l + (x - xmin) / (xmax - xmin) * (r - l),
                b - (y - ymin) / (ymax - ymin) * (b - t),
            )
        };
        for pair in s.points.windows(2) {
            line(&mut img, map(pair[0]), map(pair[1]), color);
        }
        for &p in &s.points {
            let (x, y) = map(p);
            for dx in -2..=2 {
                for dy in -2..=2 {
                    put(&mut img, x as i64 + dx, y as i64 + dy, color);
                }
            }
        }
    }
    save_png(&img, path)
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// Scatter of 2-D points coloured by label, with a legend.
pub fn scatter(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    labels: &[String],
) -> crate::Result<()> {
    let (w, h) = (900u32, 900u32);
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    text(&mut img, 20, 10, title, INK);
    let mut names: Vec<&String> = labels.iter().collect();
    names.sort();
    names.dedup();
    for (k, n) in names.iter().enumerate() {
        let c = Rgb(PALETTE[k % PALETTE.len()]);
        let y = 40 + 20 * k as i64;
        for dx in 0..12 {
            for dy in 0..12 {
                put(&mut img, 20 + dx, y + dy, c);
            }
        }
        text(&mut img, 40, y, n, INK);
    }
    let (xmin, xmax) = bounds(points.iter().map(|p| p[0] as f64));
    let (ymin, ymax) = bounds(points.iter().map(|p| p[1] as f64));
    let (l, r, t, b) = (40.0, w as f64 - 40.0, 140.0, h as f64 - 40.0);
    for (p, lab) in points.iter().zip(labels) {
        let k = names.iter().position(|n| *n == lab).unwrap_or(0);
        let c = Rgb(PALETTE[k % PALETTE.len()]);
        let x = l + (p[0] as f64 - xmin) / (xmax - xmin) * (r - l);
        let y = b - (p[1] as f64 - ymin) / (ymax - ymin) * (b - t);
        for dx in -2..=2 {
            for dy in -2..=2 {
                if dx * dx + dy * dy <= 5 {
                    put(&mut img, x as i64 + dx, y as i64 + dy, c);
                }
            }
        }
    }
    save_png(&img, path)
}

fn save_png(img: &RgbImage, path: &Path) -> crate::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| crate::Error::Data(format!("{}: cannot encode PNG: {e}", path.display())))?;
    cellspace_core::atomic::write_atomic(path, &bytes)?;
    Ok(())
}
