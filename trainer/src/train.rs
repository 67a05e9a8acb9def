//! The training loop: two views per image through the encoder, the chosen loss, AdamW with a
//! cosine learning rate, validation on held-out source groups after every epoch, a checkpoint
//! after every epoch and on Ctrl-C, and exact resumption from it.
//!
//! The recipe is fixed before training: the served model is the last epoch, with the output and
//! colour weight of the configuration. Nothing is chosen on the validation split, because one
//! split of ~60 originals is noise (the same model scores 0.52-0.69 kNN-200 on five of them) and
//! a choice made on it overstates what unseen cells get. Recipes are compared with
//! `trainer cv` ([`crate::cv`]), over group folds.

use crate::augment::AugmentConfig;
pub use crate::checkpoint::{
    BASELINE_FILE, CHECKPOINT_DIR, CONFIG_FILE, LOSS_PNG, MAP_PNG, METRICS_FILE, MODEL_FILE,
    OPTIM_FILE, SERVED_INFO, SERVED_MODEL, STATE_FILE, load_config, load_served_info,
    load_served_model, write_pictures,
};
use crate::checkpoint::{load_state, record_err, save_checkpoint};
use crate::data::{Batch, CellImages};
use crate::eval::{ColourCache, Split, ValidationResult};
use crate::loss::{LossKind, LossParams, Objective};
use crate::model::{EmbeddingOutput, Encoder, EncoderConfig};
use crate::support::SupportQueue;
use crate::{Error, Result};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use cellspace_core::locate::LocateConfig;
use cellspace_core::preprocess::{Preprocess, ResizeRule};
use cellspace_core::reference::Reference;
use cellspace_core::standardise::{AnchorScope, ColourStandard, Method};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Config, Debug)]
pub struct TrainConfig {
    pub encoder: EncoderConfig,
    pub augment: AugmentConfig,
    #[config(default = "LossKind::Ntxent")]
    pub loss: LossKind,
    #[config(default = 10)]
    pub epochs: usize,
    #[config(default = 128)]
    pub batch_size: usize,
    #[config(default = 64)]
    pub image_size: u32,
    #[config(default = 2e-3)]
    pub lr: f64,
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    #[config(default = 42)]
    pub seed: u64,
    /// Triplet margin.
    #[config(default = 0.2)]
    pub margin: f32,
    /// NT-Xent temperature.
    #[config(default = 0.2)]
    pub temperature: f32,
    /// Debiased NT-Xent class prior τ⁺ (0 = plain NT-Xent).
    #[config(default = 0.0)]
    pub debias: f32,
    /// Triplet: ignore negatives with cosine above this (1.0 = off).
    #[config(default = 1.0)]
    pub fn_threshold: f32,
    /// Share of source groups held out for validation.
    #[config(default = 0.2)]
    pub val_fraction: f64,
    /// At most this many training images serve as the validation gallery.
    #[config(default = 3000)]
    pub val_gallery_max: usize,
    /// Use only the first N images (spread over the folder), for a quick try.
    pub limit: Option<usize>,
    /// Torchvision-style ResNet weights to start from (.pth/.pt/.safetensors).
    pub init: Option<String>,
    /// What the model looks at: the window around the white cell, or the whole field.
    #[config(default = "Crop::Cell")]
    pub crop: Crop,
    /// Cell window side as a fraction of the image's shorter side (112 px of 240).
    #[config(default = 0.4667)]
    pub window: f32,
    /// The served embedding: the backbone's or the projection head's.
    #[config(default = "EmbeddingOutput::Backbone")]
    pub output: EmbeddingOutput,
    /// Weight of the in-graph colour histogram in the served embedding (0 = learned only).
    #[config(default = 0.0)]
    pub colour_weight: f32,
    /// Cross-validation: validate on fold `[k, K]` (k of K folds of whole source groups)
    /// instead of a `val_fraction` share.
    pub fold: Option<[usize; 2]>,
    /// Colour standardisation of every field before localisation and embedding.
    #[config(default = "ColourChoice::OdAnchors")]
    pub colour: ColourChoice,
    /// What the window is measured in: red-cell diameters (per field) or the field's size.
    #[config(default = "ScaleChoice::RedCells")]
    pub scale: ScaleChoice,
    /// Whose colour anchors standardise a field of a calibrated folder: its own or the
    /// folder's median; None (a config written before the option) is its own.
    #[config(default = "None")]
    pub anchors: Option<AnchorScope>,
    /// Under field anchors: how many red cells a field's own red-cell reading must rest on to
    /// be trusted in full ([`cellspace_core::standardise::shrink_to_folder`]); None (a config
    /// written before the option) or 0: every reading.
    #[config(default = "None")]
    pub anchor_trust: Option<f32>,
    /// NNCLR ([`crate::support`]): each image's positive is its nearest neighbour among the
    /// last this-many images seen. None (a config written before the option) or 0: its own
    /// other view, as before.
    #[config(default = "None")]
    pub nn_queue: Option<usize>,
    /// The training fields' reference (colour anchors, red-cell scale, accepted ranges):
    /// measured on the data when a run starts, kept in config.json and the model card.
    pub reference: Option<Reference>,
}

