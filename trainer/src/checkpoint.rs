//! A run directory on disk: its file names, the checkpoint written every epoch and on Ctrl-C
//! (swapped in whole, so a crash never leaves half of one), the served model, and the pictures.

use crate::data::CellImages;
use crate::eval::Split;
use crate::model::Encoder;
use crate::train::{RunState, ServedInfo, TrainConfig};
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
pub const SERVED_MODEL: &str = "served.bpk";
pub const SERVED_INFO: &str = "served.json";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "state.json";
pub const BASELINE_FILE: &str = "baseline.json";
pub const LOSS_PNG: &str = "loss.png";
/// The training folder of a run, as its canonical path.
pub const DATA_FILE: &str = "data.json";
pub const MAP_PNG: &str = "embedding-map.png";

pub(crate) fn record_err(
    path: &Path,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        source: e.into(),
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

/// The folder a run trains on, by its canonical path.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunData {
    root: String,
}

fn canonical(data_dir: &Path) -> Result<String> {
    let c = std::fs::canonicalize(data_dir).map_err(|e| cellspace_core::Error::io(data_dir, e))?;
    Ok(c.display().to_string())
}

/// Record that the run in `run_dir` trains on `data_dir`.
pub(crate) fn record_data(run_dir: &Path, data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(|e| cellspace_core::Error::io(run_dir, e))?;
    let root = canonical(data_dir)?;
    cellspace_core::atomic::write_json(&run_dir.join(DATA_FILE), &RunData { root })?;
    Ok(())
}

/// Refuse to resume the run in `run_dir` on another folder than the one it started on (runs
/// from before the folder was recorded are not checked).
pub(crate) fn check_data(run_dir: &Path, data_dir: &Path) -> Result<()> {
    let p = run_dir.join(DATA_FILE);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(());
    };
    let recorded: RunData = serde_json::from_str(&text).map_err(|e| record_err(&p, e))?;
    let given = canonical(data_dir)?;
    if given != recorded.root {
        return Err(Error::Config(format!(
            "{} trains on {}, not on {given}: resume it with --data {} (or start a new run with another --out)",
            run_dir.display(),
            recorded.root,
            recorded.root
        )));
    }
    Ok(())
}

/// Keep only the lines of `metrics.jsonl` for the first `done` epochs: a run killed (or out of
/// disk) after appending an epoch's line but before its checkpoint re-trains that epoch on
/// resume, and its line must not be there twice. Rewritten atomically, and only when needed.
pub fn keep_metrics_of(run_dir: &Path, done: usize) -> Result<()> {
    let p = run_dir.join(METRICS_FILE);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(()); // no metrics yet
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| crate::epoch_log::epoch_of(l).is_some_and(|e| e <= done))
        .collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    cellspace_core::atomic::write_atomic(&p, out.as_bytes()).map_err(Into::into)
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

