//! What a field tells about its own microscope: the colour of its plasma background and of its
//! red cells, measured from the field itself.
//!
//! Every blood smear shows plasma background and red cells. A lab's lamp, camera white balance,
//! exposure and stain batch move their absolute colours every day, while the white cell's
//! colour *relative* to them is what carries its type. So the product measures both anchors per
//! field and maps them to a reference ([`crate::standardise`]) before it locates or embeds
//! anything.
//!
//! Colours are compared as optical density relative to the background (`od = ln(bg / I)` per
//! channel), the quantity a stain adds: a lamp that is 12% warmer multiplies `I` and `bg`
//! alike and leaves it unchanged, and an exposure (gamma) change scales it.
//!
//! The background is found without a threshold in absolute colour: start from the brightest
//! pixels, then alternately compute each pixel's total optical density against the current
//! background and split the field into background and tissue at Otsu's threshold of it, taking
//! the background as the median colour of the lighter side. The red cells are the median
//! optical density of the tissue, after dropping pixels whose optical density points another
//! way (the white cell's nucleus and granules).

use crate::preprocess::BLACK_THRESHOLD;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Pixels of the working image used for the statistics: a larger field is first averaged down
/// to about this many pixels (320x240), which keeps the cost per field fixed.
pub const WORK_PIXELS: u32 = 320 * 240;

/// The two colour anchors of one field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Anchors {
    /// Plasma background, 8-bit RGB.
    pub background: [f32; 3],
    /// Red cells: optical density per channel relative to the background (natural log).
    pub red_cells: [f32; 3],
}

impl Anchors {
    /// The red cells' colour as 8-bit RGB (background dimmed by their optical density).
    pub fn red_cell_rgb(&self) -> [f32; 3] {
        std::array::from_fn(|c| self.background[c] * (-self.red_cells[c]).exp())
    }
}

/// What could not be measured in a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldProblem {
    /// Too little plasma background (a packed or cropped field).
    NoBackground,
    /// Too few red cells, or none that look alike.
    NoRedCells,
}

/// A field's measured anchors, or why they could not be measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldColour {
    pub anchors: Option<Anchors>,
    pub problems: Vec<FieldProblem>,
    /// Share of the field's usable pixels that are background.
    pub background_share: f32,
    /// Share of the field's usable pixels the red-cell reading rests on (0 without one): how
    /// many red cells it averages, once the field's scale is known.
    pub red_cell_share: f32,
}

/// The working image: `img` averaged down so that it has at most [`WORK_PIXELS`] pixels, and
/// the factor it was reduced by (1 when it was small enough).
pub fn working_image(img: &RgbImage) -> (RgbImage, f32) {
    let (w, h) = img.dimensions();
    let n = w as u64 * h as u64;
    if n <= WORK_PIXELS as u64 {
        return (img.clone(), 1.0);
    }
    let f = ((n as f64 / WORK_PIXELS as f64).sqrt()).ceil() as u32;
    (box_down(img, f), f as f32)
}

/// Average `f` x `f` blocks; a block with any padding pixel stays padding.
pub(crate) fn box_down(img: &RgbImage, f: u32) -> RgbImage {
    let (w, h) = (img.width() / f, img.height() / f);
    RgbImage::from_fn(w.max(1), h.max(1), |x, y| {
        let mut acc = [0u32; 3];
        for dy in 0..f {
            for dx in 0..f {
                let p = img
                    .get_pixel(
                        (x * f + dx).min(img.width() - 1),
                        (y * f + dy).min(img.height() - 1),
                    )
                    .0;
                if is_padding(p) {
                    return image::Rgb([0, 0, 0]);
                }
                for c in 0..3 {
                    acc[c] += p[c] as u32;
                }
            }
        }
        image::Rgb(acc.map(|a| (a / (f * f)) as u8))
    })
}

/// The black corners of rotated copies and the outside of a window.
pub fn is_padding(p: [u8; 3]) -> bool {
    p.iter().all(|&c| c < BLACK_THRESHOLD)
}

/// Pixels usable for statistics: not padding, and not within 2 pixels of padding (a JPEG's
/// ringing around the black corners is neither background nor cell).
pub fn usable_mask(img: &RgbImage) -> Vec<bool> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let pad: Vec<bool> = img.pixels().map(|p| is_padding(p.0)).collect();
    let mut out = vec![true; pad.len()];
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) as usize;
            if !pad[i] {
                continue;
            }
            for dy in -2..=2 {
                for dx in -2..=2 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx >= 0 && ny >= 0 && nx < w && ny < h {
                        out[(ny * w + nx) as usize] = false;
                    }
                }
            }
        }
    }
    out
}

