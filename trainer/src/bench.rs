//! `trainer bench`: training and inference images/s of a configuration on this machine, on real
//! images (a benchmark that prints figures, never a timed test).

use crate::data::{CellImages, EpochPlan, spawn_batches};
use crate::loss::LossKind;
use crate::model::EmbeddingOutput;
use crate::train::{TrainConfig, train_step};
use burn::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The burn backend that ran (`flex`, `libtorch`, ...) and what the binary was built with.
    pub backend: String,
    pub built_with: String,
    pub loss: LossKind,
    pub image_size: u32,
    pub batch_size: usize,
    pub train_steps: usize,
    /// Images (each seen as two views) per second through forward, backward and update, with
    /// augmentation running beside the steps as in `fit`.
    pub train_images_per_s: f64,
    /// The same steps on batches prepared beforehand: compute only, as the PyTorch twin.
    pub train_compute_images_per_s: f64,
    /// Images per second through burn's inference forward (batch 256).
    pub burn_inference_images_per_s: f64,
    pub threads: usize,
}

pub fn bench(
    cfg: &TrainConfig,
    data_dir: &Path,
    steps: usize,
    device: &Device,
    progress: &dyn cellspace_core::progress::Progress,
) -> crate::Result<BenchReport> {
    let n = (cfg.batch_size * (steps + 1)).max(256);
    let cfg = &cfg.clone().with_measured_reference(data_dir)?;
    let data = Arc::new(CellImages::load_in_context(
        data_dir,
        &cfg.preprocess(),
        2 * cfg.image_size,
        cfg.augment.context(),
        Some(n),
        progress,
    )?);
    let plan = EpochPlan {
        order: (0..data.len()).collect(),
        batch_size: cfg.batch_size,
        start_batch: 0,
        aug: cfg.augment.clone(),
        pre: cfg.preprocess(),
        seed: cfg.seed,
        epoch: 0,
    };
    let ad = device.clone().autodiff();
    let mut model = crate::train::fresh_encoder(cfg, &ad);
    let mut optim = burn::optim::AdamWConfig::new().init();
    // NNCLR's queue (`--nn-queue`), as in `fit`
    let mut queue = cfg.support_queue();
    let mut batches = spawn_batches(data.clone(), plan.clone()).into_iter();
    // one warm-up step
    let b = batches
        .next()
        .ok_or_else(|| crate::Error::Data("not enough images for one batch".into()))?;
    model = train_step(model, &mut optim, &b, cfg, cfg.lr, &ad, queue.as_mut()).0;
    // end to end: augmentation on its thread while the steps run, as in `fit`
    let t = Instant::now();
    let mut images = 0;
    for b in batches.take(steps) {
        images += b.n;
        model = train_step(model, &mut optim, &b, cfg, cfg.lr, &ad, queue.as_mut()).0;
    }
    let train_ips = images as f64 / t.elapsed().as_secs_f64();
    // compute only (what the PyTorch twin measures): the same batches, prepared beforehand
    let prepared: Vec<_> = spawn_batches(data.clone(), plan)
        .into_iter()
        .skip(1)
        .take(steps)
        .collect();
    let t = Instant::now();
    for b in &prepared {
        model = train_step(model, &mut optim, b, cfg, cfg.lr, &ad, queue.as_mut()).0;
    }
    let compute_ips = images as f64 / t.elapsed().as_secs_f64();
    let infer_ips = inference_images_per_s(&model.valid(), &data, &cfg.preprocess(), device);
    Ok(BenchReport {
        backend: crate::device::backend_name(device),
        built_with: crate::device::backends(),
        loss: cfg.loss,
        image_size: cfg.image_size,
        batch_size: cfg.batch_size,
        train_steps: steps,
        train_images_per_s: train_ips,
        train_compute_images_per_s: compute_ips,
        burn_inference_images_per_s: infer_ips,
        threads: rayon::current_num_threads(),
    })
}

/// Images per second through burn's inference forward: a batch of up to 256 of `data`'s
/// windows, after a 16-image warm-up.
fn inference_images_per_s(
    valid: &crate::model::Encoder,
    data: &CellImages,
    pre: &cellspace_core::preprocess::Preprocess,
    device: &Device,
) -> f64 {
    let inputs: Vec<Vec<f32>> = (0..256.min(data.len()))
        .map(|i| data.prepared(i, pre))
        .collect();
    let embed = |x: &[Vec<f32>]| {
        crate::eval::embed_inputs(valid, EmbeddingOutput::Backbone, x, pre.size, device)
    };
    let _ = embed(&inputs[..16.min(inputs.len())]);
    let t = Instant::now();
    let _ = embed(&inputs);
    inputs.len() as f64 / t.elapsed().as_secs_f64()
}