/// How a field's colour is standardised ([`cellspace_core::standardise`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ColourChoice {
    /// Absolute colour, as models before standardisation.
    None,
    /// Background and red cells mapped to the reference in optical density, per channel.
    OdAnchors,
    /// The field's stain shift (exposure, HSV hue turn and saturation scale seen on its red
    /// cells, settled like the scale) undone, then od-anchors.
    StainAnchors,
    /// White balance on the background, the HSV hue turn and saturation scale that bring the
    /// red cells to the reference's, then od-anchors for exposure.
    HsvAnchors,
    /// White balance on the background; CIELAB lightness and chroma (turn and scale) mapped
    /// so the red cells match the reference.
    LabAnchors,
    /// Reinhard: CIELAB mean and SD of background and red cells matched to the reference.
    LabReinhard,
}

/// What the cell window's size is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ScaleChoice {
    /// A fixed fraction of the field's shorter side (right at one magnification only).
    Field,
    /// Red-cell diameters measured in each field ([`cellspace_core::scale`]).
    RedCells,
}

/// What the model looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Crop {
    /// The square window around the stained white cell ([`cellspace_core::locate`]).
    Cell,
    /// The central square of the whole field (models before the cell window).
    Field,
}

/// Measured red-cell diameters within this ratio of the training fields' are taken as theirs
/// (see [`cellspace_core::scale::Band`]).
pub const SCALE_BAND: f32 = 1.2;

impl TrainConfig {
    /// The configured loss, ready to apply to a batch.
    /// NNCLR's empty support queue, with `nn_queue` set (and not 0); every training loop
    /// (`fit`, `cv`, `bench`) starts from this one.
    pub fn support_queue(&self) -> Option<SupportQueue> {
        self.nn_queue.filter(|&q| q > 0).map(SupportQueue::new)
    }

    pub fn objective(&self) -> Objective {
        Objective::new(
            self.loss,
            &LossParams {
                margin: self.margin,
                fn_threshold: self.fn_threshold,
                temperature: self.temperature,
                debias: self.debias,
            },
        )
    }

