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
    /// The field's own red cells read well away from its folder's calibration (more than
    /// [`crate::preprocess::UNLIKE_FOLDER`] times): the folder's scale sized the window. Most
    /// such readings are noise (a crowded or zoomed field); a field from another objective
    /// belongs in a folder of its own.
    ScaleUnlikeFolder,
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
            LocateFlag::ScaleUnlikeFolder => "scale-unlike-folder",
        }
    }

    /// Every flag, in the order summaries list them.
    pub const ALL: [LocateFlag; 10] = [
        LocateFlag::NoStain,
        LocateFlag::Several,
        LocateFlag::Border,
        LocateFlag::Cut,
        LocateFlag::NoBackground,
        LocateFlag::NoRedCells,
        LocateFlag::NoScale,
        LocateFlag::ColourOutOfRange,
        LocateFlag::ScaleOutOfRange,
        LocateFlag::ScaleUnlikeFolder,
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
    /// The white cell's box in field pixels, `[x0, y0, x1, y1]` (exclusive ends): its stained
    /// region grown by [`CYTOPLASM_MARGIN`] of the window and clipped to the field. Absent
    /// with `no-stain` and in records written before boxes were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_box: Option<[u32; 4]>,
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
    let grid = StainGrid::new(img, cfg, side);
    let regions = grid.regions(cfg);
    let Some(best) = regions.first().filter(|r| r.len() as u32 >= cfg.min_blocks) else {
        let (w, h) = img.dimensions();
        let mut loc = grid.window_at(w as f32 / 2.0, h as f32 / 2.0, 0);
        loc.flags.insert(0, LocateFlag::NoStain);
        return loc;
    };
    let mut loc = grid.location(best);
    if regions
        .get(1)
        .is_some_and(|s| s.len() as f32 >= cfg.second_ratio * best.len() as f32)
    {
        loc.flags.insert(0, LocateFlag::Several);
    }
    loc
}

/// Every white cell of a field: one window of `side` pixels per stained region of at least
/// [`CELL_BLOCKS`] blocks, largest first. A nucleus is a large fraction of a red cell's area
/// and a platelet a small one: the blocks are a fixed fraction of the window, and the window
/// a fixed number of red-cell diameters, so the threshold is one in red-cell areas, the same
/// at every magnification. Empty when the field holds no white cell (a red-cell-only field,
/// or one whose only stain is platelets).
///
/// Two white cells that touch (or lie closer than `merge_blocks`) are one stained region; a
/// region wider than [`TWO_CELLS_RBC`] red-cell diameters is split into the cells it holds
/// ([`StainGrid::split_touching`]). The single-cell [`locate_sized`] does not split: a field's
/// largest region is found as before.
pub fn locate_all_sized(img: &RgbImage, cfg: &LocateConfig, side: u32) -> Vec<Location> {
    let grid = StainGrid::new(img, cfg, side);
    let least = CELL_BLOCKS.max(cfg.min_blocks) as usize;
    let mut cells: Vec<Vec<usize>> = grid
        .regions(cfg)
        .into_iter()
        .take_while(|r| r.len() >= least)
        .flat_map(|r| grid.split_touching(r, cfg, 2))
        .collect();
    cells.sort_by_key(|r| std::cmp::Reverse(r.len()));
    cells.iter().map(|r| grid.location(r)).collect()
}

/// A stained region wider than this many red-cell diameters (as measured) holds more than one
/// white cell. Set on the 364 BCCD fields (`tests/bccd.rs`): at 2.4 one single cell's stain
/// (granules to its rim) is split, at 3.2 one touching pair is not; at 2.8 every boxed cell
/// is found, both cells of all 13 two-cell fields among them, and no TRAIN image of a sample
/// of 1,989 has a cell more or less than before.
pub const TWO_CELLS_RBC: f32 = 2.8;

/// Stained blocks a region needs to count as a white cell of its own in
/// [`locate_all_sized`]: a 28-block window side is 2.33 red-cell diameters, so a red cell is
/// ~110 blocks, the smallest lymphocyte nucleus ~60 and a platelet ~10.
pub const CELL_BLOCKS: u32 = 40;

/// How far a white cell's box reaches past its stained nucleus and granules, as a fraction of
/// the window (the cytoplasm's rim).
pub const CYTOPLASM_MARGIN: f32 = 0.08;

/// A field's mean stain (blue minus green) per square block, and the window side it was
/// measured for.
struct StainGrid {
    score: Vec<f32>,
    gw: u32,
    gh: u32,
    block: u32,
    side: u32,
    threshold: f32,
    size: (u32, u32),
}

impl StainGrid {
    fn new(img: &RgbImage, cfg: &LocateConfig, side: u32) -> Self {
        let (w, h) = img.dimensions();
        let side = side.max(1);
        let block =
            ((side as f32 * cfg.block / cfg.window).round() as u32).clamp(1, w.min(h).max(1));
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
        StainGrid {
            score,
            gw,
            gh,
            block,
            side,
            threshold: cfg.stain_threshold,
            size: (w, h),
        }
    }

