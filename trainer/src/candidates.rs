//! The candidates of the shift protocol ([`crate::robustness`]): a fold's model under each
//! measured view set, and every served embedding it could make of some inputs (each learned
//! output alone and blended with the in-graph colour histogram, and the histogram alone).

use crate::Result;
use crate::colour::{ColourHistogram, blend};
use crate::cv::{output_name, views_name};
use crate::eval::{COLOUR_WEIGHTS, embed_with};
use crate::model::EmbeddingOutput;
use crate::train::load_served_model;
use crate::tta::{TestTimeViews, ViewedEncoder};
use burn::prelude::*;
use cellspace_core::preprocess::Preprocess;
use std::path::Path;

/// The learned outputs (under each measured [`TestTimeViews`]) and the in-graph colour
/// histogram of some inputs, `[n, d]` each.
pub(crate) struct Bases {
    learned: Vec<(EmbeddingOutput, TestTimeViews, Vec<f32>)>,
    colour: Vec<f32>,
}

impl Bases {
    pub(crate) fn of(model: &FoldModel, inputs: &[Vec<f32>], size: u32) -> Self {
        let mut learned = Vec::new();
        for (views, enc) in &model.encoders {
            let views = *views;
            // one pass per view gives both outputs, side by side in one row
            let rows = embed_with(inputs, size, &model.device, |x| match enc.both(x) {
                (b, Some(h)) => Tensor::cat(vec![b, h], 1),
                (b, None) => b,
            });
            let db = enc.encoder.fc.weight.dims()[1];
            let d = rows.len() / inputs.len().max(1);
            let part = |from: usize, to: usize| -> Vec<f32> {
                rows.chunks(d.max(1))
                    .flat_map(|r| r[from..to].iter().copied())
                    .collect()
            };
            learned.push((EmbeddingOutput::Backbone, views, part(0, db)));
            if enc.encoder.head.is_some() {
                learned.push((EmbeddingOutput::Head, views, part(db, d)));
            }
        }
        Self {
            learned,
            colour: embed_with(inputs, size, &Device::flex(), |x| model.colour.forward(x)),
        }
    }

    /// Every candidate served embedding: each learned output alone and blended with the
    /// colour histogram at the weights `trainer cv` reports, and the histogram alone.
    pub(crate) fn candidates(&self, n: usize) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        let dh = self.colour.len() / n.max(1);
        for (output, views, e) in &self.learned {
            let dl = e.len() / n.max(1);
            for &w in COLOUR_WEIGHTS.iter().filter(|&&w| w < 1.0) {
                let name = views_name(*output, *views, w);
                let v = if w <= 0.0 {
                    e.clone()
                } else {
                    blend(e, dl, &self.colour, dh, w)
                };
                out.push((name, v));
            }
        }
        out.push((
            output_name(EmbeddingOutput::Backbone, 1.0),
            self.colour.clone(),
        ));
        out
    }
}

/// A fold's model as the protocol runs it: the encoder on `device` under each measured view
/// set, and the in-graph colour histogram (on the plain CPU device).
pub(crate) struct FoldModel {
    encoders: Vec<(TestTimeViews, ViewedEncoder)>,
    device: Device,
    colour: ColourHistogram,
}

impl FoldModel {
    /// Fold `k`'s model of the `trainer cv` folder `dir` on `device`, under each of `views`.
    pub(crate) fn load(
        dir: &Path,
        k: usize,
        views: &[TestTimeViews],
        device: &Device,
        pre: &Preprocess,
    ) -> Result<Self> {
        let (encoder, _, _) = load_served_model(&dir.join(format!("fold-{}", k + 1)), device)?;
        Ok(FoldModel {
            encoders: views
                .iter()
                .map(|&v| (v, ViewedEncoder::new(encoder.clone(), v)))
                .collect(),
            device: device.clone(),
            colour: ColourHistogram::new(pre, &Device::flex()),
        })
    }
}
