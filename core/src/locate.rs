//! Finding the white cell in a field of red cells, without labels.
//!
//! Each image of the blood-cell data is a 320x240 field: many red cells and one stained white
//! cell, often off-centre. A whole-field embedding is dominated by red cells and background; a
//! window around the stained cell is what carries the cell's type (a colour histogram of such a
//! window beats every whole-field model the project had). So both training and serving look at
//! a square window centred on the white cell's nucleus.
//!
//! The nucleus is found from its stain: Wright-Giemsa stains it purple, blue well above green
//! (`B - G` ≈ 100-150 in the nucleus; about 0-30 in red cells and background). On a coarse grid
//! of blocks (1/60 of the shorter side), blocks whose mean `B - G` passes a threshold are
//! stained; stained blocks within a few blocks of each other are one region (a neutrophil's
//! lobes are one cell); the region with the most stained blocks is the cell, and the window is
//! centred on its stain-weighted centroid. Sizes are fractions of the shorter side, so a field
//! scanned at another resolution gives the same window.
//!
//! What can go wrong is flagged, never hidden ([`LocateFlag`]): no stained region (the window
//! falls back to the field's centre), a second stained region almost as large (several cells:
//! the largest is used), a window that reaches past the field (the outside is padding), and a
//! nucleus that touches the field's edge (the cell is cut).

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// How the white cell is located and how large the window around it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocateConfig {
    /// Window side as a fraction of the image's shorter side (112 px of a 240 px field).
    pub window: f32,
    /// A block is stained when its mean `B - G` (8-bit units) exceeds this.
    pub stain_threshold: f32,
    /// Block side as a fraction of the shorter side (4 px of 240).
    pub block: f32,
    /// Stained blocks closer than this many blocks belong to one region.
    pub merge_blocks: u32,
    /// Fewest stained blocks for a region to count as a cell.
    pub min_blocks: u32,
    /// A second region with at least this fraction of the largest one's blocks flags `several`.
    pub second_ratio: f32,
    /// Window side in red-cell diameters, measured per field ([`crate::scale`]); `window` is
    /// then the fallback for a field whose scale cannot be measured (flagged `no-scale`).
    /// None (models before the physical scale): `window` for every field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_rbc: Option<f32>,
    /// Red-cell diameters (px) the model was trained and checked on; a field outside is
    /// flagged `scale-out-of-range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_px_range: Option<[f32; 2]>,
    /// Measured diameters near the training fields' are taken as theirs ([`crate::scale::Band`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_band: Option<crate::scale::Band>,
}

impl Default for LocateConfig {
    fn default() -> Self {
        Self {
            window: 112.0 / 240.0,
            stain_threshold: 50.0,
            block: 4.0 / 240.0,
            merge_blocks: 2,
            min_blocks: 8,
            second_ratio: 0.5,
            window_rbc: None,
            rbc_px_range: None,
            rbc_band: None,
        }
    }
}

/// Something about a located window that a user should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocateFlag {
    /// No stained region was found: the window is the field's centre.
    NoStain,
    /// Another stained region at least `second_ratio` as large: the largest was used.
    Several,
    /// The window reaches past the field's edge; the outside is padding.
    Border,
    /// The nucleus touches the field's edge: the cell is partly outside the image.
    Cut,
    /// Too little plasma background to standardise colour: the field's colour is absolute.
    NoBackground,
    /// No red cells to standardise colour against: the field's colour is absolute.
    NoRedCells,
    /// The red-cell scale could not be measured: the window is the fallback fraction of the
    /// field (right only at the training data's magnification).
    NoScale,
    /// The stain or lamp is further from the training fields' than the model was checked on.
    ColourOutOfRange,
    /// The red cells are smaller or larger (in pixels) than the model was checked on.
    ScaleOutOfRange,
}

impl LocateFlag {
    pub fn name(self) -> &'static str {
        match self {
            LocateFlag::NoStain => "no-stain",
            LocateFlag::Several => "several",
            LocateFlag::Border => "border",
            LocateFlag::Cut => "cut",
            LocateFlag::NoBackground => "no-background",
            LocateFlag::NoRedCells => "no-red-cells",
            LocateFlag::NoScale => "no-scale",
            LocateFlag::ColourOutOfRange => "colour-out-of-range",
            LocateFlag::ScaleOutOfRange => "scale-out-of-range",
        }
    }

    /// Every flag, in the order summaries list them.
    pub const ALL: [LocateFlag; 9] = [
        LocateFlag::NoStain,
        LocateFlag::Several,
        LocateFlag::Border,
        LocateFlag::Cut,
        LocateFlag::NoBackground,
        LocateFlag::NoRedCells,
        LocateFlag::NoScale,
        LocateFlag::ColourOutOfRange,
        LocateFlag::ScaleOutOfRange,
    ];

    /// Flags that say the field is unlike what the model was trained on: its answer may be
    /// wrong without looking wrong.
    pub fn out_of_range(self) -> bool {
        matches!(
            self,
            LocateFlag::NoBackground
                | LocateFlag::NoRedCells
                | LocateFlag::NoScale
                | LocateFlag::ColourOutOfRange
                | LocateFlag::ScaleOutOfRange
        )
    }
}

