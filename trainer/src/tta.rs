//! Test-time augmentation: the embedding averaged over the eight symmetries of the square
//! (the four mirrorings of rows and columns, each with the window transposed or not).
//!
//! A cell on a slide has no up or left; the encoder learns that only approximately from flipped
//! and turned training views. Averaging its output over the eight views of the window makes the
//! served embedding exactly invariant to them and averages away some of each view's noise.
//!
//! It is written with ops the ONNX exporter lowers, so that the exported graph does the same
//! sum and the runtime stays one call per batch. A mirror is a `Gather` of reversed rows or
//! columns. The exporter has no transpose, so the transposed half runs a second copy of the
//! encoder whose every kernel is transposed: with square kernels and the same stride and
//! padding on both axes, each layer of that copy on a window is the layer on the transposed
//! window, transposed, and the global pooling forgets the last transpose. It costs eight
//! encoder passes, and the file holds the convolution kernels twice (the copy shares the
//! other weights and the batch-norm statistics, which a transpose does not change).
//!
//! # Shapes
//! - input: `[batch, 3, size, size]`
//! - output: `[batch, dim]`, L2-normalised

use crate::model::{EmbeddingOutput, Encoder, l2_normalize};
use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
pub use cellspace_core::card::TestTimeViews;

/// Mirror `x` (`[B, C, H, W]`): rows reversed when bit 0 of `k` is set, columns when bit 1.
pub fn mirror(x: Tensor<4>, k: usize) -> Tensor<4> {
    let mut x = x;
    for (bit, axis) in [(1, 2), (2, 3)] {
        if k & bit != 0 {
            let n = x.dims()[axis];
            let rev: Vec<i64> = (0..n as i64).rev().collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(rev, [n]), &x.device());
            x = x.select(axis, idx);
        }
    }
    x
}

/// View `k` (0..8) of a batch of windows, for checks: [`mirror`]`(x, k % 4)`, transposed when
/// `k >= 4`. (The served graph never transposes a window; see the module docs.)
pub fn view(x: Tensor<4>, k: usize) -> Tensor<4> {
    let m = mirror(x, k % 4);
    if k >= 4 { m.swap_dims(2, 3) } else { m }
}

/// Every convolution kernel transposed (its last two axes swapped), as new parameters.
struct TransposeKernels;

impl ModuleMapper for TransposeKernels {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match D {
            // fresh parameters (and ids): nothing keyed by parameter id takes the copy's
            // kernels for the originals (the copy's other parameters are the originals')
            4 => Param::from_tensor(param.val().swap_dims(2, 3)),
            _ => param,
        }
    }
}

/// An encoder as served under [`TestTimeViews`]: the encoder, and for eight views its copy
/// with transposed kernels, made once.
#[derive(Module, Debug)]
pub struct ViewedEncoder {
    pub encoder: Encoder,
    pub transposed: Option<Encoder>,
}

impl ViewedEncoder {
    pub fn new(encoder: Encoder, views: TestTimeViews) -> Self {
        let transposed = match views {
            TestTimeViews::None => None,
            TestTimeViews::Dihedral8 => Some(encoder.clone().map(&mut TransposeKernels)),
        };
        Self {
            encoder,
            transposed,
        }
    }

    /// The served embedding: [`Encoder::output`] itself for one view, else the L2-normalised
    /// sum of its (L2-normalised) outputs over the eight views. `x`: `[B, 3, S, S]` -> `[B, D]`.
    pub fn output(&self, which: EmbeddingOutput, x: Tensor<4>) -> Tensor<2> {
        self.sum_over_views(x, |e, x| (e.output(which, x), None)).0
    }

    /// [`Encoder::both`] under the views: each output the L2-normalised sum over them.
    pub fn both(&self, x: Tensor<4>) -> (Tensor<2>, Option<Tensor<2>>) {
        self.sum_over_views(x, |e, x| e.both(x))
    }

    fn sum_over_views(
        &self,
        x: Tensor<4>,
        f: impl Fn(&Encoder, Tensor<4>) -> (Tensor<2>, Option<Tensor<2>>),
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let Some(t) = &self.transposed else {
            return f(&self.encoder, x);
        };
        let mut sum: Option<(Tensor<2>, Option<Tensor<2>>)> = None;
        for enc in [&self.encoder, t] {
            for k in 0..4 {
                let (a, b) = f(enc, mirror(x.clone(), k));
                sum = Some(match sum {
                    None => (a, b),
                    Some((sa, sb)) => (sa + a, sb.zip(b).map(|(s, b)| s + b)),
                });
            }
        }
        let (a, b) = sum.expect("eight views");
        (l2_normalize(a), b.map(l2_normalize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EncoderConfig;

    fn rows(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn the_eight_views_are_eight_distinct_rearrangements() {
        let device = Device::flex();
        let x = Tensor::<1, Int>::arange(0..2 * 5 * 5, &device)
            .float()
            .reshape([1, 2, 5, 5]);
        let views: Vec<Vec<f32>> = (0..8)
            .map(|k| view(x.clone(), k).into_data().try_to_vec::<f32>().unwrap())
            .collect();
        let mut sorted_x = x.clone().into_data().try_to_vec::<f32>().unwrap();
        sorted_x.sort_by(f32::total_cmp);
        for (k, v) in views.iter().enumerate() {
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, sorted_x, "view {k} rearranges the pixels");
            for (l, u) in views.iter().enumerate().skip(k + 1) {
                assert_ne!(v, u, "views {k} and {l} differ");
            }
        }
        assert_eq!(views[0], x.into_data().try_to_vec::<f32>().unwrap());
    }

    #[test]
    fn transposed_kernels_see_the_transposed_window_and_the_average_ignores_every_view() {
        let device = Device::flex();
        let enc = EncoderConfig::small().with_head_dim(32).init(&device);
        let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let served = ViewedEncoder::new(enc.clone(), TestTimeViews::Dihedral8);
        let head = EmbeddingOutput::Head;
        // the transposed copy on a window is the encoder on the transposed window
        let t = served.transposed.as_ref().unwrap();
        let d = max_diff(
            &rows(t.output(head, x.clone())),
            &rows(enc.output(head, x.clone().swap_dims(2, 3))),
        );
        assert!(
            d < 1e-4,
            "transposed kernels against a transposed window: {d}"
        );
        // the served average is the average over the eight views, by definition
        let direct = (1..8).fold(enc.output(head, x.clone()), |acc, k| {
            acc + enc.output(head, view(x.clone(), k))
        });
        let base = rows(served.output(head, x.clone()));
        assert!(base.iter().all(|v| v.is_finite()));
        let d = max_diff(&base, &rows(l2_normalize(direct)));
        assert!(d < 1e-4, "served against the direct average: {d}");
        // and so it does not move under any view, where one view's output does
        let one = ViewedEncoder::new(enc, TestTimeViews::None);
        for k in 1..8 {
            let moved = view(x.clone(), k);
            let d = max_diff(&base, &rows(served.output(head, moved.clone())));
            assert!(d < 1e-4, "view {k}: the averaged embedding moved by {d}");
            let d1 = max_diff(
                &rows(one.output(head, x.clone())),
                &rows(one.output(head, moved)),
            );
            assert!(d1 > 1e-3, "view {k}: one view did not move ({d1})");
        }
        // both outputs at once agree with each alone
        let (b, h) = served.both(x.clone());
        assert!(max_diff(&rows(h.unwrap()), &base) < 1e-5);
        let bb = rows(served.output(EmbeddingOutput::Backbone, x));
        assert!(max_diff(&rows(b), &bb) < 1e-5);
    }
}
