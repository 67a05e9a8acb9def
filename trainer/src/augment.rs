//! Augmentations suited to stained cells: random resized crop, flips, 90-degree and small
//! rotations (one bilinear resampling pass), weak colour jitter and optional blur. Colour
//! carries class information here (eosinophil granules, nucleus stain), so jitter is weak by
//! default. Area outside the source image, and the black corners of the dataset's rotated
//! copies, become the mean colour, so padding can never be a feature.

use burn::config::Config;
use cellspace_core::preprocess::{BLACK_THRESHOLD, Preprocess};
use image::{Rgb, RgbImage};
use rand::Rng;

#[derive(Config, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Random resized crop: its area in windows' areas, min and max (above 1 the view shows
    /// the cell smaller than the served window does; that needs a `context` above 1).
    #[config(default = "[0.4, 1.0]")]
    pub crop_area: [f32; 2],
    /// The side of the field the crops are cut from, in windows about the white cell
    /// ([`cellspace_core::preprocess::Preprocess::window_in_context`]). 1: the window alone,
    /// so views only ever zoom in, as every model before this field was trained; None (a
    /// config written before it) is 1.
    #[config(default = "None")]
    pub context: Option<f32>,
    /// Maximum small rotation in degrees (on top of a random multiple of 90°).
    #[config(default = 15.0)]
    pub max_rotation: f32,
    #[config(default = 0.1)]
    pub brightness: f32,
    #[config(default = 0.1)]
    pub contrast: f32,
    #[config(default = 0.1)]
    pub saturation: f32,
    /// Hue shift as a fraction of the colour wheel.
    #[config(default = 0.02)]
    pub hue: f32,
    /// Probability of a 3x3 Gaussian blur.
    #[config(default = 0.2)]
    pub blur_prob: f32,
    /// Per-channel gain jitter: the colour cast that standardisation leaves (each channel
    /// times a factor in [1 - g, 1 + g]). Off by default (see `jpeg_prob`).
    #[config(default = 0.0)]
    pub channel_gain: f32,
    /// Probability of a JPEG re-encoding of the 64-px view at quality 30-90. Off by default:
    /// a JPEG block is an eighth of the view's side, and with the channel gain it cost 0.07
    /// kNN-200 under cross-validation (README, Levers).
    #[config(default = 0.0)]
    pub jpeg_prob: f32,
    /// Multi-crop (SwAV, DINO): this many local views per image beside the two global ones,
    /// each a small crop (`local_crop_area`) at `local_size` px. None (a config written before
    /// multi-crop) or 0: two views, as before.
    #[config(default = "None")]
    pub local_views: Option<usize>,
    /// Side of a local view in px; None is half the model's input.
    #[config(default = "None")]
    pub local_size: Option<u32>,
    /// A local view's crop area in windows' areas, min and max; None is [0.1, 0.4].
    #[config(default = "None")]
    pub local_crop_area: Option<[f32; 2]>,
}

impl AugmentConfig {
    /// [`AugmentConfig::context`], 1 when unset.
    pub fn context(&self) -> f32 {
        self.context.unwrap_or(1.0)
    }

    /// Local views per image (0 without multi-crop).
    pub fn local_views(&self) -> usize {
        self.local_views.unwrap_or(0)
    }

    /// The local views' augmentation and preprocessing (their crop area and side), None
    /// without local views: [`view`] with these gives one local view.
    pub fn local(&self, pre: &Preprocess) -> Option<(AugmentConfig, Preprocess)> {
        if self.local_views() == 0 {
            return None;
        }
        let mut aug = self.clone();
        aug.crop_area = self.local_crop_area.unwrap_or([0.1, 0.4]);
        let mut pre = pre.clone();
        pre.size = self.local_size.unwrap_or(pre.size / 2).max(8);
        Some((aug, pre))
    }
}

