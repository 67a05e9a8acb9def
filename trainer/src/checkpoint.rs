//! A run directory on disk: its file names, the checkpoint written every epoch and on Ctrl-C
//! (swapped in whole, so a crash never leaves half of one), the best model, and the pictures.

use crate::data::CellImages;
use crate::eval::Split;
use crate::model::Encoder;
use crate::train::{BestInfo, RunState, TrainConfig};
use crate::{Error, Result};
use burn::module::Module;
use burn::prelude::*;
use cellspace_core::preprocess::Preprocess;
use std::path::Path;

/// Files of a run directory.
pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The served model (the last finished epoch; a fixed recipe, never the "best" on validation).
pub const BEST_MODEL: &str = "served.bpk";
pub const BEST_INFO: &str = "served.json";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "state.json";
pub const BASELINE_FILE: &str = "baseline.json";
pub const LOSS_PNG: &str = "loss.png";
pub const MAP_PNG: &str = "embedding-map.png";

pub(crate) fn record_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

pub(crate) fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| cellspace_core::Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| cellspace_core::Error::io(path, e).into())
}

/// Write model, optimizer and state into `checkpoint.tmp/`, then swap it in.
pub(crate) fn save_checkpoint(
    run_dir: &Path,
    model: &Encoder,
    optim: &burn::optim::ModuleOptimizer,
    state: &RunState,
) -> Result<()> {
    let tmp = run_dir.join(format!("{CHECKPOINT_DIR}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| cellspace_core::Error::io(&tmp, e))?;
    let mp = tmp.join(MODEL_FILE);
    model
        .clone()
        .save_file(&mp)
        .map_err(|e| record_err(&mp, e))?;
    let op = tmp.join(OPTIM_FILE);
    optim.save(&op).map_err(|e| record_err(&op, e))?;
    let sp = tmp.join(STATE_FILE);
    cellspace_core::atomic::write_json(&sp, state)?;
    let dst = run_dir.join(CHECKPOINT_DIR);
    let old = run_dir.join(format!("{CHECKPOINT_DIR}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if dst.exists() {
        std::fs::rename(&dst, &old).map_err(|e| cellspace_core::Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| cellspace_core::Error::io(&dst, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

pub(crate) fn save_best(run_dir: &Path, model: &Encoder, info: &BestInfo) -> Result<()> {
    let tmp = run_dir.join(format!(".{BEST_MODEL}.tmp"));
    model
        .clone()
        .save_file(&tmp)
        .map_err(|e| record_err(&tmp, e))?;
    let dst = run_dir.join(BEST_MODEL);
    std::fs::rename(&tmp, &dst).map_err(|e| cellspace_core::Error::io(&dst, e))?;
    cellspace_core::atomic::write_json(&run_dir.join(BEST_INFO), info)?;
    Ok(())
}

pub fn load_config(run_dir: &Path) -> Result<TrainConfig> {
    let p = run_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| record_err(&p, e))
}

pub(crate) fn load_state(run_dir: &Path) -> Result<RunState> {
    let mut dir = run_dir.join(CHECKPOINT_DIR);
    if !dir.exists() {
        // a crash between the two renames of save_checkpoint leaves only the old one
        dir = run_dir.join(format!("{CHECKPOINT_DIR}.old"));
        if dir.exists() {
            std::fs::rename(&dir, run_dir.join(CHECKPOINT_DIR))
                .map_err(|e| cellspace_core::Error::io(&dir, e))?;
            dir = run_dir.join(CHECKPOINT_DIR);
        }
    }
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p)
        .map_err(|e| record_err(&p, format!("no checkpoint to resume: {e}")))?;
    serde_json::from_str(&text).map_err(|e| record_err(&p, e))
}

pub fn load_best_info(run_dir: &Path) -> Result<BestInfo> {
    let p = run_dir.join(BEST_INFO);
    let text = std::fs::read_to_string(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| record_err(&p, e))
}

/// The best model of a run, on `device`, in inference mode.
pub fn load_best_model(
    run_dir: &Path,
    device: &Device,
) -> Result<(Encoder, TrainConfig, BestInfo)> {
    let cfg = load_config(run_dir)?;
    let info = load_best_info(run_dir)?;
    let p = run_dir.join(BEST_MODEL);
    let model = cfg
        .encoder
        .init(device)
        .try_load_file(&p)
        .map_err(|e| record_err(&p, e))?;
    Ok((model.valid(), cfg, info))
}

/// The loss / validation curve and the embedding map of the best model.
pub fn write_pictures(
    run_dir: &Path,
    data: &CellImages,
    split: &Split,
    pre: &Preprocess,
    seed: u64,
) -> Result<()> {
    use crate::plot::{Series, line_chart, scatter};
    let p = run_dir.join(METRICS_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let get = |v: &serde_json::Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(|x| x.as_f64())
    };
    let series = |name: &str, path: &[&str]| Series {
        name: name.into(),
        points: lines
            .iter()
            .filter_map(|l| Some((get(l, &["epoch"])?, get(l, path)?)))
            .collect(),
    };
    line_chart(
        &run_dir.join(LOSS_PNG),
        &format!(
            "{} - loss and held-out retrieval by epoch",
            run_dir.file_name().unwrap_or_default().to_string_lossy()
        ),
        &[
            series("training loss", &["loss"]),
            series(
                "held-out kNN-200 accuracy (backbone)",
                &["validation", "backbone", "knn200_acc"],
            ),
            series(
                "held-out MAP@R (backbone)",
                &["validation", "backbone", "map_at_r"],
            ),
        ],
    )?;
    let Ok((model, _, best)) = load_best_model(run_dir, &Device::flex()) else {
        return Ok(());
    };
    // held-out cells where the run held some out; else a sample of the (unlabelled) training
    // cells, and the title says so
    let (pool, what) = if split.val.is_empty() {
        (&split.train, "training cells (trained on without labels)")
    } else {
        (&split.val, "held-out cells")
    };
    let idx: Vec<usize> = pool
        .iter()
        .step_by((pool.len() / 1000).max(1))
        .copied()
        .collect();
    let inputs: Vec<Vec<f32>> = idx.iter().map(|&i| data.prepared(i, pre)).collect();
    let emb = crate::eval::embed_inputs(&model, best.output, &inputs, pre.size, &Device::flex());
    let dim = emb.len() / idx.len().max(1);
    let pts = crate::tsne::tsne(&emb, dim, 30.0, 500, seed);
    let labels: Vec<String> = idx.iter().map(|&i| data.labels[i].clone()).collect();
    scatter(
        &run_dir.join(MAP_PNG),
        &format!("t-SNE of {} {what} (epoch {})", idx.len(), best.epoch),
        &pts,
        &labels,
    )
}
