//! The robustness protocol's shifts: how another lab's microscope changes a field. Each is
//! applied to the raw field, before any of the product's preprocessing, so that what is
//! measured is what a user with that microscope gets.
//!
//! Spec syntax (`trainer robustness --shifts`): shifts separated by `;`, a combination joined
//! by `+`, each `name:value`:
//! `lamp:R,G,B` (per-channel gain, clipped), `sat:F` (HSV saturation x F), `hue:D` (HSV hue
//! plus D degrees), `gamma:G` (`255·(I/255)^G`: > 1 darker), `mag:M` (magnification about the
//! white cell), `res:F` (the whole field resampled to F of its size), `blur:S` (Gaussian σ in
//! pixels), `jpeg:Q` (re-encoded at quality Q). `default` is the protocol of the README.
//!
//! Magnification re-samples real pixels. `mag:M` with M > 1 cuts the `1/M` part of the field
//! around the white cell and resizes it back to the field's size (as a higher-power objective
//! with the same camera would see it, less sharp). With M < 1 a microscope would see more field
//! than the image holds: the field is resized to M of its size and the rest of the frame is
//! filled with mirror images of it (real red cells and background, at the same scale), so the
//! frame keeps its size and holds more cells, as the lower-power objective's would.

use image::{RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One change of a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shift {
    Lamp([f32; 3]),
    Saturation(f32),
    Hue(f32),
    Gamma(f32),
    Magnify(f32),
    Resolution(f32),
    Blur(f32),
    Jpeg(u8),
}

/// A named list of shifts applied in order (one entry: a single shift).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShiftSpec {
    pub name: String,
    pub steps: Vec<Shift>,
}

/// The README's protocol: every family of the robustness issue at its extremes, and
/// combinations of them.
pub const DEFAULT: &str = "lamp:1.15,1,0.85;lamp:0.85,1,1.15;lamp:1,1.15,0.9;lamp:0.9,0.9,1.15;\
sat:0.6;sat:1.4;hue:-20;hue:20;gamma:0.7;gamma:1.4;mag:0.5;mag:0.7;mag:1.5;mag:2;\
res:0.5;res:0.75;blur:1.5;jpeg:25;\
lamp:1.1,1,0.9+sat:0.7;gamma:1.25+hue:10+jpeg:40;mag:1.5+lamp:0.9,1,1.1;res:0.5+blur:1+sat:1.2;\
mag:0.7+gamma:0.8+hue:-10";

impl fmt::Display for Shift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shift::Lamp([r, g, b]) => write!(f, "lamp:{r},{g},{b}"),
            Shift::Saturation(s) => write!(f, "sat:{s}"),
            Shift::Hue(h) => write!(f, "hue:{h}"),
            Shift::Gamma(g) => write!(f, "gamma:{g}"),
            Shift::Magnify(m) => write!(f, "mag:{m}"),
            Shift::Resolution(r) => write!(f, "res:{r}"),
            Shift::Blur(s) => write!(f, "blur:{s}"),
            Shift::Jpeg(q) => write!(f, "jpeg:{q}"),
        }
    }
}

/// Parse a spec (see the module docs); `default` expands to [`DEFAULT`].
pub fn parse(spec: &str) -> Result<Vec<ShiftSpec>, String> {
    let spec = if spec.trim() == "default" {
        DEFAULT
    } else {
        spec
    };
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|combo| {
            let steps = combo
                .split('+')
                .map(parse_one)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ShiftSpec {
                name: combo.to_string(),
                steps,
            })
        })
        .collect()
}

fn parse_one(s: &str) -> Result<Shift, String> {
    let (name, value) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("shift '{s}': expected name:value"))?;
    let num = |v: &str| -> Result<f32, String> {
        let x: f32 = v
            .trim()
            .parse()
            .map_err(|_| format!("shift '{s}': '{v}' is not a number"))?;
        if x.is_finite() && x > 0.0 || name == "hue" && x.is_finite() {
            Ok(x)
        } else {
            Err(format!("shift '{s}': {x} is out of range"))
        }
    };
    Ok(match name {
        "lamp" => {
            let v: Vec<f32> = value.split(',').map(num).collect::<Result<_, _>>()?;
            let [r, g, b] = v[..] else {
                return Err(format!("shift '{s}': lamp takes three gains R,G,B"));
            };
            Shift::Lamp([r, g, b])
        }
        "sat" => Shift::Saturation(num(value)?),
        "hue" => Shift::Hue(num(value)?),
        "gamma" => Shift::Gamma(num(value)?),
        "mag" => Shift::Magnify(num(value)?.clamp(0.1, 10.0)),
        "res" => Shift::Resolution(num(value)?.clamp(0.05, 4.0)),
        "blur" => Shift::Blur(num(value)?),
        "jpeg" => Shift::Jpeg(num(value)?.clamp(1.0, 100.0) as u8),
        _ => {
            return Err(format!(
                "shift '{s}': unknown shift '{name}' (lamp, sat, hue, gamma, mag, res, blur, jpeg)"
            ));
        }
    })
}