    /// The preprocessing this configuration trains and serves with. Standardisation and the
    /// red-cell scale need the [`reference`](Self::reference), which
    /// [`with_measured_reference`](Self::with_measured_reference) fills in.
    pub fn preprocess(&self) -> Preprocess {
        let reference = self.reference.as_ref().filter(|_| self.crop == Crop::Cell);
        let rule = match self.crop {
            Crop::Cell => ResizeRule::CellWindow(LocateConfig {
                window: self.window,
                window_rbc: reference
                    .filter(|_| self.scale == ScaleChoice::RedCells)
                    .map(|r| self.window * r.field_rbc),
                rbc_px_range: reference
                    .filter(|_| self.scale == ScaleChoice::RedCells)
                    .map(|r| r.rbc_px_range),
                rbc_band: reference
                    .filter(|_| self.scale == ScaleChoice::RedCells)
                    .map(|r| cellspace_core::scale::Band {
                        reference_px: r.rbc_px,
                        ratio: SCALE_BAND,
                    }),
                ..LocateConfig::default()
            }),
            Crop::Field => ResizeRule::CenterSquareBilinear,
        };
        let mut pre = Preprocess::blood_cells_with(self.image_size, rule);
        pre.colour = reference.and_then(|r| {
            let method = match self.colour {
                ColourChoice::None => return None,
                ColourChoice::OdAnchors => Method::OdAnchors {
                    reference: r.anchors,
                },
                ColourChoice::StainAnchors => Method::StainAnchors {
                    reference: r.anchors,
                    band: Default::default(),
                },
                ColourChoice::HsvAnchors => Method::HsvAnchors {
                    reference: r.anchors,
                },
                ColourChoice::LabAnchors => Method::LabAnchors {
                    reference: r.anchors,
                },
                ColourChoice::LabReinhard => Method::LabReinhard {
                    mean: r.lab.mean,
                    sd: r.lab.sd,
                },
            };
            Some(ColourStandard {
                method,
                gain_range: r.gain_range,
                scope: self.anchors.unwrap_or_default(),
                trust_cells: self.anchor_trust.unwrap_or(0.0),
            })
        });
        pre
    }

    /// Whether this configuration needs a measured reference it does not have yet.
    pub fn needs_reference(&self) -> bool {
        self.reference.is_none()
            && self.crop == Crop::Cell
            && (self.colour != ColourChoice::None || self.scale == ScaleChoice::RedCells)
    }

    /// This configuration with the reference measured on the images under `data_dir` (when
    /// it needs one; see [`needs_reference`](Self::needs_reference)).
    pub fn with_measured_reference(mut self, data_dir: &Path) -> Result<Self> {
        if self.needs_reference() {
            let r = crate::data::measure_reference(data_dir)?;
            log::info!(
                "reference of {} fields ({} without anchors or scale): background {:.0?}, red cells {:.0?}, red cell {:.1} px, window {:.2} red-cell diameters",
                r.fields,
                r.unmeasured,
                r.anchors.background,
                r.anchors.red_cell_rgb(),
                r.rbc_px,
                self.window * r.field_rbc
            );
            self.reference = Some(r);
        }
        Ok(self)
    }
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.into()));
        if self.batch_size < 2 {
            return bad("--batch-size must be at least 2 (negatives come from the batch)");
        }
        if self.image_size < 16 {
            return bad("--image-size must be at least 16");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("validation fraction must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.debias) {
            return bad("--debias must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.colour_weight) {
            return bad(
                "--colour-weight must be in [0, 1): the learned embedding is always served",
            );
        }
        if !(self.window > 0.05 && self.window <= 1.5) {
            return bad("--window must be a fraction of the shorter side in (0.05, 1.5]");
        }
        if self.output == EmbeddingOutput::Head && self.encoder.head_dim == 0 {
            return bad("--output head needs a projection head (NT-Xent with --head-dim > 0)");
        }
        if let Some([k, n]) = self.fold
            && (n < 2 || k >= n)
        {
            return bad("fold must be k of K with K >= 2 and k < K");
        }
        Ok(())
    }
}

/// Where a run stands; written with every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Next batch of that epoch.
    pub batch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Sum of the losses of the current epoch so far, and their count.
    pub loss_sum: f64,
    pub loss_count: usize,
    /// Last validation score (kNN-200 accuracy of the served embedding on held-out groups).
    #[serde(alias = "best_score")]
    pub served_score: Option<f64>,
    pub finished: bool,
}

