//! The one image -> tensor path. The trainer's validation, the exported model's runtime and the
//! index all call [`Preprocess::prepare`], so what a model sees when served is, bit for bit,
//! what it saw when measured. The trainer's augmentations start from [`Preprocess::window`]
//! (the same located window) and end in [`Preprocess::normalize`].

use crate::calibration::Calibration;
pub use crate::decode::{
    MAX_DECODE_BYTES, MAX_FILE_BYTES, MAX_PIXELS, decode_rgb, load_rgb, max_file_bytes, max_pixels,
    read_image_file,
};
use crate::field::FieldProblem;
use crate::locate::{LocateConfig, LocateFlag, Location, crop, locate_all_sized, locate_sized};
use crate::standardise::{AnchorScope, ColourStandard, Method};
use image::{RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

/// Pixels whose brightest channel is below this are treated as padding (the black corners of
/// the dataset's rotated copies) and replaced by the mean colour.
pub const BLACK_THRESHOLD: u8 = 20;

/// How an image is brought to the model's square input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeRule {
    /// Crop the central square (side = shorter side), then resize it to `size` x `size`
    /// with a triangle (bilinear) filter. The whole field: models before the cell window.
    CenterSquareBilinear,
    /// Locate the stained white cell ([`crate::locate`]), cut the square window around it
    /// (outside the field is padding), then resize it with a triangle (bilinear) filter.
    CellWindow(LocateConfig),
}

/// Everything the runtime needs to turn an image into the model's input; stored in the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Square input side in pixels.
    pub size: u32,
    pub resize: ResizeRule,
    /// Channel mean, RGB in [0, 1].
    pub mean: [f32; 3],
    /// Channel standard deviation, RGB in [0, 1].
    pub std: [f32; 3],
    /// Replace near-black padding pixels by the mean colour before normalising.
    pub fill_black: bool,
    /// Tensor layout; always "NCHW".
    pub layout: String,
    /// Colour standardisation before localisation ([`crate::standardise`]); None (models
    /// before it): absolute colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<ColourStandard>,
    /// A known scale for every field (`--pixel-size`): red-cell diameter in pixels, instead
    /// of measuring it. A property of the input, not of the model: not in the fingerprint.
    #[serde(skip)]
    pub rbc_px_override: Option<f32>,
    /// The red-cell scale of the folder the field comes from ([`Calibration`]), when one was
    /// measured. Like the override, a property of the input: not in the fingerprint.
    #[serde(skip)]
    pub calibration: Option<Calibration>,
}

/// A human red cell's diameter, µm (the ruler behind `--pixel-size`).
pub const RED_CELL_UM: f32 = 7.5;

/// A field brought to the model's reference: colour standardised, its red-cell scale, and
/// what could not be measured or lies outside what the model knows.
pub struct FieldView {
    pub image: RgbImage,
    pub rbc_px: Option<f32>,
    pub flags: Vec<LocateFlag>,
}

/// How far (as a ratio, either way) a field's own red-cell reading may lie from its folder's
/// calibration before the field is flagged `scale-unlike-folder`: past the training band's
/// outer edge (1.2², where a field alone would be sized by its own reading).
pub const UNLIKE_FOLDER: f32 = 1.44;

impl FieldView {
    /// A window located in this view, carrying the field's scale and flags.
    fn own(&self, mut loc: Location) -> Location {
        loc.rbc_px = self.rbc_px;
        loc.flags.extend(self.flags.iter().copied());
        loc
    }
}

/// The largest window, in the field's longer sides: beyond it the cell would be a speck
/// (the field is then flagged `scale-out-of-range`).
pub const MAX_WINDOW_FIELDS: f32 = 4.0;

impl Preprocess {
    /// The blood-cell dataset's statistics (README of the data: measured on 1,000 images),
    /// looking at the window around the white cell.
    pub fn blood_cells(size: u32) -> Self {
        Self::blood_cells_with(size, ResizeRule::CellWindow(LocateConfig::default()))
    }

