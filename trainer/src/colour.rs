//! A fixed (never trained) soft colour histogram computed inside the model graph, so it is
//! exported to ONNX with the encoder. Colour carries class information in stained cells (a
//! plain 8x8x8 histogram beats every self-supervised CNN of the reference runs), so the served
//! embedding may be the learned one, the histogram, or a weighted blend (fixed by the
//! configuration, or chosen at export from a `trainer cv` table over source groups):
//! cos(blend) = (1 - w²) cos(learned) + w² cos(histogram).

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::prelude::*;
use cellspace_core::preprocess::Preprocess;

/// Bins per channel (8 -> 512-d joint histogram, as the baseline).
pub const BINS: usize = 8;
pub const DIM: usize = BINS * BINS * BINS;

/// Soft joint RGB histogram: each pixel casts one vote, shared between bins by the Gaussian
/// weight exp(-|colour - centre|² / 2σ²) (σ = 0.1 bin: nearly the hard 8x8x8 baseline, which
/// held-out groups favoured over smoother votes: kNN-200 0.61 at σ 0.1 against 0.50 at σ 0.5);
/// votes are averaged over the image, square-rooted and L2-normalised. The squared distance to all 512 centres is one fixed 1x1
/// convolution of `[x, x²]` (it is quadratic in x), which keeps the graph exportable with a
/// dynamic batch axis. Every second pixel of each row and column votes (stride 2: 4x cheaper,
/// no colour mixing), and padding pixels (exactly the mean colour after
/// `Preprocess::normalize`, where the black corners went) do not vote.
#[derive(Module, Debug)]
pub struct ColourHistogram {
    /// `[x, x²]` (6 channels) -> squared scaled distance to each of the 512 bin centres.
    pub distance: Conv2d,
    /// `[x, x²]` -> |x|² (zero only on padding).
    pub norm: Conv2d,
    pub pool: AdaptiveAvgPool2d,
}

/// Gaussian σ of a vote, in bin widths, and the pixel stride (chosen on held-out groups).
pub const SIGMA_BINS: f32 = 0.1;
pub const STRIDE: usize = 2;

/// |x|² below this is padding (a real pixel is at least ~1e-6 away from the mean colour).
const PADDING_EPS: f32 = 1e-7;

impl ColourHistogram {
    pub fn new(pre: &Preprocess, device: &Device) -> Self {
        Self::with(pre, SIGMA_BINS, STRIDE, device)
    }

    /// `sigma_bins`: Gaussian σ in bin widths; `stride`: every stride-th pixel votes.
    pub fn with(pre: &Preprocess, sigma_bins: f32, stride: usize, device: &Device) -> Self {
        let sigma = sigma_bins / BINS as f32;
        let mut conv = Conv2dConfig::new([6, DIM], [1, 1])
            .with_stride([stride, stride])
            .init(device);
        let mut w = vec![0f32; DIM * 6];
        let mut b = vec![0f32; DIM];
        for r in 0..BINS {
            for g in 0..BINS {
                for bl in 0..BINS {
                    let k = (r * BINS + g) * BINS + bl;
                    for (c, bin) in [r, g, bl].into_iter().enumerate() {
                        let centre = (bin as f32 + 0.5) / BINS as f32;
                        // input x = (v - mean) / std; z = (v - centre) / σ = a x + d
                        let a = pre.std[c] / sigma;
                        let d = (pre.mean[c] - centre) / sigma;
                        w[k * 6 + c] = 2.0 * a * d;
                        w[k * 6 + 3 + c] = a * a;
                        b[k] += d * d;
                    }
                }
            }
        }
        conv.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [DIM, 6, 1, 1]),
            device,
        ));
        conv.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [DIM]),
            device,
        )));
        let mut norm = Conv2dConfig::new([6, 1], [1, 1])
            .with_stride([stride, stride])
            .with_bias(false)
            .init(device);
        let nw = vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        norm.weight =
            Param::from_tensor(Tensor::from_data(TensorData::new(nw, [1, 6, 1, 1]), device));
        Self {
            distance: conv,
            norm,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
        }
    }

    /// `[B, 3, H, W]` normalised input -> `[B, 512]` L2-normalised histogram.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, _, _, _] = x.dims();
        let features = Tensor::cat(vec![x.clone(), x.clone() * x], 1); // [B, 6, H, W]
        let votes = self
            .distance
            .forward(features.clone())
            .mul_scalar(-0.5)
            .exp(); // [B, 512, H/2, W/2]
        let real = self
            .norm
            .forward(features)
            .mul_scalar(-1.0 / PADDING_EPS)
            .exp()
            .neg()
            .add_scalar(1.0); // [B, 1, H/2, W/2]
        // each real pixel casts one vote in all, however far from the bin centres it lies
        let total = votes.clone().sum_dim(1).add_scalar(1e-30); // [B, 1, H/2, W/2]
        let hist = self.pool.forward(votes * (real / total)).reshape([b, DIM]); // [B, 512]
        crate::model::l2_normalize(hist.add_scalar(1e-12).sqrt())
    }
}

