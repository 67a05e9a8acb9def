//! VICReg (Bardes, Ponce and LeCun, 2022): a non-contrastive objective. No negatives and no
//! teacher: the two views' embeddings are pulled together (invariance), while each dimension
//! is kept spread over the batch (variance) and the dimensions decorrelated (covariance), which
//! is what stops the embedding from collapsing to one point.
//!
//! The training step hands every loss L2-normalised rows, so the rows are first scaled by
//! √D: a batch spread evenly over the sphere then has a per-dimension standard deviation
//! near 1, the variance term's target in the paper.

use super::{LossParams, SelfSupervisedLoss};
use crate::model::EmbeddingOutput;
use burn::prelude::*;

/// Configuration of [`VicRegLoss`]; the defaults are the paper's (λ 25, μ 25, ν 1).
#[derive(Config, Debug)]
pub struct VicRegLossConfig {
    /// Weight λ of the invariance term (mean squared difference of the two views).
    #[config(default = 25.0)]
    pub invariance: f32,
    /// Weight μ of the variance term (hinge on each dimension's standard deviation).
    #[config(default = 25.0)]
    pub variance: f32,
    /// Weight ν of the covariance term (squared off-diagonal covariances).
    #[config(default = 1.0)]
    pub covariance: f32,
    /// Added to each variance before its square root.
    #[config(default = 1e-4)]
    pub eps: f32,
}

impl VicRegLossConfig {
    pub fn init(&self) -> VicRegLoss {
        VicRegLoss {
            invariance: self.invariance,
            variance: self.variance,
            covariance: self.covariance,
            eps: self.eps,
        }
    }
}

/// VICReg over the two views of N images.
#[derive(Debug, Clone)]
pub struct VicRegLoss {
    invariance: f32,
    variance: f32,
    covariance: f32,
    eps: f32,
}

impl VicRegLoss {
    /// # Shapes
    /// - `z1`, `z2`: `[N, D]`, L2-normalised, row `i` of both the same image; N ≥ 2
    /// - output: `[1]`: λ·inv + μ·(v(z1) + v(z2))/2 + ν·(c(z1) + c(z2))
    pub fn forward(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
        let [_, d] = z1.dims();
        let scale = (d as f32).sqrt();
        let (z1, z2) = (z1.mul_scalar(scale), z2.mul_scalar(scale));
        let inv = (z1.clone() - z2.clone()).powf_scalar(2.0).mean();
        let (v1, c1) = spread(z1, self.eps);
        let (v2, c2) = spread(z2, self.eps);
        inv.mul_scalar(self.invariance)
            + (v1 + v2).mul_scalar(self.variance / 2.0)
            + (c1 + c2).mul_scalar(self.covariance)
    }
}

/// The variance and covariance terms of one view's batch.
///
/// # Shapes
/// - `z`: `[N, D]`
/// - output: `([1], [1])`: the mean over dimensions of `max(0, 1 − std)`, and the sum of the
///   squared off-diagonal covariances divided by D
fn spread(z: Tensor<2>, eps: f32) -> (Tensor<1>, Tensor<1>) {
    let [n, d] = z.dims();
    let centred = z.clone() - z.mean_dim(0); // [N, D]
    let var = centred
        .clone()
        .powf_scalar(2.0)
        .sum_dim(0)
        .div_scalar((n - 1) as f32); // [1, D]
    let std = var.clone().add_scalar(eps).sqrt();
    let hinge = (std.neg().add_scalar(1.0)).clamp_min(0.0).mean();
    let cov = centred
        .clone()
        .transpose()
        .matmul(centred)
        .div_scalar((n - 1) as f32); // [D, D]
    let off = cov.powf_scalar(2.0).sum() - var.powf_scalar(2.0).sum();
    (hinge, off.div_scalar(d as f32))
}

impl SelfSupervisedLoss for VicRegLoss {
    const NAME: &'static str = "vicreg";
    const TRAINS: EmbeddingOutput = EmbeddingOutput::Head;
    fn from_params(_: &LossParams) -> Self {
        VicRegLossConfig::new().init()
    }
    fn loss(&self, z1: Tensor<2>, z2: Tensor<2>) -> Tensor<1> {
        self.forward(z1, z2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[f32]]) -> Tensor<2> {
        let d = r[0].len();
        let flat: Vec<f32> = r.iter().flat_map(|x| x.iter().copied()).collect();
        let x = Tensor::<2>::from_data(TensorData::new(flat, [r.len(), d]), &Device::flex());
        crate::model::l2_normalize(x)
    }