impl ShiftSpec {
    /// How many times larger the spec makes a red cell in pixels: the product of its
    /// magnifications and resolution changes (1 for colour, blur and JPEG).
    pub fn scale(&self) -> f32 {
        self.steps
            .iter()
            .map(|s| match *s {
                Shift::Magnify(m) => m,
                Shift::Resolution(r) => r,
                _ => 1.0,
            })
            .product()
    }

    /// Apply every step to `img`; `centre` is the white cell's position (for `mag`).
    pub fn apply(&self, img: &RgbImage, centre: (f32, f32)) -> RgbImage {
        let mut out = img.clone();
        let mut c = centre;
        for s in &self.steps {
            let (w0, h0) = (out.width() as f32, out.height() as f32);
            out = s.apply(&out, c);
            // a resize moves the centre with the pixels (magnification keeps it in place)
            if let Shift::Resolution(_) = s {
                c = (
                    c.0 * out.width() as f32 / w0,
                    c.1 * out.height() as f32 / h0,
                );
            }
        }
        out
    }
}

impl Shift {
    pub fn apply(&self, img: &RgbImage, centre: (f32, f32)) -> RgbImage {
        match *self {
            Shift::Lamp(g) => per_pixel(img, |p| std::array::from_fn(|c| p[c] * g[c])),
            Shift::Saturation(f) => {
                per_pixel(img, |p| hsv_map(p, |h, s, v| (h, (s * f).min(1.0), v)))
            }
            Shift::Hue(d) => per_pixel(img, |p| {
                hsv_map(p, |h, s, v| ((h + d / 360.0).rem_euclid(1.0), s, v))
            }),
            Shift::Gamma(g) => per_pixel(img, |p| p.map(|c| 255.0 * (c / 255.0).powf(g))),
            Shift::Magnify(m) => magnify(img, m, centre),
            Shift::Resolution(f) => {
                let w = ((img.width() as f32 * f).round() as u32).max(1);
                let h = ((img.height() as f32 * f).round() as u32).max(1);
                image::imageops::resize(img, w, h, FilterType::Triangle)
            }
            Shift::Blur(s) => image::imageops::blur(img, s),
            Shift::Jpeg(q) => reencode_jpeg(img, q),
        }
    }
}

/// Apply `f` to every pixel that is not padding (float RGB in 0..255, clipped after).
fn per_pixel(img: &RgbImage, f: impl Fn([f32; 3]) -> [f32; 3]) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        if crate::field::is_padding(p.0) {
            continue;
        }
        p.0 = f(p.0.map(f32::from)).map(|c| (c.clamp(0.0, 255.0) + 0.5) as u8);
    }
    out
}

/// Map a pixel through HSV (h in 0..1).
fn hsv_map(p: [f32; 3], f: impl Fn(f32, f32, f32) -> (f32, f32, f32)) -> [f32; 3] {
    let (h, s, v) = to_hsv(p);
    let (h, s, v) = f(h, s, v);
    from_hsv(h, s, v)
}

/// RGB (0..255 floats) to HSV (each in 0..1).
pub fn to_hsv(p: [f32; 3]) -> (f32, f32, f32) {
    let [r, g, b] = p.map(|c| c.clamp(0.0, 255.0) / 255.0);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    let d = max - min;
    let h = if d <= 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    let s = if max <= 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

/// HSV (each in 0..1) to RGB (0..255 floats).
pub fn from_hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let fr = h * 6.0 - i;
    let (pp, q, t) = (
        v * (1.0 - s),
        v * (1.0 - fr * s),
        v * (1.0 - (1.0 - fr) * s),
    );
    let rgb = match (i as i32).rem_euclid(6) {
        0 => [v, t, pp],
        1 => [q, v, pp],
        2 => [pp, v, t],
        3 => [pp, q, v],
        4 => [t, pp, v],
        _ => [v, pp, q],
    };
    rgb.map(|c| c * 255.0)
}

