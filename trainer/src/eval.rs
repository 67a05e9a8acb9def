//! Measuring an encoder with labels (never used to train): the held-out split of a run, the
//! per-epoch validation, and `trainer eval`, all printed with the colour-histogram baseline.

use crate::Result;
use crate::colour::{ColourHistogram, DIM as COLOUR_DIM, RetrievalModel, blend};
use crate::data::CellImages;
use crate::model::{EmbeddingOutput, Encoder};
use burn::prelude::*;
use cellspace_core::dataset::{group_folds, split_by_group};
use cellspace_core::histogram::histogram_embedding;
use cellspace_core::metrics::{Exclude, Labeled, RetrievalReport, evaluate, evaluate_unseen};
use cellspace_core::preprocess::Preprocess;
use serde::{Deserialize, Serialize};

/// Images of a run: training indices, held-out validation indices (whole source groups), and
/// the gallery the validation queries search (training images, at most `gallery_max`).
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub gallery: Vec<usize>,
    pub n_groups: usize,
}

impl Split {
    /// The split a run's configuration asks for: fold k of K, or a `val_fraction` share.
    pub fn for_config(data: &CellImages, cfg: &crate::train::TrainConfig) -> Self {
        match cfg.fold {
            Some([k, n]) => Self::fold(data, k, n, cfg.seed, cfg.val_gallery_max),
            None => Self::new(data, cfg.val_fraction, cfg.seed, cfg.val_gallery_max),
        }
    }

    pub fn new(data: &CellImages, fraction: f64, seed: u64, gallery_max: usize) -> Self {
        let (train, val) = split_by_group(&data.groups, fraction, seed);
        Self::with(data, train, val, gallery_max)
    }

    /// Fold `k` of `n` ([`group_folds`]) held out; the other folds train.
    pub fn fold(data: &CellImages, k: usize, n: usize, seed: u64, gallery_max: usize) -> Self {
        let folds = group_folds(&data.groups, n, seed);
        let (val, train): (Vec<usize>, Vec<usize>) = (0..data.len()).partition(|&i| folds[i] == k);
        Self::with(data, train, val, gallery_max)
    }

    /// The same split with a gallery of at most `gallery_max` training images.
    pub fn regallery(&self, data: &CellImages, gallery_max: usize) -> Self {
        Self::with(data, self.train.clone(), self.val.clone(), gallery_max)
    }

    fn with(data: &CellImages, train: Vec<usize>, val: Vec<usize>, gallery_max: usize) -> Self {
        let step = (train.len() as f64 / gallery_max.max(1) as f64).max(1.0);
        let gallery = (0..train.len().min(gallery_max))
            .map(|i| train[(i as f64 * step) as usize])
            .collect();
        let mut g: Vec<&String> = data.groups.iter().collect();
        g.sort();
        g.dedup();
        Self {
            train,
            val,
            gallery,
            n_groups: g.len(),
        }
    }
}

/// Colour weights tried when blending the learned embedding with the colour histogram.
pub const COLOUR_WEIGHTS: [f32; 7] = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0];

/// One candidate served embedding and its held-out metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    pub output: EmbeddingOutput,
    /// 0 = learned embedding only, 1 = colour histogram only.
    pub colour_weight: f32,
    pub report: RetrievalReport,
}

/// Held-out metrics of the backbone embedding, the head's (when the model has one), and their
/// blends with the in-graph colour histogram.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationResult {
    pub backbone: RetrievalReport,
    pub head: Option<RetrievalReport>,
    #[serde(default)]
    pub candidates: Vec<Candidate>,
}

impl ValidationResult {
    /// Every measured embedding: the learned outputs alone (weight 0), their blends, and the
    /// in-graph colour histogram alone (weight 1).
    pub fn all(&self) -> Vec<Candidate> {
        let mut out = vec![Candidate {
            output: EmbeddingOutput::Backbone,
            colour_weight: 0.0,
            report: self.backbone.clone(),
        }];
        if let Some(h) = &self.head {
            out.push(Candidate {
                output: EmbeddingOutput::Head,
                colour_weight: 0.0,
                report: h.clone(),
            });
        }
        out.extend(self.candidates.iter().cloned());
        out
    }

    /// The report of one served embedding (the recipe's), if it was measured.
    pub fn candidate(&self, output: EmbeddingOutput, colour_weight: f32) -> Option<Candidate> {
        self.all().into_iter().find(|c| {
            (c.output == output || c.colour_weight >= 1.0)
                && (c.colour_weight - colour_weight).abs() < 1e-6
        })
    }