/// One random view of `src` (a square image `context` windows wide about the white cell),
/// `size` x `size`, normalised to CHW floats.
pub fn view(
    src: &RgbImage,
    context: f32,
    cfg: &AugmentConfig,
    pre: &Preprocess,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let img = geometric(src, context, cfg, pre, rng);
    let mut img = colour(img, cfg, rng);
    if cfg.channel_gain > 0.0 {
        let g: [f32; 3] = std::array::from_fn(|_| {
            rng.random_range(1.0 - cfg.channel_gain..=1.0 + cfg.channel_gain)
        });
        for p in img.pixels_mut() {
            p.0 = std::array::from_fn(|c| to_u8(p.0[c] as f32 * g[c]));
        }
    }
    let img = if rng.random::<f32>() < cfg.blur_prob {
        blur3(&img)
    } else {
        img
    };
    let img = if rng.random::<f32>() < cfg.jpeg_prob {
        cellspace_core::shift::reencode_jpeg(&img, rng.random_range(30..=90))
    } else {
        img
    };
    pre.normalize(&img)
}

/// Crop, flip and rotate in one inverse mapping with bilinear sampling. `src` is `context`
/// windows wide about the white cell; the crop's area is drawn in windows, and its centre
/// stays where a crop of the window alone could put it (on the window's centre for a crop
/// as large as the window or larger), so context only ever adds zoomed-out views.
pub fn geometric(
    src: &RgbImage,
    context: f32,
    cfg: &AugmentConfig,
    pre: &Preprocess,
    rng: &mut impl Rng,
) -> RgbImage {
    let size = pre.size;
    let (sw, sh) = (src.width() as f32, src.height() as f32);
    let context = context.max(1.0);
    let (bw, bh) = (sw / context, sh / context);
    let area = rng.random_range(cfg.crop_area[0]..=cfg.crop_area[1]);
    let log_ratio = rng.random_range((3f32 / 4.0).ln()..=(4f32 / 3.0).ln());
    let ratio = log_ratio.exp();
    let cw = (bw * (area * ratio).sqrt()).min(sw);
    let ch = (bh * (area / ratio).sqrt()).min(sh);
    let (slack_x, slack_y) = ((bw - cw).max(0.0) / 2.0, (bh - ch).max(0.0) / 2.0);
    let cx = rng.random_range(sw / 2.0 - slack_x..=sw / 2.0 + slack_x);
    let cy = rng.random_range(sh / 2.0 - slack_y..=sh / 2.0 + slack_y);
    let quarter = rng.random_range(0..4) as f32 * 90.0;
    let small = rng.random_range(-cfg.max_rotation..=cfg.max_rotation);
    let theta = (quarter + small).to_radians();
    let (sin, cos) = theta.sin_cos();
    let fx = if rng.random::<bool>() { -1.0 } else { 1.0 };
    let fy = if rng.random::<bool>() { -1.0 } else { 1.0 };
    let fill = pre.mean_rgb();
    let mut out = RgbImage::new(size, size);
    for (u, v, px) in out.enumerate_pixels_mut() {
        // output pixel centre in [-0.5, 0.5]^2, flipped, rotated, scaled to the crop
        let x = ((u as f32 + 0.5) / size as f32 - 0.5) * fx;
        let y = ((v as f32 + 0.5) / size as f32 - 0.5) * fy;
        let (rx, ry) = (cos * x - sin * y, sin * x + cos * y);
        let sx = cx + rx * cw - 0.5;
        let sy = cy + ry * ch - 0.5;
        *px = Rgb(sample(src, sx, sy, fill));
    }
    out
}

