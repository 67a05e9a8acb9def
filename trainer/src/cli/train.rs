//! `trainer fit`, `cv`, `robustness` and `bench`: training the recipe and measuring it.

use crate::args::{FitArgs, config};
use anyhow::{Context, Result};
use cellspace_core::outcome::{self, OK, PARTIAL};
use std::path::PathBuf;
use trainer::train::{fit, install_ctrlc};
use trainer::tta::TestTimeViews;

/// Run `trainer fit`.
pub fn fit_cmd(a: FitArgs) -> Result<u8> {
    install_ctrlc();
    let device = trainer::device::select(a.device)?;
    let cfg = config(&a)?;
    // --resume on a folder without a checkpoint starts the run (what a re-run script wants)
    let resume = a.resume && a.out.join(trainer::train::CHECKPOINT_DIR).exists();
    if a.resume && !resume {
        eprintln!(
            "nothing to resume in {}: starting a new run",
            a.out.display()
        );
    }
    if resume {
        let own = trainer::checkpoint::load_config(&a.out)?;
        let changed = trainer::checkpoint::config_differences(&own, &cfg);
        if !changed.is_empty() {
            eprintln!(
                "warning: --resume continues {} as it was configured; the flags given differ from it and are ignored: {}",
                a.out.display(),
                changed.join("; ")
            );
        }
    }
    let bar = cellspace_core::cli::terminal_bar();
    let opts = trainer::train::FitOptions {
        resume,
        validate_every: a.validate_every,
        progress: &bar,
        ..Default::default()
    };
    let summary = fit(&cfg, &a.data, &a.out, &device, &opts)?;
    outcome::emit_json(None, &summary)?;
    if summary.interrupted {
        return Ok(PARTIAL); // progress saved: --resume continues
    }
    eprintln!("run written to {}", a.out.display());
    if !a.no_export {
        let card =
            trainer::export::export_run(&a.out, &a.export, Some(&summary), &Default::default())?;
        eprintln!(
            "model exported: {} (card {})",
            card.with_extension("onnx").display(),
            card.display()
        );
    }
    Ok(OK)
}

/// Cross-validate the fit recipe over K folds of whole source groups: mean ± SD per metric,
/// beside the colour histogram of the same crops on the same folds.
#[derive(clap::Args)]
pub struct CvArgs {
    #[command(flatten)]
    pub fit: FitArgs,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Then query each held-out fold under these shifts (`default`, or a list: see
    /// `trainer robustness --help`).
    #[arg(long)]
    pub shifts: Option<String>,
    /// With --shifts: at most this many copies of each held-out original.
    #[arg(long, default_value_t = 4)]
    pub per_group: usize,
}

/// Run `trainer cv`.
pub fn cv(args: CvArgs) -> Result<u8> {
    let CvArgs {
        fit,
        folds,
        shifts,
        per_group,
    } = args;
    install_ctrlc();
    let device = trainer::device::select(fit.device)?;
    let cfg = config(&fit)?;
    let Some(report) = trainer::cv::cross_validate(
        &cfg,
        &fit.data,
        &fit.out,
        folds,
        &device,
        fit.validate_every,
        &cellspace_core::cli::terminal_bar(),
    )?
    else {
        return Ok(PARTIAL); // interrupted: --resume continues
    };
    eprintln!(
        "\n{folds}-fold cross-validation over source groups (mean ± SD over folds), {:.0} min:\n{}",
        report.seconds / 60.0,
        trainer::cv::table(&report)
    );
    eprintln!("report: {}", fit.out.join(trainer::cv::CV_FILE).display());
    match shifts {
        Some(spec) => {
            let sets = RobustnessSets {
                folds,
                shifts: &spec,
                per_group,
                serve_stain_anchors: false,
                serve_anchor_trust: None,
                tta: false,
                oracle_scale: false,
            };
            run_robustness(&fit, Some(&fit.out), &fit.out, &sets)?
        }
        None => outcome::emit_json(None, &report)?,
    }
    Ok(OK)
}

/// Query each held-out fold under shifts of lamp, stain, exposure, magnification,
/// resolution, blur and JPEG (another lab's microscope): kNN-200 mean ± SD per shift for
/// the folds' models of a `trainer cv` folder and the colour histogram of the same windows.
#[derive(clap::Args)]
pub struct RobustnessArgs {
    #[command(flatten)]
    pub fit: FitArgs,
    /// A `trainer cv` output folder (its folds' models and preprocessing); without it the
    /// colour histogram alone is measured, under the fit flags' preprocessing.
    #[arg(long)]
    pub cv: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// `default`, or shifts separated by `;`, combinations joined by `+`: lamp:R,G,B
    /// sat:F hue:DEG gamma:G mag:M res:F blur:SIGMA jpeg:Q.
    #[arg(long, default_value = "default")]
    pub shifts: String,
    /// At most this many copies of each held-out original.
    #[arg(long, default_value_t = 4)]
    pub per_group: usize,
    /// With --cv: standardise with stain-anchors although the folds were trained with
    /// od-anchors (allowed only where the training folder's fields come out exactly as
    /// they were trained on: its stain shift settles to none).
    #[arg(long, requires = "cv")]
    pub serve_stain_anchors: bool,
    /// With --cv: serve the folds with this `--anchor-trust` instead of their own (a field's
    /// red-cell reading trusted in full from this many red cells up). Training fields that
    /// read at least this many come out exactly as the folds were trained on them.
    #[arg(long, requires = "cv", value_parser = super::args::red_cell_count)]
    pub serve_anchor_trust: Option<f32>,
    /// With --cv: measure every learned output also averaged over the window's eight
    /// symmetries (test-time augmentation, as `trainer export --views dihedral-8` serves it).
    #[arg(long, requires = "cv")]
    pub tta: bool,
    /// A diagnosis: size each shifted folder's windows by its true red-cell scale (the
    /// training folder's times the shift's magnification and resolution) instead of its
    /// measured one, to tell what the ruler's error costs from the rest.
    #[arg(long)]
    pub oracle_scale: bool,
}

/// Run `trainer robustness`.
pub fn robustness(args: RobustnessArgs) -> Result<u8> {
    let RobustnessArgs {
        fit,
        cv,
        folds,
        shifts,
        per_group,
        serve_stain_anchors,
        serve_anchor_trust,
        tta,
        oracle_scale,
    } = args;
    let out = cv.clone().unwrap_or_else(|| fit.out.clone());
    let sets = RobustnessSets {
        folds,
        shifts: &shifts,
        per_group,
        serve_stain_anchors,
        serve_anchor_trust,
        tta,
        oracle_scale,
    };
    run_robustness(&fit, cv.as_deref(), &out, &sets)?;
    Ok(OK)
}

/// Print training and inference images/s of the fit configuration on real images.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub fit: FitArgs,
    /// Write the result to this file (atomically) instead of stdout.
    #[arg(long = "report")]
    pub report: Option<PathBuf>,
    /// Training steps to time (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
}

