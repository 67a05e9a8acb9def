//! How large a red cell is in a field, in pixels: the product's ruler.
//!
//! A human red cell is about 7.5 µm across in every smear, whatever the objective, camera or
//! scan resolution, so the window around a white cell is defined in red-cell diameters, not in
//! pixels or in a fraction of the field ([`crate::locate`]). A 40x and a 100x objective then give
//! the model the same view, and a white cell's size relative to the red cells (lymphocytes are
//! small, monocytes large) stays a cue.
//!
//! The diameter comes from the scale-normalised Laplacian of Gaussian (Lindeberg): for a disc of
//! diameter `d`, `-σ²∇²G_σ * disc` at its centre peaks at `σ = d / (2√2)`. The field's total
//! optical density ([`crate::field::optical_density`]: the red cells are its most numerous
//! blobs) is blurred at geometrically spaced σ, and the mean of the squared positive response
//! over the field is the field's energy at each scale; the scale of the peak gives `d`. The
//! energy is independent of absolute colour (it is measured on optical density against the
//! field's own background) and is equivariant to magnification: a field magnified 2x peaks at
//! twice the σ. Blur and a pyramid keep it at a few milliseconds per 320x240 field.
//!
//! When the energy has no peak inside the searched range (a field without red cells, or with
//! too few to make one), the scale is not measured, and the caller says so.

use crate::field::{OdTable, usable_mask, working_image};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Smallest σ searched, in working-image pixels (a 4 px red cell).
const SIGMA_MIN: f32 = 1.5;
/// Ratio between consecutive scales.
const SIGMA_STEP: f32 = 1.06;
/// Largest σ as a fraction of the working image's shorter side (a red cell of 0.63 of it).
const SIGMA_MAX_FRACTION: f32 = 0.2;
/// Working pixels around the white cell's stain set to background (its cytoplasm): 10 was
/// best of 3, 6, 10 and a reach grown with the nucleus on 200 TRAIN and 349 BCCD fields.
const STAIN_REACH: usize = 10;
/// Level pixels of σ above which the pyramid halves the image.
const LEVEL_SIGMA: f32 = 4.0;

/// A measured red-cell diameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedCellScale {
    /// Diameter in pixels of the image that was measured.
    pub diameter: f32,
    /// Peak energy over the lower of the energies at half and at twice the peak's scale: near 1
    /// is a flat, doubtful spectrum.
    pub prominence: f32,
}

/// The red-cell diameter of a field whose plasma background is `bg` (8-bit RGB), or None when
/// no scale stands out. `stained(p)` tells the white cell's nucleus and granules, which are
/// set to background so that the one large white cell does not outweigh the red cells.
pub fn measure(
    img: &RgbImage,
    anchors: &crate::field::Anchors,
    stained: impl Fn([u8; 3]) -> bool,
) -> Option<RedCellScale> {
    let bg = &anchors.background;
    let (work, factor) = working_image(img);
    let (w, h) = (work.width() as usize, work.height() as usize);
    if w < 16 || h < 16 {
        return None;
    }
    let mask = usable_mask(&work);
    let stain: Vec<bool> = work.pixels().map(|p| stained(p.0)).collect();
    let near_stain = dilate(&stain, w, h, STAIN_REACH);
    let table = OdTable::new(bg);
    let mut od: Vec<f32> = work
        .pixels()
        .map(|p| table.od(p.0).iter().sum::<f32>().max(0.0))
        .collect();
    let usable: Vec<f32> = od
        .iter()
        .zip(&mask)
        .filter(|(_, m)| **m)
        .map(|(o, _)| *o)
        .collect();
    if usable.len() < 256 {
        return None;
    }
    let sink: Vec<bool> = (0..od.len()).map(|i| !mask[i] || near_stain[i]).collect();
    for i in 0..od.len() {
        if !mask[i] || near_stain[i] {
            od[i] = 0.0;
        }
    }
    let od = fill_depressions(&od, w, h, &sink);
    let spectrum = energy_spectrum(Plane { w, h, v: od }, &mask, w.min(h) as f32);
    peak(&spectrum).map(|(sigma, prominence)| RedCellScale {
        diameter: CALIBRATION * 2.0 * std::f32::consts::SQRT_2 * sigma * factor,
        prominence,
    })
}