    /// The blood-cell statistics with another resize rule (the whole field, another window).
    pub fn blood_cells_with(size: u32, resize: ResizeRule) -> Self {
        Self {
            size,
            resize,
            mean: [0.679, 0.642, 0.661],
            std: [0.265, 0.264, 0.261],
            fill_black: true,
            layout: "NCHW".into(),
            colour: None,
            rbc_px_override: None,
            calibration: None,
        }
    }

    /// The same preprocessing for fields of a known pixel size (µm per pixel): the red-cell
    /// scale is then 7.5 µm / `um`, not measured.
    pub fn with_pixel_size(mut self, um: Option<f32>) -> Self {
        self.rbc_px_override = um.map(|u| RED_CELL_UM / u);
        self
    }

    /// The same preprocessing for fields of a folder calibrated as `c` ([`crate::calibration`]).
    pub fn with_calibration(mut self, c: Option<Calibration>) -> Self {
        self.calibration = c;
        self
    }

    /// sha256 of this preprocessing (its JSON): with the ONNX sha256, the serving contract an
    /// index or an embeddings folder is bound to. Two cards with one ONNX file but another
    /// window, mean or fill rule give other vectors.
    pub fn fingerprint(&self) -> String {
        crate::sha256_hex(
            serde_json::to_string(self)
                .expect("preprocessing serialises")
                .as_bytes(),
        )
    }

    /// Number of floats in one prepared image.
    pub fn len(&self) -> usize {
        3 * (self.size as usize) * (self.size as usize)
    }

    /// Always false: a prepared image has at least one pixel.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The serving path: window (located cell or centre square), resize, normalise.
    /// `[3, size, size]` row-major.
    pub fn prepare(&self, img: &RgbImage) -> Vec<f32> {
        self.prepare_located(img).0
    }

    /// [`Preprocess::prepare`], and where the cell was found (None for the centre-square rule).
    pub fn prepare_located(&self, img: &RgbImage) -> (Vec<f32>, Option<Location>) {
        let (input, loc) = self.input_image(img);
        (self.normalize(&input), loc)
    }

    /// The `size` x `size` image the model sees (before normalisation): what a person should
    /// be shown as "the crop that was embedded".
    pub fn input_image(&self, img: &RgbImage) -> (RgbImage, Option<Location>) {
        let (window, loc) = self.window(img);
        (self.resize_window(window), loc)
    }

    /// A window (from [`Preprocess::window`]) brought to the model's `size` x `size`.
    pub fn resize_window(&self, window: RgbImage) -> RgbImage {
        if window.dimensions() == (self.size, self.size) {
            return window;
        }
        image::imageops::resize(&window, self.size, self.size, FilterType::Triangle)
    }

    /// The square window of the source image that the rule looks at, at source resolution
    /// (colours standardised when the model standardises them).
    pub fn window(&self, img: &RgbImage) -> (RgbImage, Option<Location>) {
        match &self.resize {
            ResizeRule::CenterSquareBilinear => (center_square(img), None),
            ResizeRule::CellWindow(cfg) => {
                let (view, loc) = self.located(img, cfg);
                (crop(&view.image, &loc), Some(loc))
            }
        }
    }

    /// The field's view and where the rule puts its one window in it.
    fn located(&self, img: &RgbImage, cfg: &LocateConfig) -> (FieldView, Location) {
        let (view, side) = self.sized_view(img, cfg);
        let loc = view.own(locate_sized(&view.image, cfg, side));
        (view, loc)
    }