/// What the exported model computes: the encoder's embedding, optionally blended with colour.
#[derive(Module, Debug)]
pub struct RetrievalModel {
    pub encoder: crate::model::Encoder,
    pub colour: ColourHistogram,
}

impl RetrievalModel {
    /// `colour_weight` w in [0, 1]: 0 = learned embedding only, 1 = histogram only.
    pub fn forward(
        &self,
        x: Tensor<4>,
        which: crate::model::EmbeddingOutput,
        colour_weight: f32,
    ) -> Tensor<2> {
        served(&self.colour, x, colour_weight, |x| {
            self.encoder.output(which, x)
        })
    }
}

/// The served embedding of `x` from its learned one (`learned`) and the colour histogram at
/// weight `colour_weight`: the learned alone at 0, the histogram alone at 1, else the blend.
pub fn served(
    colour: &ColourHistogram,
    x: Tensor<4>,
    colour_weight: f32,
    learned: impl FnOnce(Tensor<4>) -> Tensor<2>,
) -> Tensor<2> {
    if colour_weight <= 0.0 {
        return learned(x);
    }
    let hist = colour.forward(x.clone());
    if colour_weight >= 1.0 {
        return hist;
    }
    blend_graph(learned(x), hist, colour_weight)
}

/// The served blend of a learned embedding `[B, dl]` and the histogram `[B, dh]` at weight
/// `w` in (0, 1): `[B, dl + dh]`, L2-normalised when both are.
pub fn blend_graph(learned: Tensor<2>, hist: Tensor<2>, w: f32) -> Tensor<2> {
    let a = (1.0 - w * w).sqrt();
    Tensor::cat(vec![learned.mul_scalar(a), hist.mul_scalar(w)], 1)
}

/// Blend two sets of L2-normalised rows the way [`RetrievalModel::forward`] does.
pub fn blend(learned: &[f32], dl: usize, hist: &[f32], dh: usize, w: f32) -> Vec<f32> {
    let a = (1.0 - w * w).sqrt();
    let n = learned.len() / dl;
    let mut out = Vec::with_capacity(n * (dl + dh));
    for i in 0..n {
        out.extend(learned[i * dl..(i + 1) * dl].iter().map(|x| x * a));
        out.extend(hist[i * dh..(i + 1) * dh].iter().map(|x| x * w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    #[test]
    fn soft_histogram_agrees_with_the_hard_baseline_on_flat_colours() {
        let pre = Preprocess::blood_cells(8);
        let device = Device::flex();
        let colour = ColourHistogram::new(&pre, &device);
        // two flat images in the same hard bin, one in another bin
        let imgs = [[200u8, 100, 150], [205, 98, 148], [40, 200, 30]];
        let flat: Vec<f32> = imgs
            .iter()
            .flat_map(|c| pre.normalize(&RgbImage::from_pixel(8, 8, Rgb(*c))))
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [3, 3, 8, 8]), &device);
        let h: Vec<f32> = colour.forward(x).into_data().try_to_vec().unwrap();
        let row = |i: usize| &h[i * DIM..(i + 1) * DIM];
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!((cos(row(0), row(0)) - 1.0).abs() < 1e-4, "normalised");
        assert!(
            cos(row(0), row(1)) > 0.95,
            "same bin: {}",
            cos(row(0), row(1))
        );
        assert!(
            cos(row(0), row(2)) < 0.05,
            "far colours: {}",
            cos(row(0), row(2))
        );
        // the strongest bin is the hard bin of the colour
        let argmax = row(0)
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        let bin = |v: u8| v as usize * BINS / 256;
        assert_eq!(argmax, (bin(200) * BINS + bin(100)) * BINS + bin(150));
    }

    #[test]
    fn blend_matches_the_graph() {
        let l = [0.6f32, 0.8];
        let h = [1.0f32, 0.0, 0.0];
        let b = blend(&l, 2, &h, 3, 0.6);
        assert!((b.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((b[0] - 0.48).abs() < 1e-6 && (b[2] - 0.6).abs() < 1e-6);
    }
}