/// `2√2 σ` of the energy peak is 0.78 of packed solid discs' diameter, and 0.90 of the
/// Kaggle training fields' red cells (about 48 px there, per the data's README: the median
/// of `2√2 σ` over 200 fields spread over TRAIN is 43.1 px); this factor makes the ruler
/// read those fields' 48 px. Checked, not fitted, on the 640x480 BCCD fields against their
/// hand-drawn red-cell boxes (tests/bccd.rs).
pub const CALIBRATION: f32 = 48.0 / 43.1;

/// `m` dilated by a square of radius `r`.
fn dilate(m: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut rows = vec![false; m.len()];
    for y in 0..h {
        for x in 0..w {
            if m[y * w + x] {
                for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                    rows[y * w + xx] = true;
                }
            }
        }
    }
    let mut out = vec![false; m.len()];
    for y in 0..h {
        for x in 0..w {
            if rows[y * w + x] {
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    out[yy * w + x] = true;
                }
            }
        }
    }
    out
}

/// Fill every basin not connected to the border or a `sink` (priority flood): the pale centre
/// of a red cell rises to its rim, so each cell is one solid blob of its full diameter.
fn fill_depressions(v: &[f32], w: usize, h: usize, sink: &[bool]) -> Vec<f32> {
    use std::collections::BinaryHeap;
    // lowest level first, then the highest index: one u64 per entry orders as the pair
    // (Reverse(level), index) would, with a single comparison
    let key = |x: f32, i: usize| ((u32::MAX - (x.max(0.0) * 1e4) as u32) as u64) << 32 | i as u64;
    let mut out = v.to_vec();
    let mut seen = vec![false; v.len()];
    let mut heap = BinaryHeap::with_capacity(2 * (w + h));
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if x == 0 || y == 0 || x + 1 == w || y + 1 == h || sink[i] {
                seen[i] = true;
                heap.push(key(v[i], i));
            }
        }
    }
    while let Some(k) = heap.pop() {
        let i = (k & u32::MAX as u64) as usize;
        let (x, y) = (i % w, i / w);
        let level = out[i];
        let mut visit = |j: usize| {
            if !seen[j] {
                seen[j] = true;
                out[j] = out[j].max(level);
                heap.push(key(out[j], j));
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    out
}

/// A single-channel image.
#[derive(Clone)]
struct Plane {
    w: usize,
    h: usize,
    v: Vec<f32>,
}

/// (σ in working pixels, energy) for every searched scale.
fn energy_spectrum(base: Plane, mask: &[bool], short: f32) -> Vec<(f32, f32)> {
    let sigma_max = SIGMA_MAX_FRACTION * short;
    let mut out = Vec::new();
    let mut level = base;
    let mut lmask = mask.to_vec();
    let mut scale = 1.0f32; // working pixels per level pixel
    let mut current = 0.0f32; // blur already applied, level pixels
    let mut sigma = SIGMA_MIN;
    while sigma <= sigma_max {
        while sigma / scale > LEVEL_SIGMA && level.w >= 32 && level.h >= 32 {
            lmask = halve_mask(&lmask, level.w, level.h);
            level = halve(&level);
            current = (current * current + 1.0 / 3.0).sqrt() / 2.0;
            scale *= 2.0;
        }
        let target = sigma / scale;
        if target > current {
            let extra = (target * target - current * current).sqrt();
            level = blur(&level, extra);
            current = target;
        }
        out.push((sigma, energy(&level, &lmask, target)));
        sigma *= SIGMA_STEP;
    }
    out
}

/// Mean over usable pixels of the squared positive scale-normalised Laplacian response.
fn energy(p: &Plane, mask: &[bool], sigma: f32) -> f32 {
    let (w, h) = (p.w, p.h);
    let (mut sum, mut n) = (0f64, 0u64);
    let s2 = sigma * sigma;
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            if !mask[i] {
                continue;
            }
            let lap = p.v[i - 1] + p.v[i + 1] + p.v[i - w] + p.v[i + w] - 4.0 * p.v[i];
            let r = (-s2 * lap).max(0.0);
            sum += (r * r) as f64;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// The σ of the energy's highest peak (interpolated in log σ) and its prominence; None when
/// the highest is at either end of the range (the energy still rises: no scale stands out,
/// as in a field magnified so far that it holds only a few red cells beside the white cell;
/// taking the highest local peak instead there measured 31% of such fields within 15%).
fn peak(spectrum: &[(f32, f32)]) -> Option<(f32, f32)> {
    let k = spectrum
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.1.total_cmp(&b.1.1))?
        .0;
    if k == 0 || k + 1 >= spectrum.len() || spectrum[k].1 <= 0.0 {
        return None;
    }
    let (y0, y1, y2) = (
        spectrum[k - 1].1.max(1e-30).ln(),
        spectrum[k].1.max(1e-30).ln(),
        spectrum[k + 1].1.max(1e-30).ln(),
    );
    let den = y0 - 2.0 * y1 + y2;
    let offset = if den < 0.0 {
        (0.5 * (y0 - y2) / den).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    let sigma = (spectrum[k].0.ln() + offset * SIGMA_STEP.ln()).exp();
    let at = |target: f32| {
        spectrum
            .iter()
            .min_by(|a, b| {
                (a.0 / target)
                    .ln()
                    .abs()
                    .total_cmp(&(b.0 / target).ln().abs())
            })
            .map(|s| s.1)
            .unwrap_or(0.0)
    };
    let side = at(sigma / 2.0).min(at(sigma * 2.0)).max(1e-30);
    Some((sigma, spectrum[k].1 / side))
}

/// Halve a plane by 2x2 averaging.
fn halve(p: &Plane) -> Plane {
    let (w, h) = (p.w / 2, p.h / 2);
    let mut v = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = 2 * y * p.w + 2 * x;
            v[y * w + x] = 0.25 * (p.v[i] + p.v[i + 1] + p.v[i + p.w] + p.v[i + p.w + 1]);
        }
    }
    Plane { w, h, v }
}

/// Halve a `w` x `h` mask: a level pixel is usable when all four of its pixels are.
fn halve_mask(m: &[bool], w: usize, h: usize) -> Vec<bool> {
    let (hw, hh) = (w / 2, h / 2);
    let mut out = vec![false; hw * hh];
    for y in 0..hh {
        for x in 0..hw {
            let i = 2 * y * w + 2 * x;
            out[y * hw + x] = m[i] && m[i + 1] && m[i + w] && m[i + w + 1];
        }
    }
    out
}

/// Separable Gaussian blur of standard deviation `sigma` (pixels), edges clamped.
///
/// Each tap is added to a whole row at once (a loop the compiler vectorises), with the
/// clamped edge columns apart: the same sums in the same order as the per-pixel loop
/// ([`tests::blur_matches_the_per_pixel_loop`]), at a fraction of its time (the ruler ran at
/// ~30 fields/s per core with that loop).
fn blur(p: &Plane, sigma: f32) -> Plane {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k = gaussian(sigma, r);
    let (w, h) = (p.w, p.h);
    let mut tmp = vec![0f32; p.v.len()];
    for (src, dst) in p.v.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
        for (j, &kj) in k.iter().enumerate() {
            let off = j as isize - r;
            // columns x whose tap x + off lies inside the row
            let lo = ((-off).max(0) as usize).min(w);
            let hi = ((w as isize - off).clamp(0, w as isize) as usize).max(lo);
            for d in &mut dst[..lo] {
                *d += kj * src[0];
            }
            if hi > lo {
                let from = (lo as isize + off) as usize;
                for (d, s) in dst[lo..hi].iter_mut().zip(&src[from..from + hi - lo]) {
                    *d += kj * s;
                }
            }
            for d in &mut dst[hi..] {
                *d += kj * src[w - 1];
            }
        }
    }
    let mut out = vec![0f32; p.v.len()];
    for (y, dst) in out.chunks_exact_mut(w).enumerate() {
        for (j, &kj) in k.iter().enumerate() {
            let yy = (y as isize + j as isize - r).clamp(0, h as isize - 1) as usize;
            for (d, s) in dst.iter_mut().zip(&tmp[yy * w..(yy + 1) * w]) {
                *d += kj * s;
            }
        }
    }
    Plane { w, h, v: out }
}

