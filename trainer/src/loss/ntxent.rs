//! NT-Xent (SimCLR) contrastive loss, optionally debiased.

use super::{LossParams, MASK, SelfSupervisedLoss, pair_setup, positive_index};
use crate::model::EmbeddingOutput;
use burn::prelude::*;

/// Configuration of [`NtXentLoss`].
#[derive(Config, Debug)]
pub struct NtXentLossConfig {
    /// Softmax temperature of the cosine similarities.
    #[config(default = 0.2)]
    pub temperature: f32,
    /// Debiased class prior τ⁺ (0: plain NT-Xent; 0.25 for four balanced cell types).
    #[config(default = 0.0)]
    pub debias: f32,
}

impl NtXentLossConfig {
    pub fn init(&self) -> NtXentLoss {
        NtXentLoss {
            temperature: self.temperature,
            debias: self.debias,
        }
    }
}

/// NT-Xent over the 2N views: each row's other view is the target among all other rows.
#[derive(Debug, Clone)]
pub struct NtXentLoss {
    temperature: f32,
    debias: f32,
}

impl NtXentLoss {
    /// # Shapes
    /// - `z1`, `z2`: `[N, D]`, L2-normalised, row `i` of both the same image
    /// - output: `[1]`, the mean over the 2N rows
    pub fn forward(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
        nt_xent(z1, z2, self.temperature, self.debias)
    }
}

impl SelfSupervisedLoss for NtXentLoss {
    const NAME: &'static str = "ntxent";
    const TRAINS: EmbeddingOutput = EmbeddingOutput::Head;
    fn from_params(p: &LossParams) -> Self {
        NtXentLossConfig::new()
            .with_temperature(p.temperature)
            .with_debias(p.debias)
            .init()
    }
    fn loss(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
        self.forward(z1, z2)
    }
}

/// NT-Xent (SimCLR): softmax over each row's similarities / temperature, the other view as
/// the target, self-similarity excluded from the denominator. With `debias` = τ⁺ > 0 the
/// negatives term is the debiased estimator of Chuang et al. (2020), which discounts the
/// expected share τ⁺ of same-class "negatives" (e.g. 0.25 for four balanced cell types).
pub fn nt_xent(z1: Tensor<2>, z2: Tensor<2>, temperature: f32, debias: f32) -> Tensor<1> {
    let [n, _] = z1.dims();
    let device = z1.device();
    let (_, sim, same) = pair_setup(z1, z2);
    let logits = sim.div_scalar(temperature); // [2N, 2N]
    let pos = logits.clone().gather(1, positive_index(n, &device)); // [2N, 1]
    if debias <= 0.0 {
        let self_mask = Tensor::<2, Bool>::diag_mask([2 * n, 2 * n], 0, &device).bool_not();
        let masked = logits.mask_fill(self_mask, -MASK);
        let max = masked.clone().max_dim(1).detach(); // [2N, 1]
        let lse = (masked - max.clone()).exp().sum_dim(1).log() + max; // [2N, 1]
        return (lse - pos).mean();
    }
    // debiased: all quantities in exp space; logits are bounded by 1/t so exp is safe for t >= 0.05
    let m = (2 * n - 2) as f32;
    let neg_exp = logits.exp().mask_fill(same, 0.0).sum_dim(1); // [2N, 1]
    let pos_exp = pos.clone().exp();
    let ng = (neg_exp - pos_exp.clone().mul_scalar(debias * m))
        .div_scalar(1.0 - debias)
        .clamp_min(m * (-1.0 / temperature).exp());
    ((pos_exp.clone() + ng).log() - pos).mean()
}