    /// [`Preprocess::window`] and, about the same centre, a square `context` times its side
    /// (outside the field is padding): what the trainer's crops cut from, so that a view can
    /// show the cell smaller than the served window does as well as larger (a lab's scale
    /// reading is off by some percent either way). The centre-square rule has no context
    /// beyond its square, so there the second image is the window itself.
    pub fn window_in_context(
        &self,
        img: &RgbImage,
        context: f32,
    ) -> (RgbImage, RgbImage, Option<Location>) {
        let ResizeRule::CellWindow(cfg) = &self.resize else {
            let (window, loc) = self.window(img);
            return (window.clone(), window, loc);
        };
        let (view, loc) = self.located(img, cfg);
        let wide_side = (loc.side as f32 * context.max(1.0)).round() as u32;
        let grow = (wide_side as i32 - loc.side as i32) / 2;
        let wide = Location {
            x: loc.x - grow,
            y: loc.y - grow,
            side: wide_side,
            ..loc.clone()
        };
        (crop(&view.image, &loc), crop(&view.image, &wide), Some(loc))
    }

    /// Every white cell's window in the field ([`crate::locate::locate_all_sized`]), largest
    /// first, each as [`Preprocess::window`] gives the one; empty when the field holds no
    /// white cell. The centre-square rule gives its one window.
    pub fn windows_all(&self, img: &RgbImage) -> Vec<(RgbImage, Option<Location>)> {
        match &self.resize {
            ResizeRule::CenterSquareBilinear => vec![(center_square(img), None)],
            ResizeRule::CellWindow(cfg) => {
                let (view, side) = self.sized_view(img, cfg);
                let locs = locate_all_sized(&view.image, cfg, side);
                locs.into_iter()
                    .map(|loc| {
                        let loc = view.own(loc);
                        (crop(&view.image, &loc), Some(loc))
                    })
                    .collect()
            }
        }
    }

    /// [`Preprocess::prepare_located`] for every white cell of the field
    /// ([`Preprocess::windows_all`]), largest first. A field with one cell, or none found,
    /// gives exactly the one input [`Preprocess::prepare_located`] gives, so a one-cell image
    /// is prepared as it always was and a field without a clear cell still gets a window.
    pub fn prepare_cells(&self, img: &RgbImage) -> Vec<(Vec<f32>, Option<Location>)> {
        self.cell_windows(img)
            .into_iter()
            .map(|(window, loc)| (self.normalize(&self.resize_window(window)), loc))
            .collect()
    }

    /// The windows [`Preprocess::prepare_cells`] embeds, at source resolution: every white
    /// cell's ([`Preprocess::windows_all`]) when the field holds several, else the one
    /// [`Preprocess::window`] gives.
    pub fn cell_windows(&self, img: &RgbImage) -> Vec<(RgbImage, Option<Location>)> {
        let ResizeRule::CellWindow(cfg) = &self.resize else {
            return vec![self.window(img)];
        };
        let (view, side) = self.sized_view(img, cfg);
        let mut locs = locate_all_sized(&view.image, cfg, side);
        if locs.len() <= 1 {
            locs = vec![locate_sized(&view.image, cfg, side)];
        }
        locs.into_iter()
            .map(|loc| {
                let loc = view.own(loc);
                (crop(&view.image, &loc), Some(loc))
            })
            .collect()
    }

    /// The field's view ([`Preprocess::field_view`]) and the window side in its pixels.
    fn sized_view(&self, img: &RgbImage, cfg: &LocateConfig) -> (FieldView, u32) {
        let view = self.field_view(img, cfg);
        let short = img.width().min(img.height()).max(1) as f32;
        let side = match (cfg.window_rbc, view.rbc_px) {
            (Some(k), Some(d)) => k * d,
            _ => cfg.window * short,
        };
        // a scale far off (a pixel size in the wrong unit, a damaged calibration) is flagged
        // out of range; the window it asks for is capped, or cutting it would take terabytes
        let long = img.width().max(img.height()).max(1) as f32;
        (
            view,
            side.min(MAX_WINDOW_FIELDS * long).round().max(1.0) as u32,
        )
    }