/// The normalised Gaussian kernel of `sigma` over `-r..=r`.
fn gaussian(sigma: f32, r: isize) -> Vec<f32> {
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f32 = k.iter().sum();
    k.iter().map(|x| x / norm).collect()
}

/// The guard against measurement noise: a field whose measured red cells are within `ratio`
/// of the training fields' (`reference_px`) is taken to be at the training magnification.
/// Between copies of one cell the measurement varies by a median 3% and a 90th percentile of
/// 19% (TRAIN), and windows that follow that noise cost the learned embedding ~0.06 kNN-200 on
/// clean cells; a real change of objective or camera (x0.5, x0.7, x1.5, x2) lies outside the
/// band and is followed in full. In between, the correction ramps up continuously.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub reference_px: f32,
    pub ratio: f32,
}

impl Band {
    /// The red-cell diameter the window is sized by, for a measured diameter `d`: the
    /// reference within the band, `d` itself beyond twice the band (in log scale), linear in
    /// log scale between.
    pub fn settle(&self, d: f32) -> f32 {
        let t = self.ratio.max(1.0).ln();
        self.reference_px * ramp((d / self.reference_px).ln(), t).exp()
    }
}

/// A deviation `x` from a centre as it is taken: none within `t`, in full beyond `2t`, linear
/// between (continuous, so a field just past the band is not moved by a jump).
pub fn ramp(x: f32, t: f32) -> f32 {
    let a = x.abs();
    let y = if a <= t {
        0.0
    } else if a < 2.0 * t {
        2.0 * (a - t)
    } else {
        a
    };
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::tests::smear;

    /// The blur as it was written first: one pixel at a time, every tap clamped.
    fn blur_per_pixel(p: &Plane, sigma: f32) -> Plane {
        let r = (3.0 * sigma).ceil().max(1.0) as isize;
        let k = gaussian(sigma, r);
        let (w, h) = (p.w as isize, p.h as isize);
        let mut tmp = vec![0f32; p.v.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (j, kj) in k.iter().enumerate() {
                    let xx = (x + j as isize - r).clamp(0, w - 1);
                    acc += kj * p.v[(y * w + xx) as usize];
                }
                tmp[(y * w + x) as usize] = acc;
            }
        }
        let mut out = vec![0f32; p.v.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (j, kj) in k.iter().enumerate() {
                    let yy = (y + j as isize - r).clamp(0, h - 1);
                    acc += kj * tmp[(yy * w + x) as usize];
                }
                out[(y * w + x) as usize] = acc;
            }
        }
        Plane {
            w: p.w,
            h: p.h,
            v: out,
        }
    }

    /// The flood as it was written first: a heap of (Reverse(level), index) pairs.
    fn fill_depressions_pairs(v: &[f32], w: usize, h: usize, sink: &[bool]) -> Vec<f32> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let key = |x: f32| Reverse((x.max(0.0) * 1e4) as u32);
        let mut out = v.to_vec();
        let mut seen = vec![false; v.len()];
        let mut heap = BinaryHeap::new();
        for i in 0..v.len() {
            let (x, y) = (i % w, i / w);
            if x == 0 || y == 0 || x + 1 == w || y + 1 == h || sink[i] {
                seen[i] = true;
                heap.push((key(v[i]), i));
            }
        }
        while let Some((_, i)) = heap.pop() {
            let (x, y) = (i % w, i / w);
            let level = out[i];
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if !seen[j] {
                    seen[j] = true;
                    out[j] = out[j].max(level);
                    heap.push((key(out[j]), j));
                }
            }
        }
        out
    }

    /// The same filled surface, ties and all, on a field of quantised-equal levels.
    #[test]
    fn flood_matches_the_pair_heap() {
        let (w, h) = (37, 23);
        let mut seed = 11u64;
        let v: Vec<f32> = (0..w * h)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 50) % 7) as f32 * 0.5 + (seed >> 40 & 0xff) as f32 * 1e-7
            })
            .collect();
        let sink: Vec<bool> = (0..w * h).map(|i| i % 97 == 0).collect();
        assert_eq!(
            fill_depressions(&v, w, h, &sink),
            fill_depressions_pairs(&v, w, h, &sink)
        );
    }

    /// Bit for bit, on planes narrower than the kernel too (every tap clamped).
    #[test]
    fn blur_matches_the_per_pixel_loop() {
        let mut seed = 7u64;
        for (w, h, sigma) in [
            (40, 30, 1.5),
            (17, 9, 4.0),
            (3, 5, 2.0),
            (1, 1, 1.0),
            (64, 2, 0.4),
        ] {
            let v: Vec<f32> = (0..w * h)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            let p = Plane { w, h, v };
            assert_eq!(
                blur(&p, sigma).v,
                blur_per_pixel(&p, sigma).v,
                "{w}x{h} σ {sigma}"
            );
        }
    }

    fn anchors(background: [f32; 3]) -> crate::field::Anchors {
        crate::field::Anchors {
            background,
            red_cells: [0.07, 0.37, 0.33],
        }
    }

    /// Packed solid discs read ~0.87 d (see [`CALIBRATION`]). What matters is that the ruler is
    /// proportional: magnification in, the same factor out.
    #[test]
    fn diameter_is_proportional_to_the_red_cells() {
        let bg = [215.0, 218.0, 222.0];
        let ratio = |w: u32, h: u32, d: f32| {
            let img = smear(w, h, d, [215, 218, 222], [200, 150, 160], [215, 218, 222]);
            measure(&img, &anchors(bg), |_| false)
                .expect("measured")
                .diameter
                / d
        };
        let base = ratio(320, 240, 40.0);
        assert!(base > 0.6 && base < 1.2, "{base}");
        for d in [20.0f32, 70.0] {
            let r = ratio(320, 240, d);
            assert!((r / base - 1.0).abs() < 0.1, "d {d}: {r} vs {base}");
        }
        // a 960x720 field is measured on its working image and answered in its own pixels
        let r = ratio(960, 720, 120.0);
        assert!((r / base - 1.0).abs() < 0.1, "large field: {r} vs {base}");
    }

    #[test]
    fn the_band_keeps_noise_out_and_follows_real_changes() {
        let b = Band {
            reference_px: 48.0,
            ratio: 1.2,
        };
        assert_eq!(b.settle(48.0), 48.0);
        assert_eq!(b.settle(52.0), 48.0);
        assert_eq!(b.settle(41.0), 48.0);
        assert!((b.settle(96.0) - 96.0).abs() < 1e-3);
        assert!((b.settle(24.0) - 24.0).abs() < 1e-3);
        // continuous and increasing across both edges
        let mut last = b.settle(10.0);
        for i in 1..400 {
            let d = 10.0 + i as f32 * 0.25;
            let v = b.settle(d);
            assert!(v >= last - 1e-4, "{d}: {v} < {last}");
            assert!(v - last < 1.0, "jump at {d}");
            last = v;
        }
    }

    #[test]
    fn a_flat_field_has_no_scale() {
        let img = RgbImage::from_pixel(320, 240, image::Rgb([215, 218, 222]));
        assert!(
            measure(&img, &anchors([215.0, 218.0, 222.0]), |_| false)
                .is_none_or(|s| s.prominence < 1.5)
        );
    }
}