fn sample(src: &RgbImage, x: f32, y: f32, fill: [u8; 3]) -> [u8; 3] {
    let (w, h) = (src.width() as i64, src.height() as i64);
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (ax, ay) = (x - x0 as f32, y - y0 as f32);
    let get = |xi: i64, yi: i64| -> [f32; 3] {
        if xi < 0 || yi < 0 || xi >= w || yi >= h {
            return fill.map(f32::from);
        }
        let p = src.get_pixel(xi as u32, yi as u32).0;
        if p.iter().all(|&c| c < BLACK_THRESHOLD) {
            fill.map(f32::from)
        } else {
            p.map(f32::from)
        }
    };
    let (p00, p10, p01, p11) = (
        get(x0, y0),
        get(x0 + 1, y0),
        get(x0, y0 + 1),
        get(x0 + 1, y0 + 1),
    );
    let mut o = [0u8; 3];
    for c in 0..3 {
        let top = p00[c] * (1.0 - ax) + p10[c] * ax;
        let bot = p01[c] * (1.0 - ax) + p11[c] * ax;
        o[c] = to_u8(top * (1.0 - ay) + bot * ay);
    }
    o
}

/// Brightness, contrast, saturation and hue jitter, each a random factor around identity.
pub fn colour(mut img: RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) -> RgbImage {
    let mut jitter = |s: f32| {
        if s > 0.0 {
            rng.random_range(1.0 - s..=1.0 + s)
        } else {
            1.0
        }
    };
    let (b, c, s) = (
        jitter(cfg.brightness),
        jitter(cfg.contrast),
        jitter(cfg.saturation),
    );
    let hue = if cfg.hue > 0.0 {
        rng.random_range(-cfg.hue..=cfg.hue)
    } else {
        0.0
    };
    let n = (img.width() * img.height()) as f32;
    let mean_gray = img.pixels().map(|p| gray(p.0.map(f32::from))).sum::<f32>() / n;
    // hue rotation about the grey axis (a standard YIQ-free approximation)
    let (hs, hc) = (hue * std::f32::consts::TAU).sin_cos();
    let k: f32 = 1.0 / 3.0;
    let sq = k.sqrt();
    let rot = [
        [
            hc + (1.0 - hc) * k,
            k * (1.0 - hc) - sq * hs,
            k * (1.0 - hc) + sq * hs,
        ],
        [
            k * (1.0 - hc) + sq * hs,
            hc + k * (1.0 - hc),
            k * (1.0 - hc) - sq * hs,
        ],
        [
            k * (1.0 - hc) - sq * hs,
            k * (1.0 - hc) + sq * hs,
            hc + k * (1.0 - hc),
        ],
    ];
    for p in img.pixels_mut() {
        let mut v = p.0.map(f32::from).map(|x| x * b);
        v = v.map(|x| (x - mean_gray) * c + mean_gray);
        let g = gray(v);
        v = v.map(|x| (x - g) * s + g);
        let r = [0, 1, 2].map(|i| rot[i][0] * v[0] + rot[i][1] * v[1] + rot[i][2] * v[2]);
        p.0 = r.map(to_u8);
    }
    img
}

/// Rounded to the nearest byte, halves up, clamped to 0..=255: `f32::round` is a libm call
/// here (no SSE4.1 in the baseline target) and was 3% of a LibTorch training profile.
fn to_u8(x: f32) -> u8 {
    (x.clamp(0.0, 255.0) + 0.5) as u8
}