    /// Standardise a field's colour and measure its red-cell scale, as `cfg` asks; a model
    /// without either gets the field as it is. The scale is the folder's [`Calibration`] when
    /// there is one, else the field's own settled against the training fields' band.
    pub fn field_view(&self, img: &RgbImage, cfg: &LocateConfig) -> FieldView {
        if self.colour.is_none() && cfg.window_rbc.is_none() {
            return FieldView {
                image: img.clone(),
                rbc_px: None,
                flags: Vec::new(),
            };
        }
        let (image, anchors, mut flags) = self.standardised(img, cfg);
        let out_of_range = |d: f32| beyond_range(cfg, d);
        let (rbc_px, own) = match (cfg.window_rbc, self.rbc_px_override) {
            (None, _) => (None, None),
            (Some(_), Some(d)) => (Some(d), None),
            // in a calibrated folder a field's own reading only flags it (the calibration sizes
            // the window), so it is read at half resolution, 4x cheaper: the ruler was half of
            // a field's preprocessing, and flags sit at 1.44x where the half-resolution reading
            // is within a few percent of the full one
            (Some(_), None) if self.calibration.is_some() => {
                let own = coarse_scale(&image, anchors.as_ref(), cfg);
                (self.settle(own, cfg), own)
            }
            (Some(_), None) => {
                let own = raw_scale(&image, anchors.as_ref(), cfg);
                (self.settle(own, cfg), own)
            }
        };
        if cfg.window_rbc.is_some() {
            match rbc_px {
                None => flags.push(LocateFlag::NoScale),
                Some(d) if out_of_range(d) || own.is_some_and(out_of_range) => {
                    flags.push(LocateFlag::ScaleOutOfRange)
                }
                Some(_) => {}
            }
            let unlike =
                |(d, c): (f32, &Calibration)| (d / c.rbc_px).ln().abs() > UNLIKE_FOLDER.ln();
            if own.zip(self.calibration.as_ref()).is_some_and(unlike) {
                flags.push(LocateFlag::ScaleUnlikeFolder);
            }
        }
        FieldView {
            image,
            rbc_px,
            flags,
        }
    }

    /// The field's own red-cell diameter in px, measured after colour standardisation, with
    /// no band, calibration or override: what a [`Calibration`] is the median of. None when
    /// the model's window is not in red-cell diameters, or the scale cannot be measured.
    pub fn field_scale(&self, img: &RgbImage) -> Option<f32> {
        self.read_scale(img, raw_scale)
    }

    /// [`Preprocess::field_scale`] read at half resolution: what flags a field of a calibrated
    /// folder (whose window the calibration sizes).
    pub fn field_scale_coarse(&self, img: &RgbImage) -> Option<f32> {
        self.read_scale(img, coarse_scale)
    }

    fn read_scale(&self, img: &RgbImage, ruler: ScaleReader) -> Option<f32> {
        let ResizeRule::CellWindow(cfg) = &self.resize else {
            return None;
        };
        cfg.window_rbc?;
        let (image, anchors, _) = self.standardised(img, cfg);
        ruler(&image, anchors.as_ref(), cfg)
    }

    /// The diameter a window is sized by, from the field's own measurement `d`. In a calibrated
    /// folder, the calibration (a median over many fields, far less noisy than one field);
    /// without one, the training band (see [`crate::scale::Band`]); the calibration alone
    /// when the field's own cannot be measured.
    ///
    /// A calibrated folder's field is not sized by its own reading even when that lies far
    /// from the folder's: measured under the robustness protocol, such readings were nearly
    /// all noise (a third of the windows of a 2x-magnified folder, and one real BCCD field
    /// with clumped red cells, read at half or twice the scale), and following them cost more
    /// than the rare field from another objective gains. Those fields are flagged
    /// (`scale-unlike-folder`, see [`Preprocess::field_view`]).
    fn settle(&self, d: Option<f32>, cfg: &LocateConfig) -> Option<f32> {
        match (d, &self.calibration) {
            (_, Some(c)) => Some(c.rbc_px),
            (Some(d), None) => Some(cfg.rbc_band.map_or(d, |b| b.settle(d))),
            (None, None) => None,
        }
    }