    /// The in-graph colour histogram alone, on the model's input.
    pub fn histogram(&self) -> Option<RetrievalReport> {
        self.candidates
            .iter()
            .find(|c| c.colour_weight >= 1.0)
            .map(|c| c.report.clone())
    }
}

/// Embed prepared inputs (`[3, S, S]` each) with `model` in batches of 64. Returns `[n, D]`.
pub fn embed_inputs(
    model: &Encoder,
    which: EmbeddingOutput,
    inputs: &[Vec<f32>],
    size: u32,
    device: &Device,
) -> Vec<f32> {
    embed_with(inputs, size, device, |x| model.output(which, x))
}

/// Run `f` over prepared inputs in batches of 64; returns the rows `[n, D]` flat.
pub fn embed_with(
    inputs: &[Vec<f32>],
    size: u32,
    device: &Device,
    f: impl Fn(Tensor<4>) -> Tensor<2>,
) -> Vec<f32> {
    let s = size as usize;
    let mut out = Vec::new();
    for chunk in inputs.chunks(64) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), 3, s, s]), device); // [B, 3, S, S]
        out.extend(
            f(x).into_data()
                .try_to_vec::<f32>()
                .expect("f32 embeddings"),
        );
    }
    out
}

/// The colour histograms of a split's held-out and gallery images, which do not change from
/// epoch to epoch: filled by the first validation of a run and reused by the next ones (the
/// soft histogram takes ~5e9 mostly underflowing exponentials on the full data, a minute on
/// two cores, where the learned embeddings take seconds).
#[derive(Default)]
pub struct ColourCache {
    histograms: Option<(Vec<f32>, Vec<f32>)>,
}

/// Held-out images query the training gallery (a model's final validation).
pub fn validate(
    model: &Encoder,
    data: &CellImages,
    split: &Split,
    pre: &Preprocess,
    seed: u64,
) -> Result<ValidationResult> {
    validate_with(model, data, split, pre, seed, &mut ColourCache::default())
}

/// Per-epoch validation: [`validate`] with the colour histograms kept in `cache` between
/// epochs of one run (one split).
pub fn validate_with(
    model: &Encoder,
    data: &CellImages,
    split: &Split,
    pre: &Preprocess,
    seed: u64,
    cache: &mut ColourCache,
) -> Result<ValidationResult> {
    let device = model.device(); // the training device: a model cannot run on another backend
    let prep =
        |idx: &[usize]| -> Vec<Vec<f32>> { idx.iter().map(|&i| data.prepared(i, pre)).collect() };
    let (q_in, g_in) = (prep(&split.val), prep(&split.gallery));
    let labels =
        |idx: &[usize]| -> Vec<String> { idx.iter().map(|&i| data.labels[i].clone()).collect() };
    let (ql, gl) = (labels(&split.val), labels(&split.gallery));
    let qg: Vec<String> = split.val.iter().map(|&i| data.groups[i].clone()).collect();
    let report = |q: &[f32], g: &[f32]| {
        let dim = q.len() / ql.len().max(1);
        evaluate_unseen(g, &gl, q, &ql, Some(&qg), dim, seed)
    };
    let emb = |which| {
        (
            embed_inputs(model, which, &q_in, pre.size, &device),
            embed_inputs(model, which, &g_in, pre.size, &device),
        )
    };
    let (hq, hg) = &*cache.histograms.get_or_insert_with(|| {
        // on flex whatever the training device: the histogram has no parameters, and
        // libtorch's MKL exp takes its slow rare-case path on the underflowing votes
        let flex = Device::flex();
        let colour = ColourHistogram::new(pre, &flex);
        (
            embed_with(&q_in, pre.size, &flex, |x| colour.forward(x)),
            embed_with(&g_in, pre.size, &flex, |x| colour.forward(x)),
        )
    });
    let (bq, bg) = emb(EmbeddingOutput::Backbone);
    finite("backbone", &bq, &bg)?;
    let backbone = report(&bq, &bg);
    let head_emb = model.head.as_ref().map(|_| emb(EmbeddingOutput::Head));
    if let Some((q, g)) = &head_emb {
        finite("head", q, g)?;
    }
    let head = head_emb.as_ref().map(|(q, g)| report(q, g));
    let mut candidates = Vec::new();
    let learned = [
        (EmbeddingOutput::Backbone, Some((bq, bg))),
        (EmbeddingOutput::Head, head_emb),
    ];
    for (output, e) in learned {
        let Some((q, g)) = e else { continue };
        let dl = q.len() / ql.len().max(1);
        for &w in COLOUR_WEIGHTS.iter().filter(|&&w| w > 0.0 && w < 1.0) {
            let r = report(
                &blend(&q, dl, hq, COLOUR_DIM, w),
                &blend(&g, dl, hg, COLOUR_DIM, w),
            );
            candidates.push(Candidate {
                output,
                colour_weight: w,
                report: r,
            });
        }
    }
    candidates.push(Candidate {
        output: EmbeddingOutput::Backbone,
        colour_weight: 1.0,
        report: report(hq, hg),
    });
    Ok(ValidationResult {
        backbone,
        head,
        candidates,
    })
}

