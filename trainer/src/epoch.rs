//! One epoch of a fit: its batches through [`train_step`] (with progress, the divergence check
//! and Ctrl-C), then what ends it: the held-out measurement, the log and `metrics.jsonl` line,
//! and the served model saved. [`crate::train`]'s `fit` strings these together with the
//! checkpoint after each.

use crate::checkpoint::{append_line, record_err, save_served};
use crate::data::{CellImages, EpochPlan, epoch_order, spawn_batches};
use crate::eval::{ColourCache, Split, ValidationResult, validate_with};
use crate::model::Encoder;
use crate::support::SupportQueue;
use crate::train::{
    CHECKPOINT_DIR, FitOptions, METRICS_FILE, MODEL_FILE, RunState, ServedInfo, TrainConfig,
    cosine_lr, fresh_encoder, stop_requested, train_step,
};
use crate::{Error, Result};
use burn::module::Module;
use burn::prelude::*;
use cellspace_core::preprocess::Preprocess;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The model a fit starts from: the checkpoint's when resuming, else fresh (seeded), or
/// torchvision weights with `--init`.
pub fn start_model(
    cfg: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    ad: &Device,
) -> Result<Encoder> {
    if resume {
        let p = run_dir.join(CHECKPOINT_DIR).join(MODEL_FILE);
        return cfg
            .encoder
            .init(ad)
            .try_load_file(&p)
            .map_err(|e| record_err(&p, e));
    }
    let fresh = fresh_encoder(cfg, ad);
    match &cfg.init {
        Some(w) => {
            let (m, report) = crate::init::load_pretrained(fresh, Path::new(w))?;
            log::info!(
                "initialised from {w}: {} tensors loaded, {} left fresh",
                report.applied,
                report.missing.len()
            );
            Ok(m)
        }
        None => Ok(fresh),
    }
}

/// What stays the same over every epoch of a fit.
pub struct Run<'a> {
    cfg: &'a TrainConfig,
    data: Arc<CellImages>,
    split: &'a Split,
    pre: Preprocess,
    run_dir: &'a Path,
    opts: &'a FitOptions<'a>,
    ad: Device,
    batches_per_epoch: usize,
    total_steps: usize,
    /// A plain progress line every 20 batches when stderr is a log file (the bar is hidden).
    log_progress: bool,
    /// NNCLR's support queue, with `nn_queue` (refilled from empty on a resume).
    queue: Option<SupportQueue>,
}

/// What an epoch's batches did.
pub struct EpochDone {
    pub images: usize,
    pub seconds: f64,
    /// Stopped by Ctrl-C or `stop_after_steps` before its last batch.
    pub interrupted: bool,
}

impl<'a> Run<'a> {
    pub fn new(
        cfg: &'a TrainConfig,
        data: Arc<CellImages>,
        split: &'a Split,
        run_dir: &'a Path,
        opts: &'a FitOptions<'a>,
        ad: Device,
    ) -> Self {
        let batches_per_epoch = split.train.len() / cfg.batch_size;
        Self {
            pre: cfg.preprocess(),
            batches_per_epoch,
            total_steps: (batches_per_epoch * cfg.epochs).max(1),
            log_progress: !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            queue: cfg.support_queue(),
            cfg,
            data,
            split,
            run_dir,
            opts,
            ad,
        }
    }

