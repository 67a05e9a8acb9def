//! Exact t-SNE (van der Maaten & Hinton 2008) for the embedding map of a run: a few hundred to
//! a couple of thousand points, so the O(n²) form is fast enough and has no dependency.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// 2-D t-SNE of `n` rows of `dim` floats.
pub fn tsne(data: &[f32], dim: usize, perplexity: f32, iters: usize, seed: u64) -> Vec<[f32; 2]> {
    let n = data.len() / dim;
    if n < 3 {
        return (0..n).map(|i| [i as f32, 0.0]).collect();
    }
    let p = affinities(data, dim, perplexity);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut y: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.random::<f32>() * 1e-2, rng.random::<f32>() * 1e-2])
        .collect();
    let mut vel = vec![[0f32; 2]; n];
    // scikit-learn's "auto" learning rate
    let lr = (n as f32 / 12.0 / 4.0).max(50.0);
    for it in 0..iters {
        let exag = if it < 100 { 12.0 } else { 1.0 };
        let mom = if it < 100 { 0.5 } else { 0.8 };
        let grads = gradient(&p, &y, exag);
        for i in 0..n {
            for d in 0..2 {
                vel[i][d] = mom * vel[i][d] - lr * grads[i][d];
                y[i][d] += vel[i][d];
            }
        }
    }
    y
}

/// The symmetrised joint probabilities `[n * n]` of the rows, each row's bandwidth matching
/// the perplexity.
fn affinities(data: &[f32], dim: usize, perplexity: f32) -> Vec<f32> {
    let n = data.len() / dim;
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let d2: Vec<f32> = (0..n * n)
        .into_par_iter()
        .map(|k| {
            let (i, j) = (k / n, k % n);
            row(i)
                .iter()
                .zip(row(j))
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        })
        .collect();
    let target = perplexity.min((n - 1) as f32 / 3.0).ln();
    let p_cond: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|i| conditional(&d2[i * n..(i + 1) * n], i, target))
        .collect();
    let mut p = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            p[i * n + j] = ((p_cond[i][j] + p_cond[j][i]) / (2.0 * n as f32)).max(1e-12);
        }
    }
    p
}

/// Point `i`'s conditional probabilities from its squared distances `d2`, the bandwidth found
/// by bisection so that their entropy is `target` (the log perplexity).
fn conditional(d2: &[f32], i: usize, target: f32) -> Vec<f32> {
    let n = d2.len();
    let (mut lo, mut hi, mut beta) = (0f32, f32::MAX, 1f32);
    let mut p = vec![0f32; n];
    for _ in 0..50 {
        let mut sum = 0.0;
        for j in 0..n {
            p[j] = if j == i { 0.0 } else { (-beta * d2[j]).exp() };
            sum += p[j];
        }
        let sum = sum.max(1e-12);
        let mut h = 0.0;
        for pj in p.iter_mut() {
            *pj /= sum;
            if *pj > 1e-12 {
                h -= *pj * pj.ln();
            }
        }
        if (h - target).abs() < 1e-4 {
            break;
        }
        if h > target {
            lo = beta;
            beta = if hi == f32::MAX {
                beta * 2.0
            } else {
                (beta + hi) / 2.0
            };
        } else {
            hi = beta;
            beta = (beta + lo) / 2.0;
        }
    }
    p
}

/// The KL divergence's gradient at the layout `y`, the affinities `p` exaggerated by `exag`.
fn gradient(p: &[f32], y: &[[f32; 2]], exag: f32) -> Vec<[f32; 2]> {
    let n = y.len();
    let q: Vec<f32> = (0..n * n)
        .into_par_iter()
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if i == j {
                0.0
            } else {
                let dx = y[i][0] - y[j][0];
                let dy = y[i][1] - y[j][1];
                1.0 / (1.0 + dx * dx + dy * dy)
            }
        })
        .collect();
    let qsum: f32 = q.iter().sum::<f32>().max(1e-12);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut g = [0f32; 2];
            for j in 0..n {
                let w = q[i * n + j];
                let m = (exag * p[i * n + j] - w / qsum) * w;
                g[0] += 4.0 * m * (y[i][0] - y[j][0]);
                g[1] += 4.0 * m * (y[i][1] - y[j][1]);
            }
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn separated_clusters_stay_separated() {
        let mut data = Vec::new();
        for i in 0..40 {
            let c = if i < 20 { 0.0 } else { 10.0 };
            data.extend([c + (i % 5) as f32 * 0.1, c + (i % 7) as f32 * 0.1, c]);
        }
        let y = super::tsne(&data, 3, 10.0, 300, 1);
        let centre = |r: std::ops::Range<usize>| {
            let k = r.len() as f32;
            r.fold([0.0, 0.0], |a, i| [a[0] + y[i][0] / k, a[1] + y[i][1] / k])
        };
        let (a, b) = (centre(0..20), centre(20..40));
        let between = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        let within: f32 = (0..20)
            .map(|i| ((y[i][0] - a[0]).powi(2) + (y[i][1] - a[1]).powi(2)).sqrt())
            .sum::<f32>()
            / 20.0;
        assert!(between > 2.0 * within, "between {between} within {within}");
    }
}