/// Where the window of one image is, in source pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Top-left corner of the square window (may be negative: past the field's edge).
    pub x: i32,
    pub y: i32,
    /// Window side in pixels.
    pub side: u32,
    /// Stained area of the chosen region, in source pixels (0 with `no-stain`).
    pub stain_px: u32,
    /// Red-cell diameter measured in this field, px (absent: not measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbc_px: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<LocateFlag>,
}

impl Location {
    pub fn has(&self, f: LocateFlag) -> bool {
        self.flags.contains(&f)
    }

    /// What to tell a user whose field carries out-of-range flags; None when it has none.
    pub fn out_of_range_warning(&self) -> Option<String> {
        let flags: Vec<&str> = self
            .flags
            .iter()
            .filter(|f| f.out_of_range())
            .map(|f| f.name())
            .collect();
        (!flags.is_empty()).then(|| {
            format!(
                "this field is outside what the model was trained and checked on ({}): treat its neighbours with care",
                flags.join(", ")
            )
        })
    }
}

/// Padding threshold: pixels whose every channel is below it are the black corners of the
/// dataset's rotated copies (same rule as the preprocessing).
const BLACK: u8 = crate::preprocess::BLACK_THRESHOLD;

/// Locate the white cell of `img` and the window around it, `cfg.window` of its shorter side.
pub fn locate(img: &RgbImage, cfg: &LocateConfig) -> Location {
    let short = img.width().min(img.height()).max(1) as f32;
    locate_sized(img, cfg, ((cfg.window * short).round() as u32).max(1))
}

/// [`locate`] with a window of `side` pixels; the stain blocks keep their size relative to the
/// window (`cfg.block / cfg.window` of it), so a field at another magnification is searched
/// at the same detail.
pub fn locate_sized(img: &RgbImage, cfg: &LocateConfig, side: u32) -> Location {
    let (w, h) = img.dimensions();
    let side = side.max(1);
    let block = ((side as f32 * cfg.block / cfg.window).round() as u32).clamp(1, w.min(h).max(1));
    let (gw, gh) = (w / block, h / block);
    let mut score = vec![f32::NEG_INFINITY; (gw * gh) as usize];
    for by in 0..gh {
        for bx in 0..gw {
            let (mut s, mut n) = (0f32, 0u32);
            for y in by * block..(by + 1) * block {
                for x in bx * block..(bx + 1) * block {
                    let p = img.get_pixel(x, y).0;
                    if p.iter().all(|&c| c < BLACK) {
                        continue;
                    }
                    s += p[2] as f32 - p[1] as f32;
                    n += 1;
                }
            }
            // a block that is mostly padding is never stained
            if n * 2 > block * block {
                score[(by * gw + bx) as usize] = s / n as f32;
            }
        }
    }
    let stained: Vec<bool> = score.iter().map(|&s| s > cfg.stain_threshold).collect();
    let regions = regions(
        &stained,
        gw as usize,
        gh as usize,
        cfg.merge_blocks as usize,
    );
    let mut flags = Vec::new();
    let best = regions.first().filter(|r| r.len() as u32 >= cfg.min_blocks);
    let (cx, cy, stain_px) = match best {
        None => {
            flags.push(LocateFlag::NoStain);
            (w as f32 / 2.0, h as f32 / 2.0, 0)
        }
        Some(r) => {
            if regions
                .get(1)
                .is_some_and(|s| s.len() as f32 >= cfg.second_ratio * r.len() as f32)
            {
                flags.push(LocateFlag::Several);
            }
            let (mut sx, mut sy, mut sw) = (0f64, 0f64, 0f64);
            let mut touches = false;
            for &i in r {
                let (bx, by) = ((i % gw as usize) as u32, (i / gw as usize) as u32);
                let wgt = (score[i] - cfg.stain_threshold) as f64;
                sx += wgt * ((bx * block) as f64 + block as f64 / 2.0);
                sy += wgt * ((by * block) as f64 + block as f64 / 2.0);
                sw += wgt;
                touches |= bx == 0 || by == 0 || bx + 1 == gw || by + 1 == gh;
            }
            if touches {
                flags.push(LocateFlag::Cut);
            }
            let area = r.len() as u32 * block * block;
            ((sx / sw) as f32, (sy / sw) as f32, area)
        }
    };
    let x = (cx - side as f32 / 2.0).round() as i32;
    let y = (cy - side as f32 / 2.0).round() as i32;
    if x < 0 || y < 0 || x + side as i32 > w as i32 || y + side as i32 > h as i32 {
        flags.push(LocateFlag::Border);
    }
    Location {
        x,
        y,
        side,
        stain_px,
        rbc_px: None,
        flags,
    }
}