/// Run `trainer bench`.
pub fn bench(args: BenchArgs) -> Result<u8> {
    let BenchArgs { fit, steps, report } = args;
    let device = trainer::device::select(fit.device)?;
    let bar = cellspace_core::cli::terminal_bar();
    let result = trainer::bench::bench(&config(&fit)?, &fit.data, steps, &device, &bar)?;
    outcome::emit_json(report.as_deref(), &result)?;
    Ok(OK)
}

/// The query sets of the shift protocol, as the command line gave them.
struct RobustnessSets<'a> {
    folds: usize,
    shifts: &'a str,
    per_group: usize,
    serve_stain_anchors: bool,
    serve_anchor_trust: Option<f32>,
    tta: bool,
    oracle_scale: bool,
}

/// `trainer robustness` (and `trainer cv --shifts`): the table on stderr, the report in
/// `OUT/robustness.json` and on stdout.
fn run_robustness(
    fit: &FitArgs,
    cv: Option<&std::path::Path>,
    out: &std::path::Path,
    sets: &RobustnessSets,
) -> Result<()> {
    let shifts =
        cellspace_core::shift::parse(sets.shifts).map_err(|e| anyhow::anyhow!("--shifts: {e}"))?;
    let cfg = config(fit)?;
    let bar = cellspace_core::cli::terminal_bar();
    let plan = trainer::robustness::RobustnessPlan {
        data_dir: &fit.data,
        progress: &bar,
        cv_dir: cv,
        cfg: &cfg,
        folds: sets.folds,
        shifts,
        per_group: sets.per_group,
        serve_stain_anchors: sets.serve_stain_anchors,
        serve_anchor_trust: sets.serve_anchor_trust,
        views: match sets.tta {
            true => vec![TestTimeViews::None, TestTimeViews::Dihedral8],
            false => vec![TestTimeViews::None],
        },
        device: trainer::device::select(fit.device)?,
        oracle_scale: sets.oracle_scale,
    };
    let report = trainer::robustness::robustness(&plan)?;
    eprintln!(
        "\nkNN-200 under shifts, mean ± SD over {} folds ({:.0} min):\n{}",
        report.folds,
        report.seconds / 60.0,
        trainer::robustness::table(&report)
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(trainer::robustness::ROBUSTNESS_FILE);
    cellspace_core::atomic::write_json(&path, &report)?;
    eprintln!("report: {}", path.display());
    outcome::emit_json(None, &report)?;
    Ok(())
}