/// Optical density of `p` per channel against background `bg` (8-bit values, floored at 1).
pub fn optical_density(p: [u8; 3], bg: &[f32; 3]) -> [f32; 3] {
    std::array::from_fn(|c| (bg[c].max(1.0) / (p[c] as f32).max(1.0)).ln())
}

/// [`optical_density`] against one background by table lookup: the same values (the 256 of
/// each channel computed once), without a logarithm per pixel, which was a fifth of a field's
/// standardisation and ruler time.
pub struct OdTable(Box<[[f32; 256]; 3]>);

impl OdTable {
    pub fn new(bg: &[f32; 3]) -> Self {
        OdTable(Box::new(std::array::from_fn(|c| {
            std::array::from_fn(|v| optical_density([v as u8; 3], bg)[c])
        })))
    }

    pub fn od(&self, p: [u8; 3]) -> [f32; 3] {
        std::array::from_fn(|c| self.0[c][p[c] as usize])
    }
}

/// Measure the background and red-cell anchors of a field.
pub fn measure(img: &RgbImage) -> FieldColour {
    let (work, _) = working_image(img);
    let mask = usable_mask(&work);
    let px: Vec<[u8; 3]> = work
        .pixels()
        .zip(&mask)
        .filter(|(_, m)| **m)
        .map(|(p, _)| p.0)
        .collect();
    measure_pixels(&px)
}

/// [`measure`] on a list of usable pixels.
pub fn measure_pixels(px: &[[u8; 3]]) -> FieldColour {
    let failed = |problems: Vec<FieldProblem>, share: f32| FieldColour {
        anchors: None,
        problems,
        background_share: share,
        red_cell_share: 0.0,
    };
    if px.len() < 256 {
        return failed(
            vec![FieldProblem::NoBackground, FieldProblem::NoRedCells],
            0.0,
        );
    }
    let (bg, t) = background_and_cut(px);
    let table = OdTable::new(&bg);
    let od_tot: Vec<f32> = px.iter().map(|p| table.od(*p).iter().sum()).collect();
    let n_bg = od_tot.iter().filter(|&&o| o < t).count();
    let share = n_bg as f32 / px.len() as f32;
    let mean = |keep: &dyn Fn(f32) -> bool| {
        let v: Vec<f32> = od_tot.iter().copied().filter(|&o| keep(o)).collect();
        v.iter().sum::<f32>() / v.len().max(1) as f32
    };
    let contrast = mean(&|o| o >= t) - mean(&|o| o < t);
    let mut problems = Vec::new();
    // background must be a real share of the field and clearly lighter than the tissue
    if share < 0.05 || contrast < 0.15 {
        problems.push(FieldProblem::NoBackground);
    }
    let red = red_cells(px, &od_tot, t, &table);
    if red.is_none() {
        problems.push(FieldProblem::NoRedCells);
    }
    match (red, problems.is_empty()) {
        (Some((red_cells, n)), true) => FieldColour {
            anchors: Some(Anchors {
                background: bg,
                red_cells,
            }),
            problems,
            background_share: share,
            red_cell_share: n as f32 / px.len() as f32,
        },
        _ => failed(problems, share),
    }
}

/// The plasma background's colour and the optical-density cut between it and the tissue: the
/// brightest pixels first, then four rounds of an Otsu cut on the density against that
/// background and the median of what falls below it.
fn background_and_cut(px: &[[u8; 3]]) -> ([f32; 3], f32) {
    let lum: Vec<f32> = px
        .iter()
        .map(|p| p.iter().map(|&c| c as f32).sum())
        .collect();
    let bright = quantile(&lum, 0.85);
    let mut bg = channel_median(
        px.iter()
            .zip(&lum)
            .filter(|(_, l)| **l >= bright)
            .map(|(p, _)| *p),
    );
    let mut od_tot = vec![0f32; px.len()];
    let mut t = 0.0;
    for _ in 0..4 {
        let mut unstained = Vec::with_capacity(px.len());
        let table = OdTable::new(&bg);
        for (o, p) in od_tot.iter_mut().zip(px) {
            let d = table.od(*p);
            *o = d.iter().sum();
            if !nuclear_stain(&d) {
                unstained.push(*o);
            }
        }
        // split plasma from red cells, not from a nucleus that fills a zoomed field
        t = otsu(if unstained.len() * 10 >= px.len() {
            &unstained
        } else {
            &od_tot
        });
        bg = channel_median(
            px.iter()
                .zip(&od_tot)
                .filter(|(_, o)| **o < t)
                .map(|(p, _)| *p),
        );
    }
    (bg, t)
}

