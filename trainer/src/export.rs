//! ONNX export: the best model of a run becomes `NAME.onnx` (dynamic batch axis, weights
//! embedded) and its model card `NAME.json`, both written atomically. The graph itself is
//! traced in [`crate::onnx`].

use crate::choice::{ProtocolChoice, choose_under_shift};
use crate::colour::{ColourHistogram, DIM as COLOUR_DIM, RetrievalModel};
use crate::model::{EmbeddingOutput, Encoder};
pub use crate::onnx::{graph_io_names, onnx_bytes};
use crate::robustness::RobustnessReport;
use crate::train::{FitSummary, load_served_model};
use crate::tta::TestTimeViews;
use crate::{Error, Result};
use burn::prelude::*;
use cellspace_core::card::{CARD_FORMAT, ModelCard};
use cellspace_core::preprocess::Preprocess;
use std::path::{Path, PathBuf};

/// What a card says beyond the model's own numbers.
#[derive(Debug, Clone, Default)]
pub struct CardInfo {
    pub training: serde_json::Value,
    pub data: serde_json::Value,
    pub metrics: serde_json::Value,
}

/// Export an encoder, blended with the colour histogram at `colour_weight` (0 = none), to
/// `to.onnx` + `to.json` (`to` without extension). Returns the card path.
pub fn export_encoder(
    model: &Encoder,
    which: EmbeddingOutput,
    views: TestTimeViews,
    colour_weight: f32,
    pre: &Preprocess,
    info: CardInfo,
    to: &Path,
) -> Result<PathBuf> {
    if let Some(bad) = first_non_finite(model) {
        return Err(Error::NonFiniteWeights(bad));
    }
    let device = Device::flex();
    let full = RetrievalModel {
        encoder: model.clone(),
        colour: ColourHistogram::new(pre, &device),
    };
    let bytes = onnx_bytes(&full, which, views, colour_weight, pre.size)?;
    let (input_name, output_name) = graph_io_names(&bytes).ok_or(Error::GraphShape)?;
    let learned_dim = match (which, &model.head) {
        (EmbeddingOutput::Head, Some(h)) => h.out.weight.dims()[1],
        _ => model.fc.weight.dims()[1],
    };
    let embedding_dim = match colour_weight {
        w if w <= 0.0 => learned_dim,
        w if w >= 1.0 => COLOUR_DIM,
        _ => learned_dim + COLOUR_DIM,
    };
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let card = ModelCard {
        format_version: CARD_FORMAT,
        name: name.clone(),
        onnx_file: format!("{name}.onnx"),
        onnx_sha256: cellspace_core::sha256_hex(&bytes),
        input_name,
        output_name,
        preprocess: pre.clone(),
        embedding_dim,
        l2_normalized: true,
        test_time_views: views,
        training: info.training,
        data: info.data,
        metrics: info.metrics,
        created: cellspace_core::atomic::now_rfc3339(),
    };
    let card_path = to.with_extension("json");
    cellspace_core::atomic::write_atomic(&to.with_extension("onnx"), &bytes)?;
    card.save(&card_path)?;
    Ok(card_path)
}

/// The first weight or running statistic of `model` that is not a finite number.
pub fn first_non_finite<M: burn::module::Module>(model: &M) -> Option<f32> {
    struct Find(Option<f32>);
    impl burn::module::ModuleVisitor for Find {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if self.0.is_none() {
                let v = param
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                self.0 = v.into_iter().find(|x| !x.is_finite());
            }
        }
    }
    let mut f = Find(None);
    model.visit(&mut f);
    f.0
}

/// What `export_run` takes beyond the run: the data to measure again, a cross-validation
/// report for the card, a robustness report to choose the served output under shift, and
/// another served output or colour weight than the run's recipe (the choice a `trainer cv`
/// table supports; its "chosen on the other folds" row is then the honest estimate).
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub data: Option<PathBuf>,
    pub cv: Option<PathBuf>,
    /// A `trainer robustness` report of the same recipe's folds: without `output`,
    /// `colour_weight` and `views`, the served embedding is the one it chooses
    /// ([`choose_under_shift`]); with any of them, all three are the run's or given by hand.
    pub robustness: Option<PathBuf>,
    pub output: Option<EmbeddingOutput>,
    pub colour_weight: Option<f32>,
    /// Serve the embedding averaged over these views ([`crate::tta`]) instead of one view; a
    /// hand choice, like `output` and `colour_weight` (the report's choice is then not used).
    pub views: Option<TestTimeViews>,
}

