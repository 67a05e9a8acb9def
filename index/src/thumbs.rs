//! What the lab page shows of a cell: the window the model looked through (around the located
//! white cell, or the central square for a whole-field model), as PNG bytes or a data URL, so a
//! person sees exactly the crop that was embedded.

use cellspace_core::preprocess::Preprocess;
use image::RgbImage;

/// Side of a thumbnail in pixels (the window is shown at about its source resolution).
pub const THUMB_SIDE: u32 = 128;

/// The embedded window of `img`, as PNG bytes `THUMB_SIDE` pixels wide.
pub fn window_png(pre: &Preprocess, img: &RgbImage) -> Vec<u8> {
    thumb_png(&pre.window(img).0)
}

/// A window as a [`THUMB_SIDE`] px square PNG.
pub fn thumb_png(window: &RgbImage) -> Vec<u8> {
    png(&image::imageops::resize(
        window,
        THUMB_SIDE,
        THUMB_SIDE,
        image::imageops::FilterType::Triangle,
    ))
}

/// A whole field as a PNG whose longer side is at most `side` px (never enlarged).
pub fn scaled_png(img: &RgbImage, side: u32) -> Vec<u8> {
    let f = (side as f32 / img.width().max(img.height()).max(1) as f32).min(1.0);
    let (w, h) = (
        ((img.width() as f32 * f).round() as u32).max(1),
        ((img.height() as f32 * f).round() as u32).max(1),
    );
    png(&image::imageops::resize(
        img,
        w,
        h,
        image::imageops::FilterType::Triangle,
    ))
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding of an in-memory image");
    out.into_inner()
}

/// `data:image/png;base64,...` of PNG bytes.
pub fn png_data_url(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64(png))
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn thumbnail_is_the_window_around_the_cell() {
        let pre = Preprocess::blood_cells(16);
        let img = RgbImage::from_fn(320, 240, |x, y| {
            let (dx, dy) = (x as i64 - 270, y as i64 - 60);
            if dx * dx + dy * dy < 300 {
                image::Rgb([130, 90, 230])
            } else {
                image::Rgb([200, 150, 160])
            }
        });
        let png = window_png(&pre, &img);
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (THUMB_SIDE, THUMB_SIDE));
        let mid = back.get_pixel(THUMB_SIDE / 2, THUMB_SIDE / 2).0;
        assert!(
            mid[2] as i32 - mid[1] as i32 > 100,
            "the nucleus is in the middle: {mid:?}"
        );
    }
}