/// A validation's embeddings must be numbers: a diverged model's NaN would otherwise score as
/// some kNN accuracy and be reported (and chosen from) like any other.
fn finite(output: &str, queries: &[f32], gallery: &[f32]) -> Result<()> {
    let bad = |e: &[f32]| e.iter().copied().find(|x| !x.is_finite());
    match bad(queries).or_else(|| bad(gallery)) {
        Some(x) => Err(crate::Error::Data(format!(
            "validation: the {output} embedding holds {x}, not a finite number (the model \
             diverged): no metrics are reported from it"
        ))),
        None => Ok(()),
    }
}

/// The colour-histogram baseline (8x8x8 of the window the model looks through, at the cache's
/// resolution) on the same held-out split.
pub fn histogram_baseline(data: &CellImages, split: &Split, seed: u64) -> RetrievalReport {
    let emb = |idx: &[usize]| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| histogram_embedding(&data.squares[i]))
            .collect()
    };
    let labels =
        |idx: &[usize]| -> Vec<String> { idx.iter().map(|&i| data.labels[i].clone()).collect() };
    let (q, g) = (emb(&split.val), emb(&split.gallery));
    let (ql, gl) = (labels(&split.val), labels(&split.gallery));
    let qg: Vec<String> = split.val.iter().map(|&i| data.groups[i].clone()).collect();
    let dim = cellspace_core::histogram::DIM;
    evaluate_unseen(&g, &gl, &q, &ql, Some(&qg), dim, seed)
}

/// `trainer eval`: a model's and the histogram's metrics for a query folder against a gallery
/// folder (or one folder against itself, excluding self and optionally same-group matches).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: RetrievalReport,
    pub histogram: RetrievalReport,
    pub exclude: Exclude,
}

pub fn eval_folders(
    model: &RetrievalModel,
    which: EmbeddingOutput,
    colour_weight: f32,
    pre: &Preprocess,
    gallery: &CellImages,
    query: Option<&CellImages>,
    exclude_same_group: bool,
) -> EvalReport {
    let device = Device::flex();
    let emb = |d: &CellImages| -> Vec<f32> {
        let inputs: Vec<Vec<f32>> = (0..d.len()).map(|i| d.prepared(i, pre)).collect();
        embed_with(&inputs, pre.size, &device, |x| {
            model.forward(x, which, colour_weight)
        })
    };
    let hist =
        |d: &CellImages| -> Vec<f32> { d.squares.iter().flat_map(histogram_embedding).collect() };
    let exclude = match (query.is_some(), exclude_same_group) {
        (true, _) => Exclude::Nothing,
        (false, true) => Exclude::SameGroup,
        (false, false) => Exclude::SelfMatch,
    };
    let q = query.unwrap_or(gallery);
    let run = |ge: &[f32], qe: &[f32]| {
        let dim = ge.len() / gallery.len().max(1);
        evaluate(
            &Labeled {
                emb: ge,
                dim,
                labels: &gallery.labels,
                groups: Some(&gallery.groups),
            },
            &Labeled {
                emb: qe,
                dim,
                labels: &q.labels,
                groups: Some(&q.groups),
            },
            exclude,
            0,
        )
    };
    let (ge, qe) = (emb(gallery), emb(q));
    let (gh, qh) = (hist(gallery), hist(q));
    EvalReport {
        model: run(&ge, &qe),
        histogram: run(&gh, &qh),
        exclude,
    }
}
