//! `trainer cv`: k-fold cross-validation over source groups, the estimate that predicts unseen
//! cells.
//!
//! One validation split of ~60 originals is noise: five random 20% group splits gave one model
//! anywhere from 0.52 to 0.69 kNN-200. So a recipe is measured on K folds of whole source
//! groups: for each fold, a model is trained from scratch on the other folds (labels never
//! used), and the fold's cells query every training cell, as unseen cells query a lab's atlas.
//! Every figure is printed as mean ± SD over folds, beside the colour histogram of the same
//! crops on the same folds.
//!
//! The recipe is fixed (the last epoch; outputs and colour weights are all reported, none
//! chosen per fold). Where a user picks one of the reported outputs, the honest figure is the
//! "chosen on the other folds" row: for each fold, the embedding with the best mean kNN-200 on
//! the *other* folds is scored on this one, so no fold's labels choose its own figure.
//!
//! Each fold is a run directory (`OUT/fold-K/`) with checkpoints: an interrupted `cv` resumes
//! the fold it was in and skips the finished ones (`OUT/fold-K/fold.json`).

use crate::data::CellImages;
use crate::eval::{Candidate, Split, ValidationResult, histogram_baseline, validate};
use crate::model::EmbeddingOutput;
use crate::train::{FitOptions, TrainConfig, fit_loaded, load_data, load_served_model};
use crate::tta::TestTimeViews;
use crate::{Error, Result};
use burn::prelude::*;
use cellspace_core::metrics::RetrievalReport;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// File of a finished fold in its run directory.
pub const FOLD_FILE: &str = "fold.json";
/// The report of the whole cross-validation in the output folder.
pub const CV_FILE: &str = "cv.json";

/// What one fold measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub folds: usize,
    pub train_images: usize,
    pub query_images: usize,
    /// Every learned output, blend and the in-graph histogram, queries against all training
    /// cells of the other folds.
    pub validation: ValidationResult,
    /// The plain 8x8x8 histogram of the same windows (the baseline of the quality issue).
    pub histogram_baseline: RetrievalReport,
    pub training_seconds: f64,
}

/// Mean and standard deviation over folds of one embedding's metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvRow {
    pub name: String,
    pub mean: RetrievalReport,
    pub sd: RetrievalReport,
    /// kNN-200 accuracy per fold.
    pub knn200_per_fold: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvReport {
    pub folds: usize,
    pub recipe: TrainConfig,
    /// The recipe's served embedding (its output and colour weight).
    pub served: CvRow,
    /// Each fold scored with the embedding that did best (mean kNN-200) on the other folds.
    pub chosen_on_other_folds: CvRow,
    pub histogram_baseline: CvRow,
    /// Every measured embedding.
    pub rows: Vec<CvRow>,
    pub fold_results: Vec<FoldResult>,
    pub seconds: f64,
}

/// Name of a measured embedding in the report.
pub fn candidate_name(c: &Candidate) -> String {
    output_name(c.output, c.colour_weight)
}

/// The name of a candidate averaged over `views` ([`crate::tta`]): [`output_name`] itself for
/// one view, so that reports from before test-time views read the same.
pub fn views_name(output: EmbeddingOutput, views: TestTimeViews, colour_weight: f32) -> String {
    let name = output_name(output, colour_weight);
    match views {
        TestTimeViews::None => name,
        TestTimeViews::Dihedral8 if colour_weight >= 1.0 => name,
        TestTimeViews::Dihedral8 => format!("{name}, 8 views"),
    }
}

/// Name of the embedding `output` blended with the colour histogram at `colour_weight`.
pub fn output_name(output: EmbeddingOutput, colour_weight: f32) -> String {
    let out = match output {
        EmbeddingOutput::Backbone => "backbone",
        EmbeddingOutput::Head => "head",
    };
    match colour_weight {
        w if w <= 0.0 => format!("learned {out}"),
        w if w >= 1.0 => "in-graph colour histogram (model input)".into(),
        w => format!("{out} + colour, w {w:.1}"),
    }
}