/// What `fit` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitSummary {
    pub run_dir: PathBuf,
    /// The burn backend that trained (`flex`, `libtorch`, `libtorch-cuda`, `vulkan`).
    #[serde(default)]
    pub backend: String,
    pub epochs_done: usize,
    pub interrupted: bool,
    /// The served model (the last finished epoch's), with its validation.
    #[serde(alias = "best")]
    pub served: Option<ServedInfo>,
    pub train_images: usize,
    pub val_images: usize,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// The served model of a run (its last finished epoch) and what it serves; the validation is
/// that epoch's, reported, never used to choose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedInfo {
    pub epoch: usize,
    pub output: EmbeddingOutput,
    /// Weight of the colour histogram in the served embedding (0 = learned only).
    #[serde(default)]
    pub colour_weight: f32,
    /// None when the run held nothing out (trained on every group).
    pub validation: Option<ValidationResult>,
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Make Ctrl-C finish the current step, write a checkpoint and return.
pub fn install_ctrlc() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        log::info!(
            "\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to quit now)"
        );
    });
}

/// How `fit` runs (not part of the run's configuration).
#[derive(Clone, Copy)]
pub struct FitOptions<'a> {
    /// Continue the run saved in the run directory (its config wins over `cfg`).
    pub resume: bool,
    /// Stop (with a checkpoint, as Ctrl-C does) once this many optimizer steps are done.
    pub stop_after_steps: Option<usize>,
    /// Measure the held-out groups after every this many epochs (0 or 1: after each); the last
    /// epoch is always measured. Validation costs about as much as two epochs of training.
    pub validate_every: usize,
    /// Where the decoding and each epoch's batches are reported (`&()`: nowhere).
    pub progress: &'a dyn cellspace_core::progress::Progress,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        Self {
            resume: false,
            stop_after_steps: None,
            validate_every: 0,
            progress: &(),
        }
    }
}

impl FitOptions<'_> {
    /// Whether the epoch numbered `done` (1-based) of `epochs` is measured.
    pub fn validates(&self, done: usize, epochs: usize) -> bool {
        self.validate_every <= 1 || done >= epochs || done.is_multiple_of(self.validate_every)
    }
}

/// Learn an encoder on the images under `data_dir`; everything goes into `run_dir`.
pub fn fit(
    cfg: &TrainConfig,
    data_dir: &Path,
    run_dir: &Path,
    device: &Device,
    opts: &FitOptions,
) -> Result<FitSummary> {
    // a resumed run loads its data by its own config, not by `cfg`, and only its own data
    let own = if opts.resume {
        crate::checkpoint::check_data(run_dir, data_dir)?;
        load_config(run_dir)?
    } else {
        let own = cfg.clone().with_measured_reference(data_dir)?;
        if !run_dir.join(CHECKPOINT_DIR).exists() {
            crate::checkpoint::record_data(run_dir, data_dir)?;
        }
        own
    };
    let data = load_data(&own, data_dir, opts.progress)?;
    fit_loaded(&own, data, run_dir, device, opts)
}

/// The images `fit` would load for `cfg`, the decoding reported to `progress`.
pub fn load_data(
    cfg: &TrainConfig,
    data_dir: &Path,
    progress: &dyn cellspace_core::progress::Progress,
) -> Result<Arc<CellImages>> {
    Ok(Arc::new(CellImages::load_in_context(
        data_dir,
        &cfg.preprocess(),
        2 * cfg.image_size,
        cfg.augment.context(),
        cfg.limit,
        progress,
    )?))
}