/// The red cells' mean optical density: the chromatic half of the tissue (density `≥ t`),
/// when it is a real share of the field and looks like haemoglobin.
fn red_cells(px: &[[u8; 3]], od_tot: &[f32], t: f32, table: &OdTable) -> Option<([f32; 3], usize)> {
    let tissue: Vec<[f32; 3]> = px
        .iter()
        .zip(od_tot)
        .filter(|(_, o)| **o >= t)
        .map(|(p, _)| table.od(*p))
        .collect();
    match red_cell_density(&tissue) {
        Some((r, n))
            if n * 50 >= px.len()
                && r.iter().sum::<f32>() > 0.1
                && r[1] >= CHROMATIC_RED_CELLS * r[0] =>
        {
            Some((r, n))
        }
        _ => None,
    }
}

/// Haemoglobin absorbs green far more than red: a field's red cells must be at least this much
/// denser in green than in red, or they are not red cells as the model knows them (a grey
/// camera gives 1.0; every TRAIN and BCCD field gives 1.75 or more, saturation 0.4 of them 1.2
/// or more, a hue turn of −20° 0.9 in 3% of them).
pub const CHROMATIC_RED_CELLS: f32 = 1.1;

/// Blue density under this share of green density is the nuclear stain, not a red cell.
const UNSTAINED_BLUE: f32 = 0.45;

/// Whether a density (against the background) is the nuclear stain's: clearly dense, with
/// blue far less absorbed than green (see [`red_cell_density`]).
fn nuclear_stain(d: &[f32; 3]) -> bool {
    d[1] > 0.15 && d[2] < UNSTAINED_BLUE * d[1]
}

/// The red cells' optical density: the median of the tissue's, re-taken twice over the pixels
/// that point the same way (cosine ≥ 0.95) and are not much denser (≤ 2.5x): a nucleus or
/// granules are denser and bluer or redder than the red cells around them. Returns the density
/// and how many pixels agreed with it.
fn red_cell_density(tissue: &[[f32; 3]]) -> Option<([f32; 3], usize)> {
    if tissue.is_empty() {
        return None;
    }
    // the first median leaves out what the nuclear stain dyes: it transmits blue, so its blue
    // density is far under its green, a red cell's is 0.6-0.95 of it (a white cell that fills a
    // zoomed field would otherwise be taken for the red cells, and a field whose tissue is
    // nine tenths stain has no red cells to measure); ratios of densities do not
    // move with a lamp or an exposure
    let unstained: Vec<[f32; 3]> = tissue
        .iter()
        .filter(|o| !nuclear_stain(o))
        .copied()
        .collect();
    if unstained.len() * 10 < tissue.len() {
        return None;
    }
    let mut r = channel_median_f(unstained.iter().copied());
    let mut n = tissue.len();
    for _ in 0..2 {
        let norm = (r.iter().map(|x| x * x).sum::<f32>()).sqrt().max(1e-6);
        let alike: Vec<[f32; 3]> = tissue
            .iter()
            .filter(|o| {
                let on = (o.iter().map(|x| x * x).sum::<f32>()).sqrt().max(1e-6);
                let cos = (0..3).map(|c| o[c] * r[c]).sum::<f32>() / (on * norm);
                cos >= 0.95 && on <= 2.5 * norm
            })
            .copied()
            .collect();
        if alike.is_empty() {
            return None;
        }
        n = alike.len();
        r = channel_median_f(alike.into_iter());
    }
    Some((r, n))
}

/// Per-channel median of 8-bit pixels (exact, by histogram).
fn channel_median(px: impl Iterator<Item = [u8; 3]>) -> [f32; 3] {
    let mut hist = [[0u32; 256]; 3];
    let mut n = 0u32;
    for p in px {
        for c in 0..3 {
            hist[c][p[c] as usize] += 1;
        }
        n += 1;
    }
    std::array::from_fn(|c| {
        let mut acc = 0;
        for (v, &k) in hist[c].iter().enumerate() {
            acc += k;
            if acc * 2 >= n.max(1) {
                return v as f32;
            }
        }
        255.0
    })
}

