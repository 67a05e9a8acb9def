//! The colour-histogram baseline (8x8x8 RGB bins, square-rooted, L2-normalised). Colour alone
//! separates these classes surprisingly well, so every learned model is printed beside it.

use crate::preprocess::{BLACK_THRESHOLD, center_square};
use image::RgbImage;

pub const BINS: usize = 8;
pub const DIM: usize = BINS * BINS * BINS;

/// Histogram embedding of the central square, ignoring black padding pixels.
pub fn histogram_embedding(img: &RgbImage) -> Vec<f32> {
    let sq = center_square(img);
    let mut h = vec![0f32; DIM];
    for p in sq.pixels() {
        if p.0.iter().all(|&c| c < BLACK_THRESHOLD) {
            continue;
        }
        let b = |c: u8| c as usize * BINS / 256;
        h[(b(p.0[0]) * BINS + b(p.0[1])) * BINS + b(p.0[2])] += 1.0;
    }
    h.iter_mut().for_each(|x| *x = x.sqrt());
    crate::l2_normalize(&mut h);
    h
}