    /// The same terms in plain f64 over rows already L2-normalised.
    fn by_hand(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
        let (n, d) = (a.len(), a[0].len());
        let s = (d as f64).sqrt();
        let scaled = |m: &[Vec<f64>]| -> Vec<Vec<f64>> {
            m.iter()
                .map(|r| r.iter().map(|x| x * s).collect())
                .collect()
        };
        let (a, b) = (scaled(a), scaled(b));
        let mut inv = 0.0;
        for i in 0..n {
            for j in 0..d {
                inv += (a[i][j] - b[i][j]).powi(2);
            }
        }
        inv /= (n * d) as f64;
        let spread = |m: &[Vec<f64>]| -> (f64, f64) {
            let mean: Vec<f64> = (0..d)
                .map(|j| m.iter().map(|r| r[j]).sum::<f64>() / n as f64)
                .collect();
            let cov = |p: usize, q: usize| -> f64 {
                m.iter()
                    .map(|r| (r[p] - mean[p]) * (r[q] - mean[q]))
                    .sum::<f64>()
                    / (n - 1) as f64
            };
            let hinge = (0..d)
                .map(|j| (1.0 - (cov(j, j) + 1e-4).sqrt()).max(0.0))
                .sum::<f64>()
                / d as f64;
            let mut off = 0.0;
            for p in 0..d {
                for q in 0..d {
                    if p != q {
                        off += cov(p, q).powi(2);
                    }
                }
            }
            (hinge, off / d as f64)
        };
        let ((v1, c1), (v2, c2)) = (spread(&a), spread(&b));
        25.0 * inv + 25.0 * (v1 + v2) / 2.0 + (c1 + c2)
    }

    fn normalised(r: &[&[f32]]) -> Vec<Vec<f64>> {
        r.iter()
            .map(|x| {
                let norm = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                x.iter().map(|v| *v as f64 / norm).collect()
            })
            .collect()
    }

    #[test]
    fn vicreg_matches_hand_value() {
        let a: [&[f32]; 4] = [
            &[1.0, 0.2, -0.3],
            &[-0.5, 1.0, 0.1],
            &[0.3, -0.8, 0.9],
            &[0.7, 0.7, -0.2],
        ];
        let b: [&[f32]; 4] = [
            &[0.9, 0.3, -0.2],
            &[-0.4, 0.9, 0.3],
            &[0.2, -0.9, 0.8],
            &[0.8, 0.5, -0.4],
        ];
        let loss = VicRegLossConfig::new()
            .init()
            .forward(rows(&a), rows(&b))
            .into_scalar::<f32>();
        let expect = by_hand(&normalised(&a), &normalised(&b));
        assert!(
            (loss as f64 - expect).abs() < 1e-4 * expect.max(1.0),
            "{loss} vs {expect}"
        );
    }

    #[test]
    fn a_collapsed_batch_costs_more_than_a_spread_one_with_the_same_agreement() {
        // every image on one point: the views agree perfectly, and nothing is spread
        let same: [&[f32]; 4] = [&[1.0, 0.0, 0.0, 0.0]; 4];
        let collapsed = VicRegLossConfig::new()
            .init()
            .forward(rows(&same), rows(&same));
        // four images on four axes, each view identical: agreement as perfect, spread kept
        let axes: [&[f32]; 4] = [
            &[1.0, 0.0, 0.0, 0.0],
            &[0.0, 1.0, 0.0, 0.0],
            &[0.0, 0.0, 1.0, 0.0],
            &[0.0, 0.0, 0.0, 1.0],
        ];
        let spread = VicRegLossConfig::new()
            .init()
            .forward(rows(&axes), rows(&axes));
        let (collapsed, spread) = (collapsed.into_scalar::<f32>(), spread.into_scalar::<f32>());
        // the collapsed batch pays nearly the whole variance hinge: μ·(1 − √eps)
        assert!(
            (collapsed - 25.0 * (1.0 - 0.01)).abs() < 1e-3,
            "{collapsed}"
        );
        assert!(spread < collapsed / 4.0, "{spread} < {collapsed} / 4");
    }
}