/// Per-channel median of float triples.
fn channel_median_f(px: impl Iterator<Item = [f32; 3]>) -> [f32; 3] {
    let mut cols: [Vec<f32>; 3] = Default::default();
    for p in px {
        for c in 0..3 {
            cols[c].push(p[c]);
        }
    }
    cols.map(|v| quantile(&v, 0.5))
}

/// The `q` quantile of `v` (nearest rank; 0 for an empty slice).
pub fn quantile(v: &[f32], q: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    let k = ((s.len() - 1) as f32 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, x, _) = s.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *x
}

/// Otsu's threshold of `v` over 256 bins between its 1st and 99th percentiles.
pub fn otsu(v: &[f32]) -> f32 {
    let (lo, hi) = (quantile(v, 0.01), quantile(v, 0.99));
    if hi <= lo {
        return lo;
    }
    let bins = 256usize;
    let width = (hi - lo) / bins as f32;
    let mut hist = vec![0f64; bins];
    for &x in v {
        let b = (((x - lo) / width) as isize).clamp(0, bins as isize - 1) as usize;
        hist[b] += 1.0;
    }
    let centre = |b: usize| lo as f64 + (b as f64 + 0.5) * width as f64;
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(b, h)| h * centre(b)).sum();
    let (mut w0, mut s0, mut best) = (0f64, 0f64, -1f64);
    let (mut first, mut last) = (0usize, 0usize);
    for (b, &h) in hist.iter().enumerate() {
        w0 += h;
        s0 += h * centre(b);
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = s0 / w0;
        let m1 = (sum_all - s0) / w1;
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best * (1.0 + 1e-9) {
            best = between;
            (first, last) = (b, b);
        } else if between >= best * (1.0 - 1e-9) {
            last = b; // a plateau (empty bins between two modes): its middle
        }
    }
    let arg = (first + last) as f64 / 2.0;
    (lo as f64 + (arg + 1.0) * width as f64) as f32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn od_table_gives_the_optical_density_bit_for_bit() {
        for bg in [
            [208.0, 208.0, 204.0],
            [0.5, 255.0, 1.0],
            [140.3, 99.9, 250.0],
        ] {
            let t = OdTable::new(&bg);
            for v in 0..=255u8 {
                let p = [v, 255 - v, v / 2];
                assert_eq!(t.od(p), optical_density(p, &bg), "{p:?} against {bg:?}");
            }
        }
    }
    use image::Rgb;

    /// The synthetic smear most tests use: 320x240, 40-px red cells, a pale plasma, pink red
    /// cells, a purple nucleus.
    pub fn typical_smear() -> RgbImage {
        field_of([215, 218, 222], [200, 150, 160], [120, 80, 200])
    }

    /// A 320x240 [`smear`] with 40-px red cells in these colours.
    pub fn field_of(bg: [u8; 3], rbc: [u8; 3], nucleus: [u8; 3]) -> RgbImage {
        smear(320, 240, 40.0, bg, rbc, nucleus)
    }

    /// A synthetic smear: plasma `bg`, red cells (discs of diameter `d`) on a grid, one purple
    /// nucleus in the middle. Colours are 8-bit RGB.
    pub fn smear(w: u32, h: u32, d: f32, bg: [u8; 3], rbc: [u8; 3], nucleus: [u8; 3]) -> RgbImage {
        let r = d / 2.0;
        let pitch = d * 1.25;
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
            if (fx - cx).powi(2) + (fy - cy).powi(2) < (0.6 * r).powi(2) {
                return Rgb(nucleus);
            }
            // a jittered grid of discs
            let (gx, gy) = ((fx / pitch).floor(), (fy / pitch).floor());
            let jitter = ((gx * 7.0 + gy * 13.0).sin() * 0.1) * pitch;
            let (ox, oy) = ((gx + 0.5) * pitch + jitter, (gy + 0.5) * pitch - jitter);
            if (fx - ox).powi(2) + (fy - oy).powi(2) < r * r {
                Rgb(rbc)
            } else {
                Rgb(bg)
            }
        })
    }

    /// A field zoomed about its white cell, whose nucleus outweighs the red cells left around
    /// it, had the nucleus taken for the red cells (mag 2 in the shift protocol).
    #[test]
    fn a_nucleus_that_fills_the_field_is_not_taken_for_the_red_cells() {
        let (rbc, nucleus) = ([200u8, 150, 160], [120u8, 80, 200]);
        let mut img = smear(320, 240, 40.0, [215, 218, 222], rbc, [215, 218, 222]);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let (dx, dy) = (x as f32 - 160.0, y as f32 - 120.0);
            if dx * dx + dy * dy < 100.0 * 100.0 {
                p.0 = nucleus;
            }
        }
        let bg = [215.0, 218.0, 222.0];
        let want = optical_density(rbc, &bg);
        let m = measure(&img);
        let a = m.anchors.unwrap_or_else(|| panic!("{m:?}"));
        for c in 0..3 {
            assert!((a.red_cells[c] - want[c]).abs() < 0.03, "{a:?} vs {want:?}");
        }
        // all nucleus, hardly a red cell: none, not the nucleus
        let mut full = img.clone();
        for (x, _, p) in full.enumerate_pixels_mut() {
            if (60..260).contains(&x) && p.0 == rbc {
                p.0 = nucleus;
            }
        }
        for (x, y, p) in full.enumerate_pixels_mut() {
            let (dx, dy) = (x as f32 - 160.0, y as f32 - 120.0);
            if dx * dx + dy * dy < 150.0 * 150.0 && p.0 != [215, 218, 222] {
                p.0 = nucleus;
            }
        }
        let f = measure(&full);
        assert!(
            f.anchors
                .is_none_or(|a| (a.red_cells[1] - want[1]).abs() < 0.03),
            "{f:?}"
        );
    }

    /// A grey field (a monochrome camera, or an unstained smear) was standardised as if its
    /// grey discs were red cells, and embedded without a word.
    #[test]
    fn grey_red_cells_are_not_red_cells() {
        let grey = field_of([215, 215, 215], [165, 165, 165], [95, 95, 95]);
        let f = measure(&grey);
        assert!(f.anchors.is_none(), "{:?}", f.anchors);
        assert!(
            f.problems.contains(&FieldProblem::NoRedCells),
            "{:?}",
            f.problems
        );
        assert!(measure(&typical_smear()).problems.is_empty());
    }

    #[test]
    fn anchors_of_a_synthetic_smear() {
        let img = typical_smear();
        let f = measure(&img);
        let a = f.anchors.expect("measured");
        for c in 0..3 {
            assert!(
                (a.background[c] - [215.0, 218.0, 222.0][c]).abs() <= 1.0,
                "{a:?}"
            );
        }
        let rgb = a.red_cell_rgb();
        for c in 0..3 {
            assert!((rgb[c] - [200.0, 150.0, 160.0][c]).abs() <= 2.0, "{rgb:?}");
        }
    }

    #[test]
    fn a_lamp_shift_moves_the_background_not_the_density() {
        let img = typical_smear();
        let warm = RgbImage::from_fn(320, 240, |x, y| {
            let p = img.get_pixel(x, y).0;
            Rgb([
                (p[0] as f32 * 1.1).min(255.0) as u8,
                p[1],
                (p[2] as f32 * 0.9) as u8,
            ])
        });
        let (a, b) = (
            measure(&img).anchors.unwrap(),
            measure(&warm).anchors.unwrap(),
        );
        assert!(
            (b.background[0] / a.background[0] - 1.1).abs() < 0.02,
            "{a:?} {b:?}"
        );
        for c in 0..3 {
            assert!(
                (a.red_cells[c] - b.red_cells[c]).abs() < 0.02,
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn fields_without_background_or_red_cells_say_so() {
        let flat = RgbImage::from_pixel(320, 240, Rgb([200, 150, 160]));
        let f = measure(&flat);
        assert!(f.anchors.is_none());
        assert!(f.problems.contains(&FieldProblem::NoBackground), "{f:?}");
        let empty = RgbImage::from_pixel(320, 240, Rgb([0, 0, 0]));
        assert!(measure(&empty).anchors.is_none());
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut v = vec![0.1f32; 500];
        v.extend(vec![0.9f32; 300]);
        let t = otsu(&v);
        assert!(t > 0.1 && t < 0.9, "{t}");
    }
}