/// Export the served model of `run_dir` to `to` (a path without extension, e.g.
/// `models/cellspace`): writes `to.onnx` and `to.json`. With `data` (the run's data folder),
/// the run's held-out validation is measured again with this build. With `cv` (a
/// `trainer cv` report of the same recipe), the card carries that cross-validated estimate;
/// with `robustness`, the estimate under shift of the output chosen there.
/// Returns the card's path.
pub fn export_run(
    run_dir: &Path,
    to: &Path,
    summary: Option<&FitSummary>,
    opts: &ExportOptions,
) -> Result<PathBuf> {
    // a freshly loaded copy: burn-onnx's capture leaves the exported module unusable
    let (model, cfg, mut best) = load_served_model(run_dir, &Device::flex())?;
    let (cv_report, cv_headline) = match opts.cv.as_deref() {
        Some(p) => read_cv(p).map(|(v, h)| (Some(v), Some(h)))?,
        None => (None, None),
    };
    let choice = opts
        .robustness
        .as_deref()
        .map(|p| choice_for(p, &cfg))
        .transpose()?;
    let by_hand = opts.output.is_some() || opts.colour_weight.is_some() || opts.views.is_some();
    let views = settle_served(&mut best, choice.as_ref().filter(|_| !by_hand), opts)?;
    if best.output == EmbeddingOutput::Head && model.head.is_none() {
        return Err(Error::Config(
            "--output head: this model has no projection head".into(),
        ));
    }
    let mut baseline: Option<serde_json::Value> =
        std::fs::read_to_string(run_dir.join(crate::train::BASELINE_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let mut locate_flags = serde_json::Value::Null;
    if let Some(dir) = opts.data.as_deref() {
        let again = measure_again(run_dir, dir, (&model, &cfg))?;
        if let Some((validation, base)) = again.validation {
            best.validation = Some(validation);
            baseline = Some(base);
        }
        locate_flags = again.flags;
    }
    let how = match (&choice, by_hand) {
        (Some(_), false) => Chosen::UnderShift,
        (_, true) => Chosen::FromCvTable,
        (None, false) => Chosen::Fixed,
    };
    // the held-out validation measured one view: it describes an eight-view model only roughly
    let served = best
        .validation
        .as_ref()
        .filter(|_| views == TestTimeViews::None)
        .and_then(|v| v.candidate(best.output, best.colour_weight));
    let training = training_json(run_dir, &cfg, (&best, views), how, summary);
    let data = data_json(&cfg, summary, locate_flags);
    let metrics = serde_json::json!({
        "estimate_on_unseen_cells": estimate_json(cv_headline.as_ref(), choice.as_ref(), how),
        "cross_validation": cv_report,
        "robustness": choice.as_ref().filter(|_| how == Chosen::UnderShift),
        "served": served,
        "held_out_validation": best.validation,
        "histogram_baseline_same_split": baseline,
    });
    let info = CardInfo {
        training,
        data,
        metrics,
    };
    let pre = cfg.preprocess();
    export_encoder(
        &model,
        best.output,
        views,
        best.colour_weight,
        &pre,
        info,
        to,
    )
}

/// The card's `data` section: what the run trained on and held out.
fn data_json(
    cfg: &crate::train::TrainConfig,
    summary: Option<&FitSummary>,
    locate_flags: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "train_images": summary.map(|s| s.train_images),
        "validation_images": summary.map(|s| s.val_images),
        "split": match cfg.fold {
            Some([k, n]) => format!("fold {} of {n} (whole source groups) held out", k + 1),
            None if cfg.val_fraction > 0.0 => format!("{:.0}% of source groups held out", cfg.val_fraction * 100.0),
            None => "every image trained on; see metrics.cross_validation for the estimate on unseen cells".into(),
        },
        "cell_localisation_flags": locate_flags,
    })
}