/// Prepare a run directory for `cfg` (write its config) or read the one to resume.
fn open_run(cfg: &TrainConfig, run_dir: &Path, resume: bool) -> Result<(TrainConfig, RunState)> {
    std::fs::create_dir_all(run_dir).map_err(|e| cellspace_core::Error::io(run_dir, e))?;
    if resume {
        let cfg = load_config(run_dir)?;
        let state = load_state(run_dir)?;
        crate::checkpoint::keep_metrics_of(run_dir, state.epoch)?;
        log::info!(
            "resuming {} at epoch {}, batch {}",
            run_dir.display(),
            state.epoch + 1,
            state.batch
        );
        return Ok((cfg, state));
    }
    if run_dir.join(CHECKPOINT_DIR).exists() {
        return Err(Error::Config(format!(
            "{} already holds a run: pass --resume to continue it, or choose another --out",
            run_dir.display()
        )));
    }
    cfg.check()?;
    cellspace_core::atomic::write_json(&run_dir.join(CONFIG_FILE), cfg)?;
    let _ = std::fs::remove_file(run_dir.join(METRICS_FILE));
    Ok((cfg.clone(), RunState::default()))
}

/// [`fit`] on images already loaded (cross-validation loads them once for every fold).
pub fn fit_loaded(
    cfg: &TrainConfig,
    data: Arc<CellImages>,
    run_dir: &Path,
    device: &Device,
    opts: &FitOptions,
) -> Result<FitSummary> {
    STOP.store(false, Ordering::SeqCst);
    let (cfg, state) = open_run(cfg, run_dir, opts.resume)?;
    fit_with(&cfg, data, state, run_dir, device, opts)
}

