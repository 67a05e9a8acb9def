//! The two self-supervised objectives. Both take the L2-normalised embeddings of two augmented
//! views of the same N images, `z1[i]` and `z2[i]`, stacked as 2N rows: row `i` and row
//! `i ± N` are the positive pair, every row of another image is a negative.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which loss trains the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Triplet loss with batch-hard negative mining.
    Triplet,
    /// NT-Xent (SimCLR) contrastive loss.
    Ntxent,
}

/// A value added to masked similarities / subtracted from masked logits: far outside [-1, 1].
const MASK: f32 = 1.0e4;

/// Stack both views: [N, D] x 2 -> [2N, D]; returns the similarity matrix [2N, 2N] and
/// a mask that is true on pairs of the same image (self and the positive).
fn pair_setup(z1: Tensor<2>, z2: Tensor<2>) -> (Tensor<2>, Tensor<2>, Tensor<2, Bool>) {
    let [n, _] = z1.dims();
    let device = z1.device();
    let z = Tensor::cat(vec![z1, z2], 0); // [2N, D]
    let sim = z.clone().matmul(z.clone().transpose()); // [2N, 2N]
    let ids: Vec<i64> = (0..2 * n as i64).map(|i| i % n as i64).collect();
    let a = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [2 * n]), &device);
    let rows = a.clone().reshape([2 * n, 1]).repeat(&[1, 2 * n]); // [2N, 2N]
    let cols = a.reshape([1, 2 * n]).repeat(&[2 * n, 1]); // [2N, 2N]
    let same = rows.equal(cols);
    (z, sim, same)
}

/// Index of the positive partner of each of the 2N rows.
fn positive_index(n: usize, device: &Device) -> Tensor<2, Int> {
    let idx: Vec<i64> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(idx, [2 * n]), device).reshape([2 * n, 1])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let x = Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex());
        crate::model::l2_normalize(x)
    }

    fn unit(deg: f32) -> [f32; 2] {
        let r = deg.to_radians();
        [r.cos(), r.sin()]
    }

    fn scalar(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    #[test]
    fn triplet_picks_closest_other_image_and_matches_hand_value() {
        // image 0 views at 0° and 10°, image 1 at 30° and 90°, image 2 at 180° and 175°
        let z1 = t(&[unit(0.0), unit(30.0), unit(180.0)]);
        let z2 = t(&[unit(10.0), unit(90.0), unit(175.0)]);
        let (loss, hard) = triplet_batch_hard(z1, z2, 0.2, 1.0);
        let hard: Vec<i64> = hard.into_data().convert::<i64>().try_to_vec().unwrap();
        // rows: 0:0°, 1:30°, 2:180°, 3:10°, 4:90°, 5:175°
        assert_eq!(hard, vec![1, 3, 4, 1, 3, 4]);
        let d = |a: f32, b: f32| (2.0 - 2.0 * (a - b).to_radians().cos()).sqrt();
        let terms = [
            (d(0.0, 10.0) - d(0.0, 30.0) + 0.2).max(0.0),
            (d(30.0, 90.0) - d(30.0, 10.0) + 0.2).max(0.0),
            (d(180.0, 175.0) - d(180.0, 90.0) + 0.2).max(0.0),
            (d(10.0, 0.0) - d(10.0, 30.0) + 0.2).max(0.0),
            (d(90.0, 30.0) - d(90.0, 10.0) + 0.2).max(0.0),
            (d(175.0, 180.0) - d(175.0, 90.0) + 0.2).max(0.0),
        ];
        let expect = terms.iter().sum::<f32>() / 6.0;
        assert!((scalar(loss) - expect).abs() < 1e-4);
    }

    #[test]
    fn ntxent_matches_hand_value_without_self_similarity() {
        let z1 = t(&[unit(0.0), unit(100.0)]);
        let z2 = t(&[unit(20.0), unit(130.0)]);
        let tau = 0.5;
        let loss = scalar(nt_xent(z1, z2, tau, 0.0));
        let a = [0.0f32, 100.0, 20.0, 130.0];
        let cos = |i: usize, j: usize| (a[i] - a[j]).to_radians().cos();
        let mut expect = 0.0;
        for i in 0..4 {
            let p = (i + 2) % 4;
            let denom: f32 = (0..4)
                .filter(|&j| j != i)
                .map(|j| (cos(i, j) / tau).exp())
                .sum();
            expect += -((cos(i, p) / tau).exp() / denom).ln();
        }
        expect /= 4.0;
        assert!((loss - expect).abs() < 1e-4, "{loss} vs {expect}");
    }

    #[test]
    fn debiased_ntxent_is_lower_when_negatives_look_alike() {
        let z1 = t(&[unit(0.0), unit(5.0), unit(90.0)]);
        let z2 = t(&[unit(2.0), unit(7.0), unit(92.0)]);
        let plain = scalar(nt_xent(z1.clone(), z2.clone(), 0.5, 0.0));
        let debiased = scalar(nt_xent(z1, z2, 0.5, 0.25));
        assert!(debiased < plain, "{debiased} < {plain}");
    }
}