/// What `export --data` measures again with this build.
struct Remeasured {
    /// The held-out validation and the histogram baseline on the same split (none when the
    /// run held nothing out).
    validation: Option<(crate::eval::ValidationResult, serde_json::Value)>,
    flags: serde_json::Value,
}

/// The run's held-out validation and its pictures, again, on its data folder `dir`.
fn measure_again(
    run_dir: &Path,
    dir: &Path,
    (model, cfg): (&Encoder, &crate::train::TrainConfig),
) -> Result<Remeasured> {
    log::info!("measuring the held-out cells again on {}", dir.display());
    let images =
        crate::data::CellImages::load(dir, &cfg.preprocess(), cfg.image_size, cfg.limit, &())?;
    let split = crate::eval::Split::for_config(&images, cfg);
    let mut validation = None;
    if !split.val.is_empty() {
        let v = crate::eval::validate(model, &images, &split, &cfg.preprocess(), cfg.seed)?;
        let base = crate::eval::histogram_baseline(&images, &split, cfg.seed);
        validation = Some((v, serde_json::to_value(base).expect("report serialises")));
    }
    crate::train::write_pictures(run_dir, &images, &split, &cfg.preprocess(), cfg.seed)?;
    Ok(Remeasured {
        validation,
        flags: flag_json(&images),
    })
}

/// The served output, colour weight and views: `choice`'s (none when any is given by hand),
/// else the run's, each replaced by the one given by hand in `opts`.
fn settle_served(
    best: &mut crate::train::ServedInfo,
    choice: Option<&ProtocolChoice>,
    opts: &ExportOptions,
) -> Result<TestTimeViews> {
    let mut views = TestTimeViews::None;
    if let Some(c) = choice {
        (best.output, views, best.colour_weight) = (c.output, c.views, c.colour_weight);
    }
    if let Some(v) = opts.views {
        views = v;
    }
    if let Some(o) = opts.output {
        best.output = o;
    }
    if let Some(w) = opts.colour_weight {
        if !(0.0..1.0).contains(&w) {
            return Err(Error::Config(
                "--colour-weight must be in [0, 1): the learned embedding is always served".into(),
            ));
        }
        best.colour_weight = w;
    }
    Ok(views)
}

/// How the served output and colour weight were settled.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chosen {
    /// The recipe's own, fixed before training.
    Fixed,
    /// Given at export after reading a `trainer cv` table.
    FromCvTable,
    /// By [`choose_under_shift`] from a robustness report.
    UnderShift,
}

/// A JSON report at `p`, or an error naming the file and `what` it should have been.
fn read_json<T: serde::de::DeserializeOwned>(p: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(p).map_err(|e| cellspace_core::Error::io(p, e))?;
    Ok(serde_json::from_str(&text)
        .map_err(|e| cellspace_core::Error::invalid(p, format!("not {what}: {e}")))?)
}

/// The output a `trainer robustness` report at `p` chooses for a model of `cfg`: refused
/// when its folds saw the fields otherwise than this model does (another recipe, or folds
/// served with another standardisation say nothing about this one).
fn choice_for(p: &Path, cfg: &crate::train::TrainConfig) -> Result<ProtocolChoice> {
    let r: RobustnessReport = read_json(p, "a trainer robustness report")?;
    if r.preprocess.fingerprint() != cfg.preprocess().fingerprint() {
        return Err(Error::Config(format!(
            "{}: measured with another preprocessing than this run's (another recipe, or --serve-stain-anchors): it cannot choose this model's output",
            p.display()
        )));
    }
    choose_under_shift(&r)
}