fn fit_with(
    cfg: &TrainConfig,
    data: Arc<CellImages>,
    mut state: RunState,
    run_dir: &Path,
    device: &Device,
    opts: &FitOptions,
) -> Result<FitSummary> {
    if state.finished {
        log::info!("run {} is already finished", run_dir.display());
    }
    device.seed(cfg.seed);
    let split = Split::for_config(&data, cfg);
    if split.train.len() < cfg.batch_size {
        return Err(Error::Config(format!(
            "only {} training images after holding out validation groups; lower --batch-size (now {})",
            split.train.len(),
            cfg.batch_size
        )));
    }
    log::info!(
        "{} images ({} skipped): {} train, {} held-out validation ({} source groups known)",
        data.len(),
        data.failed.len(),
        split.train.len(),
        split.val.len(),
        split.n_groups
    );
    let ad = device.clone().autodiff();
    let mut model = crate::epoch::start_model(cfg, run_dir, opts.resume, &ad)?;
    if !opts.resume && !split.val.is_empty() {
        let base = crate::eval::histogram_baseline(&data, &split, cfg.seed);
        log::info!(
            "colour-histogram baseline on the held-out groups: kNN-200 {:.3} P@1 {:.3} MAP@R {:.3}",
            base.knn200_acc,
            base.precision_at_1,
            base.map_at_r
        );
        cellspace_core::atomic::write_json(&run_dir.join(BASELINE_FILE), &base)?;
    }
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .init();
    if opts.resume {
        let p = run_dir.join(CHECKPOINT_DIR).join(OPTIM_FILE);
        optim = optim.load(&p).map_err(|e| record_err(&p, e))?;
    }
    let mut run = crate::epoch::Run::new(cfg, data.clone(), &split, run_dir, opts, ad);
    let started = Instant::now();
    let (mut images_trained, mut interrupted) = (0usize, false);
    let mut colour_cache = ColourCache::default(); // one split for the whole run
    while state.epoch < cfg.epochs && !state.finished {
        let (next, done) = run.train_epoch(model, &mut optim, &mut state)?;
        model = next;
        images_trained += done.images;
        if done.interrupted {
            interrupted = true;
            save_checkpoint(run_dir, &model, &optim, &state)?;
            log::info!("checkpoint written; continue with --resume");
            break;
        }
        run.finish_epoch(&model, &mut state, &done, &mut colour_cache)?;
        save_checkpoint(run_dir, &model, &optim, &state)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if !interrupted {
        write_pictures(run_dir, &data, &split, &cfg.preprocess(), cfg.seed)?;
    }
    Ok(FitSummary {
        run_dir: run_dir.to_path_buf(),
        backend: crate::device::backend_name(device),
        epochs_done: state.epoch,
        interrupted,
        served: load_served_info(run_dir).ok(),
        train_images: split.train.len(),
        val_images: split.val.len(),
        seconds,
        images_per_s: images_trained as f64 / seconds.max(1e-9),
    })
}

/// Whether Ctrl-C asked the run to stop (checked after every batch).
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// One optimizer step on a batch; returns the updated model and the loss value. With a support
/// `queue` (NNCLR) the positives are its nearest rows, and the batch's first views join it.
pub fn train_step(
    model: Encoder,
    optim: &mut burn::optim::ModuleOptimizer,
    batch: &Batch,
    cfg: &TrainConfig,
    lr: f64,
    device: &Device,
    queue: Option<&mut SupportQueue>,
) -> (Encoder, f32) {
    let output = cfg.loss.trains();
    let s = cfg.image_size as usize;
    let n = batch.n;
    let x1 = Tensor::<4>::from_data(TensorData::new(batch.view1.clone(), [n, 3, s, s]), device);
    let x2 = Tensor::<4>::from_data(TensorData::new(batch.view2.clone(), [n, 3, s, s]), device);
    let z = model.output(output, Tensor::cat(vec![x1, x2], 0)); // [2N, D]
    let z1 = z.clone().narrow(0, 0, n);
    let z2 = z.narrow(0, n, n);
    let objective = cfg.objective();
    let nn = queue
        .as_deref()
        .and_then(|q| Some((q.nearest(&z1)?, q.nearest(&z2)?)));
    let mut loss = match nn {
        // NNCLR: each view's nearest queued neighbour stands for it, against the other view
        Some((nn1, nn2)) => (objective.forward(nn1, z2.clone())
            + objective.forward(nn2, z1.clone()))
        .div_scalar(2.0),
        None => objective.forward(z1.clone(), z2.clone()),
    };
    if let Some(q) = queue {
        q.push(&z1);
    }
    if !batch.locals.is_empty() {
        // multi-crop: every local view against both global ones, never two local ones
        // against each other (SwAV, DINO); the mean over the 1 + 2K pairs
        let (k, l) = (batch.locals.len(), batch.local_size);
        let xl = TensorData::new(batch.locals.concat(), [k * n, 3, l, l]);
        let zl = model.output(output, Tensor::<4>::from_data(xl, device)); // [KN, D]
        for j in 0..k {
            let lj = zl.clone().narrow(0, j * n, n);
            loss = loss
                + objective.forward(z1.clone(), lj.clone())
                + objective.forward(z2.clone(), lj);
        }
        loss = loss.div_scalar((1 + 2 * k) as f32);
    }
    let value = loss.clone().into_scalar::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

/// A fresh encoder for a run: its weights drawn on flex from the run's seed, in parameter
/// order, whatever the training device, then moved there. One seed gives one initial model on
/// every backend (each backend has its own random generator, and burn draws a parameter when
/// it is first read, which would otherwise follow the first forward pass).
pub fn fresh_encoder(cfg: &TrainConfig, device: &Device) -> Encoder {
    struct Draw;
    impl burn::module::ModuleVisitor for Draw {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    let flex = Device::flex();
    flex.seed(cfg.seed);
    let flex = flex.autodiff();
    let model = cfg.encoder.init(&flex);
    model.visit(&mut Draw);
    if *device == flex {
        model
    } else {
        model.fork(device)
    }
}

/// Cosine decay from `base` to 0 over `total` steps, after a short linear warm-up.
pub fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    let warm = (total / 20).max(1);
    if step < warm {
        return base * (step + 1) as f64 / warm as f64;
    }
    let t = (step - warm) as f64 / (total - warm).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}