    /// The stained regions, largest first.
    fn regions(&self, cfg: &LocateConfig) -> Vec<Vec<usize>> {
        let stained: Vec<bool> = self.score.iter().map(|&s| s > self.threshold).collect();
        regions(
            &stained,
            self.gw as usize,
            self.gh as usize,
            cfg.merge_blocks as usize,
        )
    }

    /// `region` as the white cells it holds: itself, unless its stain spans more than
    /// [`TWO_CELLS_RBC`] red-cell diameters; then split in two (a stain-weighted 2-means of
    /// its blocks, started from the halves either side of its centre across its wider side),
    /// each part split again up to `depth` times, kept when both parts hold [`CELL_BLOCKS`]
    /// blocks.
    fn split_touching(
        &self,
        region: Vec<usize>,
        cfg: &LocateConfig,
        depth: u32,
    ) -> Vec<Vec<usize>> {
        let rbc_blocks = self.side as f32 / self.block as f32 / cfg.window_rbc.unwrap_or(2.33);
        let gw = self.gw as usize;
        let at = |i: usize| ((i % gw) as f32, (i / gw) as f32);
        let (xs, ys): (Vec<f32>, Vec<f32>) = region.iter().map(|&i| at(i)).unzip();
        let span = |v: &[f32]| {
            v.iter().fold(f32::MIN, |a, &b| a.max(b)) - v.iter().fold(f32::MAX, |a, &b| a.min(b))
                + 1.0
        };
        if depth == 0
            || region.len() < 2 * CELL_BLOCKS as usize
            || span(&xs).max(span(&ys)) <= TWO_CELLS_RBC * rbc_blocks
        {
            return vec![region];
        }
        let weight: Vec<f32> = region
            .iter()
            .map(|&i| (self.score[i] - self.threshold).max(1e-3))
            .collect();
        let first = two_means(&xs, &ys, &weight, span(&xs) >= span(&ys));
        let part = |want: bool| -> Vec<usize> {
            region
                .iter()
                .zip(&first)
                .filter(|p| *p.1 == want)
                .map(|p| *p.0)
                .collect()
        };
        let (a, b) = (part(true), part(false));
        if a.len() < CELL_BLOCKS as usize || b.len() < CELL_BLOCKS as usize {
            return vec![region];
        }
        let mut out = self.split_touching(a, cfg, depth - 1);
        out.extend(self.split_touching(b, cfg, depth - 1));
        out
    }

    /// The window centred on a region's stain-weighted centre, flagged `cut` when the region
    /// touches the field's edge.
    fn location(&self, region: &[usize]) -> Location {
        let (gw, block) = (self.gw, self.block);
        let (mut sx, mut sy, mut sw) = (0f64, 0f64, 0f64);
        let mut touches = false;
        let mut extent = [u32::MAX, u32::MAX, 0, 0];
        for &i in region {
            let (bx, by) = ((i % gw as usize) as u32, (i / gw as usize) as u32);
            extent = [
                extent[0].min(bx),
                extent[1].min(by),
                extent[2].max(bx + 1),
                extent[3].max(by + 1),
            ];
            let wgt = (self.score[i] - self.threshold) as f64;
            sx += wgt * ((bx * block) as f64 + block as f64 / 2.0);
            sy += wgt * ((by * block) as f64 + block as f64 / 2.0);
            sw += wgt;
            touches |= bx == 0 || by == 0 || bx + 1 == gw || by + 1 == self.gh;
        }
        let area = region.len() as u32 * block * block;
        let mut loc = self.window_at((sx / sw) as f32, (sy / sw) as f32, area);
        if touches {
            loc.flags.insert(0, LocateFlag::Cut);
        }
        let grow = (CYTOPLASM_MARGIN * self.side as f32).round() as u32;
        let (w, h) = self.size;
        loc.cell_box = Some([
            (extent[0] * block).saturating_sub(grow),
            (extent[1] * block).saturating_sub(grow),
            (extent[2] * block + grow).min(w),
            (extent[3] * block + grow).min(h),
        ]);
        loc
    }

    /// The window centred on `(cx, cy)`, flagged `border` when it reaches past the field.
    fn window_at(&self, cx: f32, cy: f32, stain_px: u32) -> Location {
        let (w, h) = self.size;
        let side = self.side;
        let x = (cx - side as f32 / 2.0).round() as i32;
        let y = (cy - side as f32 / 2.0).round() as i32;
        let mut flags = Vec::new();
        if x < 0 || y < 0 || x + side as i32 > w as i32 || y + side as i32 > h as i32 {
            flags.push(LocateFlag::Border);
        }
        Location {
            x,
            y,
            side,
            stain_px,
            cell_box: None,
            rbc_px: None,
            flags,
        }
    }
}

