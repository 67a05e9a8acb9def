//! Reading an image file into RGB pixels, for every side alike: bounded in file size, pixel
//! count and decoder memory before anything is allocated, a cut-short JPEG refused rather than
//! half-decoded, and the camera's EXIF orientation applied, so that a phone photo taken
//! sideways is embedded (and was trained on) upright.

use crate::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage, metadata::Orientation};
use std::io::Cursor;
use std::path::Path;

/// Largest image accepted, in pixels, unless `CELLSPACE_MAX_PIXELS` says otherwise: 16 Mpx
/// (4,000 x 4,000) is 200 times a 320x240 field; a larger declared size is refused from the
/// header, never decoded (a 143 KB PNG can declare 49 Mpx, 150 MB of RGB).
pub const MAX_PIXELS: u64 = 16_000_000;

/// The pixel cap in force (`CELLSPACE_MAX_PIXELS`, else [`MAX_PIXELS`]).
pub fn max_pixels() -> u64 {
    env_limit("CELLSPACE_MAX_PIXELS", MAX_PIXELS)
}

/// A limit from the environment variable `name`, else `default` (also when unparsable).
fn env_limit(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
/// Largest decoder allocation in bytes (bounds memory per decoding worker).
pub const MAX_DECODE_BYTES: u64 = 200 * 1024 * 1024;
/// Largest image file read, in bytes, unless `CELLSPACE_MAX_FILE_BYTES` says otherwise: a
/// 320x240 JPEG field is ~10 KB and a large uncompressed TIFF scan a few tens of MB.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The file-size cap in force (`CELLSPACE_MAX_FILE_BYTES`, else [`MAX_FILE_BYTES`]).
pub fn max_file_bytes() -> u64 {
    env_limit("CELLSPACE_MAX_FILE_BYTES", MAX_FILE_BYTES)
}

/// Read an image file's bytes: only a regular file (after following symlinks), and at most
/// [`max_file_bytes`]. A device (`/dev/zero`), a FIFO or a 2 GB sparse file is refused before
/// anything is read, so no input can hang a run or exhaust its memory.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(
            path,
            "not a regular file (a folder, device or pipe); only image files are read",
        ));
    }
    let cap = max_file_bytes();
    let too_large = |n: u64| {
        Error::invalid(
            path,
            format!(
                "file too large ({n} bytes > {cap}); set CELLSPACE_MAX_FILE_BYTES to accept larger images"
            ),
        )
    };
    if meta.len() > cap {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Decode an image file into 8-bit RGB, whatever its format, channels or bit depth, with
/// bounded memory. Errors name the file and the problem.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = read_image_file(path)?;
    decode_rgb(&bytes).map_err(|reason| Error::Image {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decode image bytes (any supported format) into 8-bit RGB; the error is a plain reason.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image (unrecognised format)".into());
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        return Err("truncated JPEG (no end-of-image marker): the file was cut short".into());
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("unreadable header: {e}"))?;
    let cap = max_pixels();
    if (w as u64) * (h as u64) > cap {
        return Err(format!(
            "image too large ({w}x{h} > {cap} pixels); downscale it first or set CELLSPACE_MAX_PIXELS"
        ));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    // a camera that stores the sensor's pixels and says how to turn them (EXIF orientation):
    // an unreadable tag is no reason to refuse the pixels
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(img.into_rgb8())
}

/// Whether a JPEG ends with its end-of-image marker (FF D9), ignoring trailing zero padding.
/// The decoder fills a cut file's missing rows silently; without this check a file cut at
/// 10-99% embeds as garbage. Entropy-coded data never holds FF D9, so a cut file lacks it.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    end >= 2 && bytes[end - 2..end] == [0xFF, 0xD9]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_jpeg_is_refused_whole_one_is_not() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode_rgb(&jpeg).is_ok());
        for cut in [10, 50, 90, 99] {
            let n = jpeg.len() * cut / 100;
            let err = decode_rgb(&jpeg[..n]).unwrap_err();
            assert!(err.contains("truncated"), "{cut}%: {err}");
        }
        let mut padded = jpeg.clone();
        padded.extend([0u8; 16]);
        assert!(
            decode_rgb(&padded).is_ok(),
            "zero padding after the end is fine"
        );
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let err = read_image_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a regular file") && err.contains("/dev/zero"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("sparse.jpeg");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(2 * 1024 * 1024 * 1024)
            .unwrap();
        let err = read_image_file(&big).unwrap_err().to_string();
        assert!(
            err.contains("too large") && err.contains("sparse.jpeg"),
            "{err}"
        );
        let err = read_image_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn decode_rejects_garbage_and_empty() {
        assert!(decode_rgb(b"").unwrap_err().contains("empty"));
        assert!(
            decode_rgb(b"hello, I am text")
                .unwrap_err()
                .contains("not an image")
        );
    }

    /// A JPEG carrying an EXIF APP1 segment with `orientation`.
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        // "Exif\0\0", a little-endian TIFF header, one IFD with one SHORT entry (0x0112)
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        exif.extend(orientation.to_le_bytes());
        exif.extend([0, 0, 0, 0, 0, 0]);
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(((exif.len() + 2) as u16).to_be_bytes());
        out.extend(exif);
        out.extend(&jpeg[2..]);
        out
    }

    /// Case 20 of the hardening round: a phone photo's EXIF orientation was ignored, so the
    /// cell was embedded (and trained on) sideways.
    #[test]
    fn case_20_exif_orientation_is_honoured() {
        // 48x24: red on the left half, blue on the right
        let img = RgbImage::from_fn(48, 24, |x, _| {
            if x < 24 {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([30, 30, 220])
            }
        });
        let plain = decode_rgb(&jpeg_with_orientation(&img, 1)).unwrap();
        assert_eq!(plain.dimensions(), (48, 24));
        // 6: the stored pixels are to be turned 90° clockwise: the left half becomes the top
        let turned = decode_rgb(&jpeg_with_orientation(&img, 6)).unwrap();
        assert_eq!(turned.dimensions(), (24, 48), "orientation 6 not applied");
        let top = turned.get_pixel(12, 6).0;
        let bottom = turned.get_pixel(12, 42).0;
        assert!(top[0] > 150 && top[2] < 100, "top {top:?}");
        assert!(bottom[2] > 150 && bottom[0] < 100, "bottom {bottom:?}");
    }
}