fn magnify(img: &RgbImage, m: f32, centre: (f32, f32)) -> RgbImage {
    let (w, h) = img.dimensions();
    if m >= 1.0 {
        let (cw, ch) = ((w as f32 / m).max(1.0), (h as f32 / m).max(1.0));
        let x0 = (centre.0 - cw / 2.0).clamp(0.0, w as f32 - cw);
        let y0 = (centre.1 - ch / 2.0).clamp(0.0, h as f32 - ch);
        let cut =
            image::imageops::crop_imm(img, x0 as u32, y0 as u32, cw as u32, ch as u32).to_image();
        return image::imageops::resize(&cut, w, h, FilterType::Triangle);
    }
    let (sw, sh) = (
        ((w as f32 * m).round() as u32).max(1),
        ((h as f32 * m).round() as u32).max(1),
    );
    let small = image::imageops::resize(img, sw, sh, FilterType::Triangle);
    // the small field where the white cell stays at the frame's same relative place
    let ox = (centre.0 * (1.0 - m)).round() as i64;
    let oy = (centre.1 * (1.0 - m)).round() as i64;
    let mirror = |v: i64, n: i64| {
        let period = 2 * n;
        let r = v.rem_euclid(period);
        if r < n { r } else { period - 1 - r }
    };
    RgbImage::from_fn(w, h, |x, y| {
        let sx = mirror(x as i64 - ox, sw as i64);
        let sy = mirror(y as i64 - oy, sh as i64);
        *small.get_pixel(sx as u32, sy as u32)
    })
}

/// `img` re-encoded as a JPEG of `quality` (unchanged if encoding fails).
pub fn reencode_jpeg(img: &RgbImage, quality: u8) -> RgbImage {
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
    if img.write_with_encoder(enc).is_err() {
        return img.clone();
    }
    image::load_from_memory(&buf)
        .map(|i| i.into_rgb8())
        .unwrap_or_else(|_| img.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn a_spec_scales_red_cells_by_its_magnifications_and_resolutions() {
        let specs = parse("mag:2;res:0.5+blur:1;mag:1.5+res:0.5+lamp:1,1,1.1;hue:20").unwrap();
        let scales: Vec<f32> = specs.iter().map(ShiftSpec::scale).collect();
        assert_eq!(scales, [2.0, 0.5, 0.75, 1.0]);
    }

    fn rgb(r: u8, g: u8, b: u8) -> Rgb<u8> {
        Rgb([r, g, b])
    }

    #[test]
    fn the_default_protocol_parses_and_names_itself() {
        let specs = parse("default").unwrap();
        assert!(specs.len() >= 20, "{}", specs.len());
        assert!(specs.iter().any(|s| s.steps.len() == 3));
        assert!(parse("lamp:1,2").unwrap_err().contains("three"));
        assert!(parse("zoom:2").unwrap_err().contains("unknown"));
        assert!(parse("gamma:nan").is_err());
        assert!(parse("sat:-1").is_err());
    }

    #[test]
    fn colour_shifts_do_what_they_say() {
        let img = RgbImage::from_pixel(8, 8, rgb(200, 150, 160));
        let c = (4.0, 4.0);
        let p = |s: &str| parse(s).unwrap()[0].apply(&img, c).get_pixel(0, 0).0;
        assert_eq!(p("lamp:1.1,1,0.5"), [220, 150, 80]);
        let pale = p("sat:0.5");
        assert_eq!(pale[0], 200, "value kept");
        assert!(pale[1] > 150 && pale[2] > 160, "{pale:?}");
        assert!(p("gamma:1.4")[0] < 200);
        // a hue turn of 360 degrees is the identity
        let full = p("hue:360");
        for (f, o) in full.iter().zip(img.get_pixel(0, 0).0) {
            assert!((*f as i32 - o as i32).abs() <= 1);
        }
    }

    #[test]
    fn magnification_keeps_the_frame_and_scales_content() {
        // a vertical stripe 10 px wide at x = 100..110
        let img = RgbImage::from_fn(320, 240, |x, _| {
            if (100..110).contains(&x) {
                rgb(50, 50, 50)
            } else {
                rgb(220, 220, 220)
            }
        });
        let dark = |i: &RgbImage| {
            (0..i.width())
                .filter(|&x| i.get_pixel(x, 120).0[0] < 135)
                .count()
        };
        let big = parse("mag:2").unwrap()[0].apply(&img, (105.0, 120.0));
        assert_eq!(big.dimensions(), (320, 240));
        assert!((dark(&big) as i32 - 20).abs() <= 2, "{}", dark(&big));
        let small = parse("mag:0.5").unwrap()[0].apply(&img, (105.0, 120.0));
        assert_eq!(small.dimensions(), (320, 240));
        // the stripe is 5 px wide now, and mirror copies of the field fill the frame
        assert!(dark(&small) >= 10, "{}", dark(&small));
        assert!(
            small.get_pixel(105, 120).0[0] < 135,
            "the white cell stays in place"
        );
        let half = parse("res:0.5").unwrap()[0].apply(&img, (0.0, 0.0));
        assert_eq!(half.dimensions(), (160, 120));
    }
}