/// The window of `loc` cut out of `img`; pixels outside the image are black (padding, which
/// the preprocessing and the histogram ignore).
pub fn crop(img: &RgbImage, loc: &Location) -> RgbImage {
    let (w, h) = (img.width() as i32, img.height() as i32);
    RgbImage::from_fn(loc.side, loc.side, |u, v| {
        let (x, y) = (loc.x + u as i32, loc.y + v as i32);
        if x < 0 || y < 0 || x >= w || y >= h {
            image::Rgb([0, 0, 0])
        } else {
            *img.get_pixel(x as u32, y as u32)
        }
    })
}

/// Connected regions of `mask` (a `gw` x `gh` grid) where cells within `reach` (Chebyshev
/// distance) are connected; each region is its stained cells' indices, largest first.
fn regions(mask: &[bool], gw: usize, gh: usize, reach: usize) -> Vec<Vec<usize>> {
    let mut label = vec![usize::MAX; mask.len()];
    let mut out: Vec<Vec<usize>> = Vec::new();
    let r = reach.max(1) as isize;
    for start in 0..mask.len() {
        if !mask[start] || label[start] != usize::MAX {
            continue;
        }
        let id = out.len();
        let mut members = vec![start];
        label[start] = id;
        let mut next = 0;
        while next < members.len() {
            let i = members[next];
            next += 1;
            let (x, y) = ((i % gw) as isize, (i / gw) as isize);
            for dy in -r..=r {
                for dx in -r..=r {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= gw as isize || ny >= gh as isize {
                        continue;
                    }
                    let j = ny as usize * gw + nx as usize;
                    if mask[j] && label[j] == usize::MAX {
                        label[j] = id;
                        members.push(j);
                    }
                }
            }
        }
        out.push(members);
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const RED_CELL: Rgb<u8> = Rgb([200, 150, 160]);
    const NUCLEUS: Rgb<u8> = Rgb([130, 90, 230]);

    fn field(w: u32, h: u32, blobs: &[(u32, u32, u32)]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let inside = blobs.iter().any(|&(cx, cy, r)| {
                let (dx, dy) = (x as i64 - cx as i64, y as i64 - cy as i64);
                dx * dx + dy * dy <= (r * r) as i64
            });
            if inside { NUCLEUS } else { RED_CELL }
        })
    }

    #[test]
    fn window_is_centred_on_the_stained_nucleus() {
        let img = field(320, 240, &[(230, 90, 20)]);
        let loc = locate(&img, &LocateConfig::default());
        assert_eq!(loc.side, 112);
        let (cx, cy) = (loc.x + 56, loc.y + 56);
        assert!((cx - 230).abs() <= 3 && (cy - 90).abs() <= 3, "{loc:?}");
        assert!(loc.flags.is_empty(), "{loc:?}");
        assert!(loc.stain_px > 900, "{loc:?}");
        let c = crop(&img, &loc);
        assert_eq!(*c.get_pixel(56, 56), NUCLEUS);
    }

    #[test]
    fn lobes_are_one_cell_and_far_cells_are_several() {
        // two lobes 12 px apart: one neutrophil
        let lobes = field(320, 240, &[(150, 120, 10), (172, 120, 10)]);
        let loc = locate(&lobes, &LocateConfig::default());
        assert!(!loc.has(LocateFlag::Several), "{loc:?}");
        assert!((loc.x + 56 - 161).abs() <= 4, "{loc:?}");
        // two nuclei far apart: flagged, the larger is used
        let two = field(320, 240, &[(60, 120, 18), (250, 120, 16)]);
        let loc = locate(&two, &LocateConfig::default());
        assert!(loc.has(LocateFlag::Several), "{loc:?}");
        assert!((loc.x + 56 - 60).abs() <= 4, "{loc:?}");
    }

    #[test]
    fn no_stain_falls_back_to_the_centre_with_a_flag() {
        let img = field(320, 240, &[]);
        let loc = locate(&img, &LocateConfig::default());
        assert_eq!(loc.flags, vec![LocateFlag::NoStain]);
        assert_eq!((loc.x, loc.y), (160 - 56, 120 - 56));
    }

    #[test]
    fn border_and_cut_cells_are_flagged_and_padded() {
        let img = field(320, 240, &[(6, 120, 14)]);
        let loc = locate(&img, &LocateConfig::default());
        assert!(
            loc.has(LocateFlag::Border) && loc.has(LocateFlag::Cut),
            "{loc:?}"
        );
        let c = crop(&img, &loc);
        assert_eq!(*c.get_pixel(0, 56), Rgb([0, 0, 0]), "outside is padding");
    }

    #[test]
    fn window_scales_with_the_field() {
        let small = field(160, 120, &[(115, 45, 10)]);
        let loc = locate(&small, &LocateConfig::default());
        assert_eq!(loc.side, 56);
        assert!((loc.x + 28 - 115).abs() <= 3, "{loc:?}");
        // a tiny image still gives a window, and never panics
        let tiny = field(5, 3, &[]);
        let loc = locate(&tiny, &LocateConfig::default());
        assert!(loc.side >= 1);
    }
}