fn gray(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// 3x3 Gaussian blur (1-2-1 kernel), edges clamped.
pub fn blur3(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let k = [1.0, 2.0, 1.0];
    RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0f32; 3];
        for (dy, ky) in (-1i64..=1).zip(k) {
            for (dx, kx) in (-1i64..=1).zip(k) {
                let xi = (x as i64 + dx).clamp(0, w as i64 - 1) as u32;
                let yi = (y as i64 + dy).clamp(0, h as i64 - 1) as u32;
                let p = img.get_pixel(xi, yi).0;
                for c in 0..3 {
                    acc[c] += p[c] as f32 * kx * ky;
                }
            }
        }
        Rgb(acc.map(|a| to_u8(a / 16.0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn views_have_shape_are_seeded_and_never_show_black_padding() {
        let pre = Preprocess::blood_cells(16);
        // a source with black corners, as the dataset's rotated copies have
        let src = RgbImage::from_fn(40, 40, |x, y| {
            if x < 8 && y < 8 {
                Rgb([0, 0, 0])
            } else {
                Rgb([180, 120, 160])
            }
        });
        let cfg = AugmentConfig::new().with_blur_prob(0.0).with_jpeg_prob(0.5);
        let a = view(
            &src,
            1.0,
            &cfg,
            &pre,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
        );
        let b = view(
            &src,
            1.0,
            &cfg,
            &pre,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
        );
        assert_eq!(a.len(), 3 * 16 * 16);
        assert_eq!(a, b, "same seed, same view");
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let img = geometric(&src, 1.0, &cfg, &pre, &mut rng);
            assert!(
                img.pixels()
                    .all(|p| p.0.iter().any(|&c| c >= BLACK_THRESHOLD))
            );
        }
    }

    /// Share of a view's pixels bluer than red, over 40 seeds, of a source `context` windows
    /// wide whose window (its central `1/context`) is red and the field about it blue.
    fn blue_share(context: f32, crop_area: [f32; 2]) -> f32 {
        let pre = Preprocess::blood_cells(16);
        let (side, inner) = (96u32, (96.0 / context) as u32);
        let lo = (side - inner) / 2;
        let inside = |v: u32| v >= lo && v < lo + inner;
        let src = RgbImage::from_fn(side, side, |x, y| {
            if inside(x) && inside(y) {
                Rgb([220, 40, 40])
            } else {
                Rgb([40, 40, 220])
            }
        });
        let cfg = AugmentConfig::new()
            .with_crop_area(crop_area)
            .with_max_rotation(0.0);
        let (mut blue, mut all) = (0usize, 0usize);
        for seed in 0..40 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let img = geometric(&src, context, &cfg, &pre, &mut rng);
            blue += img.pixels().filter(|p| p.0[2] > p.0[0]).count();
            all += img.pixels().count();
        }
        blue as f32 / all as f32
    }

    #[test]
    fn context_adds_zoomed_out_views_and_keeps_zoomed_in_ones_on_the_window() {
        // crops no larger than the window stay inside it, whatever field lies about it
        assert_eq!(blue_share(2.0, [0.2, 0.2]), 0.0);
        // a crop of the window's area sits on the window's centre: only its aspect jitter
        // reaches past the window's sides
        let one = blue_share(2.0, [1.0, 1.0]);
        assert!(one < 0.1, "blue share {one}");
        // a crop of four windows' area shows the field about the window
        let wide = blue_share(2.0, [4.0, 4.0]);
        assert!(wide > 0.4, "blue share {wide}");
    }

    #[test]
    fn configs_written_before_context_read_as_the_window_alone() {
        let old = r#"{"blur_prob":0.2,"brightness":0.1,"channel_gain":0.0,"contrast":0.1,
            "crop_area":[0.4,1.0],"hue":0.02,"jpeg_prob":0.0,"max_rotation":15.0,"saturation":0.1}"#;
        let cfg: AugmentConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg.context(), 1.0);
        // nor multi-crop: two views, as those runs were trained
        assert_eq!(cfg.local_views(), 0);
        assert!(cfg.local(&Preprocess::blood_cells(16)).is_none());
        assert_eq!(cfg, AugmentConfig::new());
    }

    #[test]
    fn identity_colour_jitter_keeps_pixels() {
        let cfg = AugmentConfig::new()
            .with_brightness(0.0)
            .with_contrast(0.0)
            .with_saturation(0.0)
            .with_hue(0.0);
        let src = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 77]));
        let out = colour(
            src.clone(),
            &cfg,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
        );
        for (a, b) in src.pixels().zip(out.pixels()) {
            for c in 0..3 {
                assert!((a.0[c] as i32 - b.0[c] as i32).abs() <= 1);
            }
        }
    }
}