    /// The field with its colour standardised (as it is when the model does not standardise),
    /// the anchors of the result, and the colour flags. A field whose own anchors cannot be
    /// measured, or give a gain out of range (a zoomed field with few red cells, most of it one
    /// white cell), is standardised by its folder's anchors when the folder was calibrated.
    fn standardised(
        &self,
        img: &RgbImage,
        cfg: &LocateConfig,
    ) -> (RgbImage, Option<crate::field::Anchors>, Vec<LocateFlag>) {
        let stained = |p: [u8; 3]| p[2] as f32 - p[1] as f32 > cfg.stain_threshold;
        let colour = crate::field::measure(img);
        let mut flags: Vec<LocateFlag> = colour
            .problems
            .iter()
            .map(|p| match p {
                FieldProblem::NoBackground => LocateFlag::NoBackground,
                FieldProblem::NoRedCells => LocateFlag::NoRedCells,
            })
            .collect();
        let Some(cs) = &self.colour else {
            return (img.clone(), colour.anchors, flags);
        };
        let lab = matches!(cs.method, Method::LabReinhard { .. })
            .then(|| crate::standardise::lab_stats(img, |p| !stained(p)))
            .flatten();
        let folder = self.calibration.and_then(|c| c.anchors);
        let by_folder = |anchors| crate::field::FieldColour {
            anchors: Some(anchors),
            problems: Vec::new(),
            background_share: colour.background_share,
            red_cell_share: colour.red_cell_share,
        };
        let out = match (cs.scope, folder) {
            // the folder's anchors stand for every field: its own no longer decide its colour
            (AnchorScope::Folder, Some(anchors)) => {
                flags.clear();
                cs.apply_in_folder(img, &by_folder(anchors), lab.as_ref(), Some(&anchors))
            }
            (AnchorScope::FolderStain, Some(anchors)) => {
                flags.clear();
                let mixed = colour.anchors.map_or(anchors, |own| crate::field::Anchors {
                    background: own.background,
                    red_cells: anchors.red_cells,
                });
                cs.apply_in_folder(img, &by_folder(mixed), lab.as_ref(), Some(&anchors))
            }
            _ => {
                let colour = self.shrunk(img, colour.clone(), cs, folder.as_ref());
                let own = cs.apply_in_folder(img, &colour, lab.as_ref(), folder.as_ref());
                let doubtful = !own.measured || cs.out_of_range(&own.gain);
                let alt = folder.filter(|_| doubtful).map(|anchors| {
                    cs.apply_in_folder(img, &by_folder(anchors), lab.as_ref(), Some(&anchors))
                });
                match alt {
                    Some(alt) if alt.measured && !cs.out_of_range(&alt.gain) => {
                        flags.clear();
                        alt
                    }
                    _ => own,
                }
            }
        };
        if out.measured && cs.out_of_range(&out.gain) {
            flags.push(LocateFlag::ColourOutOfRange);
        }
        let anchors = match (&cs.method, out.measured) {
            (Method::OdAnchors { reference } | Method::StainAnchors { reference, .. }, true) => {
                Some(*reference)
            }
            (_, true) => crate::field::measure(&out.image).anchors,
            (_, false) => None,
        };
        (out.image, anchors, flags)
    }

    /// The field's anchors pulled toward its folder's by how few red cells its reading rests
    /// on ([`crate::standardise::shrink_to_folder`]): the cells counted at the folder's scale
    /// (or the pixel-size override), as they would be at the field's full size.
    fn shrunk(
        &self,
        img: &RgbImage,
        mut colour: crate::field::FieldColour,
        cs: &ColourStandard,
        folder: Option<&crate::field::Anchors>,
    ) -> crate::field::FieldColour {
        if cs.trust_cells == 0.0 {
            return colour;
        }
        let d = self.rbc_px_override.or(self.calibration.map(|c| c.rbc_px));
        if let (Some(own), Some(folder), Some(d)) = (colour.anchors, folder, d) {
            let px = img.width() as f32 * img.height() as f32;
            let cells = colour.red_cell_share * px / (std::f32::consts::FRAC_PI_4 * d * d);
            let shrunk = crate::standardise::shrink_to_folder(&own, folder, cells, cs.trust_cells);
            colour.anchors = Some(shrunk);
        }
        colour
    }