/// Cross-validate `cfg` over `folds` folds of the source groups under `data_dir`; each fold's
/// training measures its held-out groups every `validate_every` epochs (0 or 1: each) and last.
pub fn cross_validate(
    cfg: &TrainConfig,
    data_dir: &Path,
    out: &Path,
    folds: usize,
    device: &Device,
    validate_every: usize,
    progress: &dyn cellspace_core::progress::Progress,
) -> Result<Option<CvReport>> {
    if folds < 2 {
        return Err(Error::Config("--folds must be at least 2".into()));
    }
    cfg.check()?;
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out).map_err(|e| cellspace_core::Error::io(out, e))?;
    let cfg = &kept_reference(cfg, data_dir, out)?;
    let data = load_data(cfg, data_dir, progress)?;
    let mut results = Vec::new();
    for k in 0..folds {
        let run = out.join(format!("fold-{}", k + 1));
        let done = run.join(FOLD_FILE);
        if let Ok(text) = std::fs::read_to_string(&done)
            && let Ok(r) = serde_json::from_str::<FoldResult>(&text)
        {
            log::info!("fold {}/{folds}: finished before, reused", k + 1);
            results.push(r);
            continue;
        }
        let Some(r) = run_fold(
            cfg,
            &data,
            &run,
            [k, folds],
            device,
            (validate_every, progress),
        )?
        else {
            return Ok(None);
        };
        cellspace_core::atomic::write_json(&done, &r)?;
        print_fold(&r, cfg);
        results.push(r);
    }
    let report = summarise(cfg, folds, results, started.elapsed().as_secs_f64());
    cellspace_core::atomic::write_json(&out.join(CV_FILE), &report)?;
    plot_epochs(out, folds)?;
    Ok(Some(report))
}

/// The config with the one colour reference every fold shares, kept in `OUT/reference.json`
/// so that a resumed cv measures nothing again.
fn kept_reference(cfg: &TrainConfig, data_dir: &Path, out: &Path) -> Result<TrainConfig> {
    let kept = out.join("reference.json");
    Ok(
        match std::fs::read_to_string(&kept)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            Some(r) if cfg.needs_reference() => cfg.clone().with_reference(Some(r)),
            _ => {
                let c = cfg.clone().with_measured_reference(data_dir)?;
                if let Some(r) = &c.reference {
                    cellspace_core::atomic::write_json(&kept, r)?;
                }
                c
            }
        },
    )
}

/// Train fold `k` of `folds` into `run` (resuming its checkpoint) and measure its held-out
/// cells against every training cell; None when the training was interrupted.
fn run_fold(
    cfg: &TrainConfig,
    data: &Arc<CellImages>,
    run: &Path,
    [k, folds]: [usize; 2],
    device: &Device,
    (validate_every, progress): (usize, &dyn cellspace_core::progress::Progress),
) -> Result<Option<FoldResult>> {
    let fold_cfg = cfg.clone().with_fold(Some([k, folds]));
    let resume = run.join(crate::train::CHECKPOINT_DIR).exists();
    log::info!(
        "fold {}/{folds}: training on the other folds -> {}",
        k + 1,
        run.display()
    );
    let summary = fit_loaded(
        &fold_cfg,
        data.clone(),
        run,
        device,
        &FitOptions {
            resume,
            validate_every,
            progress,
            ..Default::default()
        },
    )?;
    if summary.interrupted {
        log::info!(
            "interrupted: run the same command again to resume fold {}",
            k + 1
        );
        return Ok(None);
    }
    // the fold's cells against every training cell (the per-epoch curve used a sample)
    let split = Split::for_config(data, &fold_cfg).regallery(data, usize::MAX);
    let (model, _, _) = load_served_model(run, &Device::flex())?;
    let validation = validate(&model, data, &split, &cfg.preprocess(), cfg.seed)?;
    Ok(Some(FoldResult {
        fold: k + 1,
        folds,
        train_images: split.train.len(),
        query_images: split.val.len(),
        histogram_baseline: histogram_baseline(data, &split, cfg.seed),
        validation,
        training_seconds: summary.seconds,
    }))
}