/// A weighted 2-means of the points `(xs, ys)`: true for the points of the first group.
/// Starts from the halves either side of the weighted centre along x (`along_x`) or y, so the
/// same points give the same split.
fn two_means(xs: &[f32], ys: &[f32], weight: &[f32], along_x: bool) -> Vec<bool> {
    let mean = |v: &[f32], part: &dyn Fn(usize) -> bool| {
        let (mut s, mut w) = (0f32, 0f32);
        for k in (0..v.len()).filter(|&k| part(k)) {
            s += weight[k] * v[k];
            w += weight[k];
        }
        s / w.max(1e-6)
    };
    let (cx, cy) = (mean(xs, &|_| true), mean(ys, &|_| true));
    let mut first: Vec<bool> = (0..xs.len())
        .map(|k| if along_x { xs[k] < cx } else { ys[k] < cy })
        .collect();
    for _ in 0..10 {
        let a = (mean(xs, &|k| first[k]), mean(ys, &|k| first[k]));
        let b = (mean(xs, &|k| !first[k]), mean(ys, &|k| !first[k]));
        let next: Vec<bool> = (0..xs.len())
            .map(|k| {
                let d = |c: (f32, f32)| (xs[k] - c.0).powi(2) + (ys[k] - c.1).powi(2);
                d(a) < d(b)
            })
            .collect();
        if next == first {
            break;
        }
        first = next;
    }
    first
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
    fn two_touching_cells_are_two_and_one_large_cell_stays_one() {
        let cfg = LocateConfig::default();
        // two nuclei 1.5 red cells across that touch: one stained region 3 red cells wide
        let touching = field(320, 240, &[(110, 120, 36), (182, 120, 36)]);
        assert_eq!(StainGrid::new(&touching, &cfg, 112).regions(&cfg).len(), 1);
        let cells = locate_all_sized(&touching, &cfg, 112);
        assert_eq!(cells.len(), 2, "{cells:?}");
        let mut centres: Vec<i32> = cells.iter().map(|l| l.x + 56).collect();
        centres.sort();
        assert!(
            (centres[0] - 110).abs() <= 4 && (centres[1] - 182).abs() <= 4,
            "{centres:?}"
        );
        // the one-cell locator does not split
        assert_eq!(
            locate_sized(&touching, &cfg, 112).stain_px,
            cells.iter().map(|l| l.stain_px).sum::<u32>()
        );
        // one nucleus 1.7 red cells across, and lobes: one cell each
        for one in [
            field(320, 240, &[(160, 120, 40)]),
            field(320, 240, &[(150, 120, 14), (178, 120, 14), (164, 146, 14)]),
        ] {
            assert_eq!(locate_all_sized(&one, &cfg, 112).len(), 1);
        }
    }

    #[test]
    fn every_white_cell_is_found_with_its_box_and_platelets_are_not_cells() {
        // two nuclei (radius 20 and 17: 0.8 and 0.7 of a 48 px red cell) and three platelets (radius 3) on red cells
        let img = field(
            320,
            240,
            &[
                (70, 80, 20),
                (240, 160, 17),
                (160, 40, 3),
                (30, 200, 3),
                (200, 60, 3),
            ],
        );
        let cfg = LocateConfig::default();
        let cells = locate_all_sized(&img, &cfg, 112);
        assert_eq!(cells.len(), 2, "{cells:?}");
        let grow = (CYTOPLASM_MARGIN * 112.0).round() as i64;
        for (loc, (cx, cy, r)) in cells.iter().zip([(70i64, 80i64, 20i64), (240, 160, 17)]) {
            let [x0, y0, x1, y1] = loc.cell_box.expect("a box").map(i64::from);
            // the box holds the nucleus, grown by the cytoplasm margin (within a block)
            for (got, want) in [
                (x0, cx - r - grow),
                (y0, cy - r - grow),
                (x1, cx + r + grow),
                (y1, cy + r + grow),
            ] {
                assert!((got - want).abs() <= 6, "{loc:?}: {got} vs {want}");
            }
            assert!(!loc.has(LocateFlag::Several), "{loc:?}");
        }
        // the one-cell locator still takes the largest and flags the second
        let one = locate_sized(&img, &cfg, 112);
        assert!(
            one.has(LocateFlag::Several) && (one.x + 56 - 70).abs() <= 4,
            "{one:?}"
        );
        // platelets alone, or red cells alone: no white cell
        let platelets = field(320, 240, &[(160, 40, 3), (30, 200, 3), (200, 60, 4)]);
        assert!(locate_all_sized(&platelets, &cfg, 112).is_empty());
        assert!(locate_all_sized(&field(320, 240, &[]), &cfg, 112).is_empty());
        // the same field at twice the magnification: the same cells
        let big = image::imageops::resize(&img, 640, 480, image::imageops::FilterType::Triangle);
        assert_eq!(locate_all_sized(&big, &cfg, 224).len(), 2);
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
