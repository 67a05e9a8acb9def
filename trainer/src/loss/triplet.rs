//! Triplet loss with batch-hard negative mining.

use super::{LossParams, MASK, SelfSupervisedLoss, pair_setup, positive_index};
use crate::model::EmbeddingOutput;
use burn::prelude::*;

/// Configuration of [`TripletLoss`].
#[derive(Config, Debug)]
pub struct TripletLossConfig {
    /// The margin between the positive's distance and the hardest negative's.
    #[config(default = 0.2)]
    pub margin: f32,
    /// Negatives with cosine above this are ignored as probable same-kind false negatives
    /// (1.0: none ignored).
    #[config(default = 1.0)]
    pub fn_threshold: f32,
}

impl TripletLossConfig {
    pub fn init(&self) -> TripletLoss {
        TripletLoss {
            margin: self.margin,
            fn_threshold: self.fn_threshold,
        }
    }
}

/// Triplet loss with batch-hard mining. Distances are Euclidean between unit vectors,
/// `sqrt(2 - 2 cos)`. Each of the 2N rows is an anchor, its other view the positive, and the
/// hardest negative the closest row of any other image (either view).
#[derive(Debug, Clone)]
pub struct TripletLoss {
    margin: f32,
    fn_threshold: f32,
}

impl TripletLoss {
    /// The loss and each anchor's hardest negative.
    ///
    /// # Shapes
    /// - `z1`, `z2`: `[N, D]`, L2-normalised, row `i` of both the same image
    /// - output: the loss `[1]`, and the index of each of the 2N anchors' hardest negative `[2N]`
    pub fn forward(&self, z1: Tensor<2>, z2: Tensor<2>) -> (Tensor<1>, Tensor<1, Int>) {
        triplet_batch_hard(z1, z2, self.margin, self.fn_threshold)
    }
}

impl SelfSupervisedLoss for TripletLoss {
    const NAME: &'static str = "triplet";
    const TRAINS: EmbeddingOutput = EmbeddingOutput::Backbone;
    fn from_params(p: &LossParams) -> Self {
        TripletLossConfig::new()
            .with_margin(p.margin)
            .with_fn_threshold(p.fn_threshold)
            .init()
    }
    fn loss(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
        self.forward(z1, z2).0
    }
}

/// Triplet loss with batch-hard mining. Distances are Euclidean between unit vectors,
/// `sqrt(2 - 2 cos)`. Each of the 2N rows is an anchor, its other view the positive, and the
/// hardest negative the closest row of any other image (either view). Negatives with cosine
/// above `fn_threshold` (< 1.0 enables it) are ignored as probable same-kind false negatives.
/// Returns (loss, hardest negative index per anchor).
pub fn triplet_batch_hard(
    z1: Tensor<2>,
    z2: Tensor<2>,
    margin: f32,
    fn_threshold: f32,
) -> (Tensor<1>, Tensor<1, Int>) {
    let [n, _] = z1.dims();
    let device = z1.device();
    let (_, sim, same) = pair_setup(z1, z2);
    let dist = sim
        .clone()
        .mul_scalar(-2.0)
        .add_scalar(2.0)
        .clamp_min(1e-12)
        .sqrt(); // [2N, 2N]
    let pos = dist.clone().gather(1, positive_index(n, &device)); // [2N, 1]
    let mut neg_mask = same;
    if fn_threshold < 1.0 {
        neg_mask = neg_mask.bool_or(sim.greater_elem(fn_threshold));
    }
    let masked = dist.mask_fill(neg_mask, MASK); // [2N, 2N]
    let hardest = masked.clone().argmin(1); // [2N, 1]
    let neg = masked.min_dim(1); // [2N, 1]
    // an anchor whose every negative was masked has neg = MASK: its term is 0 (relu)
    let loss = (pos - neg).add_scalar(margin).clamp_min(0.0).mean();
    (loss, hardest.reshape([2 * n]))
}