/// Picture of the per-epoch validation averaged over folds (`OUT/cv.png`): the training loss
/// and held-out kNN-200 of the learned backbone against the in-graph histogram of the same
/// windows (the curves use each fold's per-epoch gallery sample, the table all training cells).
pub const CV_PNG: &str = "cv.png";

fn plot_epochs(out: &Path, folds: usize) -> Result<()> {
    use crate::plot::{Series, line_chart};
    let mut sums: std::collections::BTreeMap<(usize, &str), (f64, f64)> = Default::default();
    type Figure = fn(&crate::epoch_log::EpochLine) -> Option<f64>;
    let fields: [(&str, Figure); 3] = [
        ("loss", |l| Some(l.loss)),
        ("learned", |l| l.backbone().map(|b| b.knn200_acc)),
        ("histogram", |l| l.histogram_knn200()),
    ];
    for k in 0..folds {
        let p = out
            .join(format!("fold-{}", k + 1))
            .join(crate::train::METRICS_FILE);
        for line in crate::epoch_log::read(&p) {
            for (name, figure) in fields {
                if let Some(x) = figure(&line) {
                    let e = sums.entry((line.epoch, name)).or_default();
                    e.0 += x;
                    e.1 += 1.0;
                }
            }
        }
    }
    let series = |name: &str, label: &str| Series {
        name: label.into(),
        points: sums
            .iter()
            .filter(|((_, n), _)| *n == name)
            .map(|((e, _), (s, c))| (*e as f64, s / c))
            .collect(),
    };
    line_chart(
        &out.join(CV_PNG),
        &format!("{folds}-fold cross-validation: mean over folds by epoch"),
        &[
            series("loss", "training loss"),
            series("learned", "held-out kNN-200, learned backbone"),
            series(
                "histogram",
                "held-out kNN-200, colour histogram of the same windows",
            ),
        ],
    )
}

fn print_fold(r: &FoldResult, cfg: &TrainConfig) {
    let served = r
        .validation
        .candidate(cfg.output, cfg.colour_weight)
        .map_or(f64::NAN, |c| c.report.knn200_acc);
    log::info!(
        "fold {}/{}: {} query cells of {} originals, kNN-200 served {:.3}, histogram {:.3}",
        r.fold,
        r.folds,
        r.query_images,
        r.histogram_baseline.n_originals,
        served,
        r.histogram_baseline.knn200_acc
    );
}

/// Mean and SD (sample, n-1) over folds of every field of the reports (counts take the
/// rounded figure).
pub fn mean_sd(name: &str, reports: &[RetrievalReport]) -> CvRow {
    // a fold without a figure (NaN: it had no query cells) is left out of that figure
    let finite = |xs: &[f64]| {
        xs.iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect::<Vec<_>>()
    };
    let mean_of = |xs: &[f64]| xs.iter().sum::<f64>() / (xs.len() as f64).max(1.0);
    let mean = |xs: &[f64]| mean_of(&finite(xs));
    let sd = |xs: &[f64]| {
        let xs = finite(xs);
        let m = mean_of(&xs);
        let n = xs.len() as f64;
        (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt()
    };
    CvRow {
        name: name.to_string(),
        mean: RetrievalReport::combine(reports, mean),
        sd: RetrievalReport::combine(reports, sd),
        knn200_per_fold: reports.iter().map(|r| r.knn200_acc).collect(),
    }
}

fn summarise(cfg: &TrainConfig, folds: usize, results: Vec<FoldResult>, seconds: f64) -> CvReport {
    let candidates = results
        .first()
        .map(|r| r.validation.all())
        .unwrap_or_default();
    let names: Vec<String> = candidates.iter().map(candidate_name).collect();
    let reports_of = |name: &str| -> Vec<RetrievalReport> {
        results
            .iter()
            .filter_map(|r| {
                r.validation
                    .all()
                    .into_iter()
                    .find(|c| candidate_name(c) == name)
                    .map(|c| c.report)
            })
            .collect()
    };
    let rows: Vec<CvRow> = names.iter().map(|n| mean_sd(n, &reports_of(n))).collect();
    let served_name = results
        .first()
        .and_then(|r| r.validation.candidate(cfg.output, cfg.colour_weight))
        .map(|c| candidate_name(&c))
        .unwrap_or_default();
    let served = mean_sd(&served_name, &reports_of(&served_name));
    // for each fold: the learned embedding best on the other folds, scored on this fold
    let learned: Vec<String> = candidates
        .iter()
        .filter(|c| c.colour_weight < 1.0)
        .map(candidate_name)
        .collect();
    let chosen: Vec<RetrievalReport> = (0..results.len())
        .filter_map(|k| {
            let score = |name: &str| {
                let xs: Vec<f64> = reports_of(name)
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, r)| r.knn200_acc)
                    .collect();
                xs.iter().sum::<f64>() / xs.len().max(1) as f64
            };
            let best = learned
                .iter()
                .max_by(|a, b| score(a).total_cmp(&score(b)))?;
            reports_of(best).get(k).cloned()
        })
        .collect();
    let histogram: Vec<RetrievalReport> = results
        .iter()
        .map(|r| r.histogram_baseline.clone())
        .collect();
    CvReport {
        folds,
        recipe: cfg.clone(),
        served,
        chosen_on_other_folds: mean_sd("learned, chosen on the other folds", &chosen),
        histogram_baseline: mean_sd("colour histogram 8x8x8 of the same windows", &histogram),
        rows,
        fold_results: results,
        seconds,
    }
}