    /// The stain shift every field of the calibrated folder is standardised by
    /// ([`crate::stain`]); None when the model's standardisation does not undo one or the
    /// folder was not calibrated.
    pub fn folder_stain_shift(&self) -> Option<crate::stain::StainShift> {
        let Method::StainAnchors { reference, band } = &self.colour.as_ref()?.method else {
            return None;
        };
        let folder = self.calibration?.anchors?;
        Some(crate::stain::of_folder(Some(&folder), reference, band))
    }

    /// A field's own raw colour anchors and red-cell scale (see [`Preprocess::field_scale`]):
    /// what a [`Calibration`] takes the medians of.
    pub fn field_measures(&self, img: &RgbImage) -> (Option<crate::field::Anchors>, Option<f32>) {
        let own = crate::field::measure(img).anchors;
        (own, self.field_scale(img))
    }

    /// Normalise an image already `size` x `size` into CHW floats.
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        assert_eq!(
            img.dimensions(),
            (self.size, self.size),
            "normalize expects a resized image"
        );
        let plane = (self.size * self.size) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in img.pixels().enumerate() {
            let padding = self.fill_black && p.0.iter().all(|&c| c < BLACK_THRESHOLD);
            for c in 0..3 {
                out[c * plane + i] = if padding {
                    0.0
                } else {
                    (p.0[c] as f32 / 255.0 - self.mean[c]) / self.std[c]
                };
            }
        }
        out
    }

    /// The mean colour as 8-bit RGB (what padding becomes).
    pub fn mean_rgb(&self) -> [u8; 3] {
        self.mean.map(|m| (m * 255.0).round() as u8)
    }
}

/// The red-cell diameter of a standardised field whose anchors are `anchors`, as measured.
/// Whether a red-cell diameter lies outside what the model was trained and checked on.
fn beyond_range(cfg: &LocateConfig, d: f32) -> bool {
    cfg.rbc_px_range.is_some_and(|[lo, hi]| d < lo || d > hi)
}

/// A red-cell reading of a standardised field ([`raw_scale`] or [`coarse_scale`]).
type ScaleReader = fn(&RgbImage, Option<&crate::field::Anchors>, &LocateConfig) -> Option<f32>;

/// [`raw_scale`] at half the ruler's working resolution, in the field's pixels.
fn coarse_scale(
    image: &RgbImage,
    anchors: Option<&crate::field::Anchors>,
    cfg: &LocateConfig,
) -> Option<f32> {
    let (work, factor) = crate::field::working_image(image);
    if work.width() < 64 || work.height() < 64 {
        return raw_scale(image, anchors, cfg);
    }
    let half = crate::field::box_down(&work, 2);
    // small red cells (a demagnified folder: what the flag is for) may not read at half
    // resolution (under 8 of its pixels): then the full reading
    match raw_scale(&half, anchors, cfg) {
        Some(d) if d >= 8.0 => Some(2.0 * factor * d),
        _ => raw_scale(image, anchors, cfg),
    }
}

fn raw_scale(
    image: &RgbImage,
    anchors: Option<&crate::field::Anchors>,
    cfg: &LocateConfig,
) -> Option<f32> {
    let stained = |p: [u8; 3]| p[2] as f32 - p[1] as f32 > cfg.stain_threshold;
    Some(crate::scale::measure(image, anchors?, stained)?.diameter)
}