pub(crate) fn save_served(run_dir: &Path, model: &Encoder, info: &ServedInfo) -> Result<()> {
    let tmp = run_dir.join(format!(".{SERVED_MODEL}.tmp"));
    model
        .clone()
        .save_file(&tmp)
        .map_err(|e| record_err(&tmp, e))?;
    let dst = run_dir.join(SERVED_MODEL);
    std::fs::rename(&tmp, &dst).map_err(|e| cellspace_core::Error::io(&dst, e))?;
    cellspace_core::atomic::write_json(&run_dir.join(SERVED_INFO), info)?;
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

pub fn load_served_info(run_dir: &Path) -> Result<ServedInfo> {
    let p = run_dir.join(SERVED_INFO);
    let text = std::fs::read_to_string(&p).map_err(|e| cellspace_core::Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| record_err(&p, e))
}

/// The served model of a run, on `device`, in inference mode.
pub fn load_served_model(
    run_dir: &Path,
    device: &Device,
) -> Result<(Encoder, TrainConfig, ServedInfo)> {
    let cfg = load_config(run_dir)?;
    let info = load_served_info(run_dir)?;
    let p = run_dir.join(SERVED_MODEL);
    let model = cfg
        .encoder
        .init(device)
        .try_load_file(&p)
        .map_err(|e| record_err(&p, e))?;
    Ok((model.valid(), cfg, info))
}

/// The loss / validation curve and the embedding map of the served model.
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
    let lines: Vec<_> = text.lines().filter_map(crate::epoch_log::parse).collect();
    type Figure = fn(&crate::epoch_log::EpochLine) -> Option<f64>;
    let series = |name: &str, figure: Figure| Series {
        name: name.into(),
        points: lines
            .iter()
            .filter_map(|l| Some((l.epoch as f64, figure(l)?)))
            .collect(),
    };
    line_chart(
        &run_dir.join(LOSS_PNG),
        &format!(
            "{} - loss and held-out retrieval by epoch",
            run_dir.file_name().unwrap_or_default().to_string_lossy()
        ),
        &[
            series("training loss", |l| Some(l.loss)),
            series("held-out kNN-200 accuracy (backbone)", |l| {
                l.backbone().map(|b| b.knn200_acc)
            }),
            series("held-out MAP@R (backbone)", |l| {
                l.backbone().map(|b| b.map_at_r)
            }),
        ],
    )?;
    let Ok((model, _, served)) = load_served_model(run_dir, &Device::flex()) else {
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
    let emb = crate::eval::embed_inputs(&model, served.output, &inputs, pre.size, &Device::flex());
    let dim = emb.len() / idx.len().max(1);
    let pts = crate::tsne::tsne(&emb, dim, 30.0, 500, seed);
    let labels: Vec<String> = idx.iter().map(|&i| data.labels[i].clone()).collect();
    scatter(
        &run_dir.join(MAP_PNG),
        &format!("t-SNE of {} {what} (epoch {})", idx.len(), served.epoch),
        &pts,
        &labels,
    )
}

/// The settings in which `given` differs from a run's own configuration `run`, as
/// `key: run's → given`; the measured reference is not a setting and is left out.
pub fn config_differences(run: &TrainConfig, given: &TrainConfig) -> Vec<String> {
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            v => out.push((prefix.to_string(), v.to_string())),
        }
    }
    let flat = |c: &TrainConfig| {
        let mut v = serde_json::to_value(c).expect("config serialises");
        if let Some(m) = v.as_object_mut() {
            m.remove("reference");
        }
        let mut out = Vec::new();
        leaves("", &v, &mut out);
        out.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (flat(run), flat(given));
    let missing = "(unset)".to_string();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&missing), b.get(k).unwrap_or(&missing));
            (x != y).then(|| format!("{k}: {x} → {y}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run configs written before `--anchors` (the shipped model's among them) read with the
    /// field's own anchors, which is how they were trained.
    #[test]
    fn run_configs_written_before_the_anchor_scope_read_with_the_field_s_own() {
        use cellspace_core::standardise::AnchorScope;
        let text = include_str!("../../models/cellspace-train-config.json");
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v.as_object_mut().unwrap().remove("anchors");
        let cfg: TrainConfig = serde_json::from_value(v).unwrap();
        assert_eq!(cfg.anchors, None, "a config written before the option");
        assert_eq!(cfg.anchors.unwrap_or_default(), AnchorScope::Field);
        let folder = cfg.clone().with_anchors(Some(AnchorScope::Folder));
        let back: TrainConfig =
            serde_json::from_str(&serde_json::to_string(&folder).unwrap()).unwrap();
        assert_eq!(back.anchors, Some(AnchorScope::Folder));
    }

    /// `--anchor-trust` reaches the card's preprocessing; a config written before it (the
    /// shipped model's) trusts each field's own reading, as it was trained.
    #[test]
    fn the_anchor_trust_reaches_the_card_and_older_configs_read_without_one() {
        let text = include_str!("../../models/cellspace-train-config.json");
        let cfg: TrainConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg.anchor_trust, None, "a config written before the option");
        let trust = |c: &TrainConfig| c.preprocess().colour.expect("standardised").trust_cells;
        assert_eq!(trust(&cfg), 0.0);
        let with = cfg.with_anchor_trust(Some(3.0));
        let back: TrainConfig =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(trust(&back), 3.0);
    }

    /// The served model's names said "best" before (it was always the last epoch): a run
    /// checkpointed then still resumes, and its fit summary still reads.
    #[test]
    fn runs_written_under_the_old_best_names_still_read() {
        let s: RunState =
            serde_json::from_str(r#"{"epoch":2,"batch":3,"step":10,"loss_sum":0.0,"loss_count":0,"best_score":0.8,"finished":false}"#)
                .unwrap();
        assert_eq!(s.served_score, Some(0.8));
        let f: crate::train::FitSummary = serde_json::from_str(
            r#"{"run_dir":"r","epochs_done":1,"interrupted":false,"best":null,"train_images":1,"val_images":0,"seconds":1.0,"images_per_s":1.0}"#,
        )
        .unwrap();
        assert!(f.served.is_none());
    }

    /// Case 12 of the hardening round: a kill between the metrics append and the checkpoint
    /// left epoch 2 twice in metrics.jsonl after the resume ([1, 2, 2]).
    #[test]
    fn case_12_a_resumed_run_keeps_each_epoch_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(METRICS_FILE);
        // epochs 1 and 2 logged, but the checkpoint says only epoch 1 was done
        std::fs::write(
            &p,
            "{\"epoch\":1,\"loss\":3.0}\n{\"epoch\":2,\"loss\":2.5}\n",
        )
        .unwrap();
        keep_metrics_of(dir.path(), 1).unwrap();
        append_line(&p, "{\"epoch\":2,\"loss\":2.4}").unwrap();
        let epochs: Vec<u64> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(epochs, vec![1, 2]);
        // nothing to drop: the file is left as it is
        keep_metrics_of(dir.path(), 2).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("2.4"));
    }

    /// Case 11 of the hardening round: `--resume` ignored changed flags and trained on another
    /// `--data` without a word.
    #[test]
    fn case_11_resume_names_changed_flags_and_refuses_other_data() {
        let run = TrainConfig::new(
            crate::model::EncoderConfig::new(),
            crate::augment::AugmentConfig::new(),
        );
        let mut given = run.clone();
        given.lr = 0.01;
        given.augment.jpeg_prob = 0.5; // the default is 0
        let d = config_differences(&run, &given);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|x| x.starts_with("lr: ")), "{d:?}");
        assert!(
            d.iter().any(|x| x.starts_with("augment.jpeg_prob: ")),
            "{d:?}"
        );
        assert!(config_differences(&run, &run).is_empty());

        let runs = tempfile::tempdir().unwrap();
        let (a, b) = (runs.path().join("a"), runs.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let run_dir = runs.path().join("run");
        record_data(&run_dir, &a).unwrap();
        check_data(&run_dir, &a).unwrap();
        let err = check_data(&run_dir, &b).unwrap_err().to_string();
        assert!(err.contains("trains on") && err.contains("/a"), "{err}");
    }
}