fn training_json(
    run_dir: &Path,
    cfg: &crate::train::TrainConfig,
    (best, views): (&crate::train::ServedInfo, TestTimeViews),
    how: Chosen,
    summary: Option<&FitSummary>,
) -> serde_json::Value {
    // time spent training, from the run's per-epoch log (validation excluded)
    let epoch_seconds: Vec<f64> = crate::epoch_log::read(&run_dir.join(crate::train::METRICS_FILE))
        .iter()
        .map(|l| l.seconds)
        .collect();
    serde_json::json!({
        "config": cfg,
        "output": best.output,
        "colour_weight": best.colour_weight,
        "test_time_views": views,
        "epoch": best.epoch,
        "recipe": match how {
            Chosen::Fixed => "fixed before training: the last epoch, the configured output and colour weight (nothing chosen on validation)",
            Chosen::FromCvTable => "the last epoch; output, colour weight or test-time views given by hand at export (the others the run's), e.g. from a cross-validation table (see metrics.cross_validation.chosen_on_other_folds for the estimate of such a choice; it measured one view)",
            Chosen::UnderShift => "the last epoch; output and colour weight chosen at export under the shift protocol (see metrics.robustness for the rule and the nested estimate of that choice)",
        },
        "run_dir": run_dir.display().to_string(),
        "summary": summary,
        "epochs_trained": epoch_seconds.len(),
        "training_seconds": epoch_seconds.iter().sum::<f64>(),
        "hardware": hardware(),
    })
}

/// The card's headline estimate: the nested choice under shift when the output was chosen
/// there; else the cross-validation row that matches how the output was settled.
fn estimate_json(
    cv: Option<&CvHeadline>,
    choice: Option<&ProtocolChoice>,
    how: Chosen,
) -> serde_json::Value {
    if let (Chosen::UnderShift, Some(c)) = (how, choice) {
        return serde_json::json!({
            "from": "metrics.robustness (trainer robustness: one query cell per held-out original, clean and under each shift)",
            "knn200_mean": c.clean_mean,
            "knn200_sd": c.clean_sd,
            "knn200_mean_over_shifts": c.shifts_mean,
            "knn200_worst_shift": c.worst,
            "worst_shift": c.worst_shift,
            "histogram_knn200_mean": c.histogram_clean,
            "histogram_knn200_mean_over_shifts": c.histogram_shifts_mean,
            "folds": c.folds,
        });
    }
    let Some(cv) = cv else {
        return serde_json::Value::Null;
    };
    // the recipe's own row when it is served as fixed; the "chosen on the other folds" row
    // when the served output or blend was picked from the table
    let key = if how == Chosen::Fixed {
        "served"
    } else {
        "chosen_on_other_folds"
    };
    let row = if how == Chosen::Fixed {
        &cv.served
    } else {
        &cv.chosen_on_other_folds
    };
    serde_json::json!({
        "from": format!("metrics.cross_validation.{key}"),
        "knn200_mean": row.mean.knn200_acc,
        "knn200_sd": row.sd.knn200_acc,
        "histogram_knn200_mean": cv.histogram_baseline.mean.knn200_acc,
        "histogram_knn200_sd": cv.histogram_baseline.sd.knn200_acc,
        "folds": cv.folds,
    })
}

/// A `trainer cv` report: whole, for the card, and its headline read typed. A file that is not
/// one is refused here (it once gave a card whose estimate was all nulls).
fn read_cv(p: &Path) -> Result<(serde_json::Value, CvHeadline)> {
    let v: serde_json::Value = read_json(p, "a trainer cv report")?;
    let h = <CvHeadline as serde::Deserialize>::deserialize(&v)
        .map_err(|e| cellspace_core::Error::invalid(p, format!("not a trainer cv report: {e}")))?;
    Ok((v, h))
}

/// What the card's estimate reads of a `trainer cv` report ([`crate::cv::CvReport`]); the
/// rest of the report goes into the card as it is.
#[derive(serde::Deserialize)]
struct CvHeadline {
    folds: usize,
    served: crate::cv::CvRow,
    chosen_on_other_folds: crate::cv::CvRow,
    histogram_baseline: crate::cv::CvRow,
}

/// Counts of the localisation flags of a data folder, for the card.
fn flag_json(images: &crate::data::CellImages) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("images".into(), images.len().into());
    for (f, n) in images.flag_counts() {
        m.insert(f.name().into(), n.into());
    }
    serde_json::Value::Object(m)
}

fn hardware() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores")
}