    /// The batches of `state.epoch` from `state.batch` on; `state` follows every step.
    pub fn train_epoch(
        &mut self,
        mut model: Encoder,
        optim: &mut burn::optim::ModuleOptimizer,
        state: &mut RunState,
    ) -> Result<(Encoder, EpochDone)> {
        let (cfg, epoch) = (self.cfg, state.epoch);
        let plan = EpochPlan {
            order: epoch_order(&self.split.train, cfg.seed, epoch),
            batch_size: cfg.batch_size,
            start_batch: state.batch,
            aug: cfg.augment.clone(),
            pre: self.pre.clone(),
            seed: cfg.seed,
            epoch,
        };
        let bar = self.opts.progress;
        bar.start(
            &format!("epoch {}/{}", epoch + 1, cfg.epochs),
            plan.batches(),
            state.batch,
        );
        let start = Instant::now();
        let mut images = 0usize;
        let mut interrupted = false;
        for batch in spawn_batches(self.data.clone(), plan) {
            let lr = cosine_lr(cfg.lr, state.step, self.total_steps);
            let queue = self.queue.as_mut();
            let (next, loss) = train_step(model, optim, &batch, cfg, lr, &self.ad, queue);
            if !loss.is_finite() {
                bar.finish();
                return Err(Error::Diverged {
                    epoch: epoch + 1,
                    batch: batch.index + 1,
                    loss,
                });
            }
            model = next;
            state.step += 1;
            state.batch = batch.index + 1;
            state.loss_sum += loss as f64;
            state.loss_count += 1;
            images += batch.n;
            let ips = images as f64 / start.elapsed().as_secs_f64();
            let line = format!(
                "epoch {}/{} loss {loss:.4} {ips:.0} img/s",
                epoch + 1,
                cfg.epochs
            );
            bar.status(&line);
            bar.advance(1);
            if self.log_progress && (batch.index + 1) % 20 == 0 {
                log::info!(
                    "epoch {}/{} batch {}/{} loss {loss:.4} {ips:.0} img/s",
                    epoch + 1,
                    cfg.epochs,
                    batch.index + 1,
                    self.batches_per_epoch,
                );
            }
            if stop_requested() || self.opts.stop_after_steps.is_some_and(|n| state.step >= n) {
                interrupted = true;
                break;
            }
        }
        bar.finish();
        let seconds = start.elapsed().as_secs_f64();
        Ok((
            model,
            EpochDone {
                images,
                seconds,
                interrupted,
            },
        ))
    }

    /// The end of a finished epoch: measured on the held-out groups (when this epoch is one
    /// `--validate-every` measures), logged, a `metrics.jsonl` line, the served model saved,
    /// and `state` moved to the next epoch (the caller writes the checkpoint).
    pub fn finish_epoch(
        &self,
        model: &Encoder,
        state: &mut RunState,
        done: &EpochDone,
        colour_cache: &mut ColourCache,
    ) -> Result<()> {
        let (cfg, epoch) = (self.cfg, state.epoch);
        let train_loss = state.loss_sum / state.loss_count.max(1) as f64;
        let valid = model.valid();
        let val = if self.split.val.is_empty() || !self.opts.validates(epoch + 1, cfg.epochs) {
            None
        } else {
            Some(validate_with(
                &valid,
                &self.data,
                self.split,
                &self.pre,
                cfg.seed,
                colour_cache,
            )?)
        };
        let ips = done.images as f64 / done.seconds.max(1e-9);
        self.log_epoch(epoch, train_loss, ips, val.as_ref());
        let line = crate::epoch_log::EpochLine {
            epoch: epoch + 1,
            loss: train_loss,
            lr: cosine_lr(cfg.lr, state.step, self.total_steps),
            images_per_s: ips,
            seconds: done.seconds,
            validation: val,
        };
        append_line(&self.run_dir.join(METRICS_FILE), &line.to_line())?;
        let val = line.validation;
        state.served_score = val
            .as_ref()
            .and_then(|v| v.candidate(cfg.output, cfg.colour_weight))
            .map(|c| c.report.knn200_acc);
        let served = ServedInfo {
            epoch: epoch + 1,
            output: cfg.output,
            colour_weight: cfg.colour_weight,
            validation: val,
        };
        save_served(self.run_dir, &valid, &served)?;
        state.epoch += 1;
        state.batch = 0;
        state.loss_sum = 0.0;
        state.loss_count = 0;
        state.finished = state.epoch >= cfg.epochs;
        Ok(())
    }

    fn log_epoch(&self, epoch: usize, loss: f64, ips: f64, val: Option<&ValidationResult>) {
        let cfg = self.cfg;
        let served = val.and_then(|v| v.candidate(cfg.output, cfg.colour_weight));
        match (val, served) {
            (Some(v), Some(c)) => log::info!(
                "epoch {}: loss {loss:.4}, {ips:.0} img/s, held-out kNN-200 served {:.3} (backbone {:.3}, colour histogram {:.3}) P@1 {:.3} MAP@R {:.3}",
                epoch + 1,
                c.report.knn200_acc,
                v.backbone.knn200_acc,
                v.histogram().map_or(f64::NAN, |h| h.knn200_acc),
                c.report.precision_at_1,
                c.report.map_at_r,
            ),
            _ => log::info!(
                "epoch {}: loss {loss:.4}, {ips:.0} img/s ({})",
                epoch + 1,
                if self.split.val.is_empty() {
                    "nothing held out"
                } else {
                    "not measured this epoch: --validate-every"
                }
            ),
        }
    }
}