/// The central square of an image, side = the shorter side.
pub fn center_square(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = w.min(h);
    image::imageops::crop_imm(img, (w - s) / 2, (h - s) / 2, s, s).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_shape_and_padding() {
        let p = Preprocess::blood_cells(8);
        let mut img = RgbImage::from_pixel(20, 10, image::Rgb([200, 100, 150]));
        img.put_pixel(0, 0, image::Rgb([0, 0, 0]));
        let v = p.prepare(&img);
        assert_eq!(v.len(), 3 * 64);
        let r = (200.0 / 255.0 - p.mean[0]) / p.std[0];
        assert!((v[10] - r).abs() < 1e-5);
        // black padding in a square-resized image becomes exactly the mean (0)
        let black = RgbImage::from_pixel(8, 8, image::Rgb([3, 3, 3]));
        assert!(p.normalize(&black).iter().all(|&x| x == 0.0));
    }

    /// A 320x240 field of `background` with one purple nucleus near the right edge.
    fn one_nucleus(background: impl Fn(u32, u32) -> image::Rgb<u8>) -> RgbImage {
        RgbImage::from_fn(320, 240, |x, y| {
            let (dx, dy) = (x as i64 - 250, y as i64 - 100);
            if dx * dx + dy * dy < 400 {
                image::Rgb([130, 90, 230])
            } else {
                background(x, y)
            }
        })
    }

    #[test]
    fn cell_window_rule_looks_at_the_stained_cell() {
        let p = Preprocess::blood_cells(16);
        // a pink field with one purple nucleus near the right edge
        let img = one_nucleus(|_, _| image::Rgb([200, 150, 160]));
        let (input, loc) = p.input_image(&img);
        let loc = loc.expect("cell window rule locates");
        assert!(loc.flags.is_empty(), "{loc:?}");
        assert_eq!(input.dimensions(), (16, 16));
        // the nucleus is in the middle of the model's input, not off to the side
        let mid = input.get_pixel(8, 8).0;
        assert!(mid[2] as i32 - mid[1] as i32 > 100, "{mid:?}");
        let whole = Preprocess::blood_cells_with(16, ResizeRule::CenterSquareBilinear);
        let (field, none) = whole.input_image(&img);
        assert!(none.is_none());
        let mid = field.get_pixel(8, 8).0;
        assert!(mid[2] as i32 - mid[1] as i32 <= 10, "{mid:?}");
        assert_eq!(p.prepare(&img), p.normalize(&input));
    }

    #[test]
    fn a_window_in_context_holds_the_window_at_its_centre() {
        let p = Preprocess::blood_cells(16);
        let img =
            one_nucleus(|x, y| image::Rgb([(x % 200) as u8 + 50, 150, (y % 100) as u8 + 100]));
        let (alone, loc) = p.window(&img);
        let (window, wide, same) = p.window_in_context(&img, 1.5);
        assert_eq!((window.clone(), loc.clone()), (alone, same));
        let side = loc.expect("located").side;
        assert_eq!(wide.width(), (side as f32 * 1.5).round() as u32);
        let off = (wide.width() - side) / 2;
        let centre = image::imageops::crop_imm(&wide, off, off, side, side).to_image();
        assert_eq!(centre, window);
        // the whole-field rule has nothing beyond its square
        let whole = Preprocess::blood_cells_with(16, ResizeRule::CenterSquareBilinear);
        let (w, ctx, _) = whole.window_in_context(&img, 1.5);
        assert_eq!(w, ctx);
    }

    #[test]
    fn old_cards_still_parse() {
        let old = r#"{"size":64,"resize":"center-square-bilinear","mean":[0.5,0.5,0.5],"std":[0.2,0.2,0.2],"fill_black":true,"layout":"NCHW"}"#;
        let p: Preprocess = serde_json::from_str(old).unwrap();
        assert_eq!(p.resize, ResizeRule::CenterSquareBilinear);
        let new = serde_json::to_string(&Preprocess::blood_cells(64)).unwrap();
        assert!(new.contains("cell-window"), "{new}");
        let back: Preprocess = serde_json::from_str(&new).unwrap();
        assert_eq!(back, Preprocess::blood_cells(64));
    }
}