/// The report as a table (markdown), mean ± SD over folds.
pub fn table(r: &CvReport) -> String {
    let mut s = String::from(
        "| embedding | kNN-200 | kNN-200 balanced | kNN-11 balanced | P@1 | MAP@R | NMI | ARI | per original |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut line = |row: &CvRow, bold: bool| {
        let f = |m: f64, sd: f64| format!("{m:.3} ± {sd:.3}");
        let (m, d) = (&row.mean, &row.sd);
        let name = if bold {
            format!("**{}** (served)", row.name)
        } else {
            row.name.clone()
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f(m.knn200_acc, d.knn200_acc),
            f(m.knn200_balanced, d.knn200_balanced),
            f(m.knn11_balanced, d.knn11_balanced),
            f(m.precision_at_1, d.precision_at_1),
            f(m.map_at_r, d.map_at_r),
            f(m.kmeans_nmi, d.kmeans_nmi),
            f(m.kmeans_ari, d.kmeans_ari),
            f(m.per_original_acc, d.per_original_acc),
        ));
    };
    line(&r.histogram_baseline, false);
    for row in &r.rows {
        line(row, row.name == r.served.name);
    }
    line(&r.chosen_on_other_folds, false);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_every_figure_are_averaged() {
        let r = |x: f64, n: usize| RetrievalReport {
            map_at_r: x,
            kmeans_ari: 2.0 * x,
            n_originals: n,
            ..Default::default()
        };
        let row = mean_sd("x", &[r(0.2, 3), r(0.4, 4)]);
        assert!((row.mean.map_at_r - 0.3).abs() < 1e-12);
        assert!((row.mean.kmeans_ari - 0.6).abs() < 1e-12);
        assert!((row.sd.kmeans_ari - 0.08f64.sqrt()).abs() < 1e-9);
        assert_eq!(row.mean.n_originals, 4, "3.5 rounds to 4");
        let row = mean_sd("x", &[r(0.2, 3), r(f64::NAN, 3), r(0.4, 3)]);
        assert!(
            (row.mean.map_at_r - 0.3).abs() < 1e-12,
            "a fold without the figure"
        );
        assert!(row.sd.map_at_r.is_finite());
    }

    #[test]
    fn mean_and_sample_sd_over_folds() {
        let r = |x: f64| RetrievalReport {
            knn200_acc: x,
            n_query: 10,
            ..Default::default()
        };
        let row = mean_sd("x", &[r(0.5), r(0.7), r(0.6)]);
        assert!((row.mean.knn200_acc - 0.6).abs() < 1e-12);
        assert!((row.sd.knn200_acc - 0.1).abs() < 1e-12);
        assert_eq!(row.mean.n_query, 10);
        assert_eq!(row.knn200_per_fold, vec![0.5, 0.7, 0.6]);
    }
}
