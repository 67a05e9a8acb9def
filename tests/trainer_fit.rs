//! The trainer on its own: bad input, the loss falling on real images, exact resumption.

mod util;

use burn::prelude::*;
use cellspace_core::preprocess::Preprocess;
use trainer::augment::AugmentConfig;
use trainer::data::{Batch, CellImages, EpochPlan, spawn_batches};
use trainer::loss::LossKind;
use trainer::model::EncoderConfig;
use trainer::support::SupportQueue;
use trainer::train::{ColourChoice, FitOptions, ScaleChoice, TrainConfig, fit, train_step};

/// burn's backend random generator is global to the process: tests that initialise models
/// take turns, or a parallel test's draws would change this one's "seeded" weights.
static BURN_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    BURN_RNG.lock().unwrap_or_else(|p| p.into_inner())
}

fn tiny_config(loss: LossKind) -> TrainConfig {
    let head = if loss == LossKind::Ntxent { 16 } else { 0 };
    TrainConfig::new(
        EncoderConfig::new()
            .with_widths([8, 16, 16, 32])
            .with_dim(16)
            .with_head_dim(head),
        AugmentConfig::new(),
    )
    .with_loss(loss)
    .with_image_size(16)
    .with_batch_size(8)
    .with_epochs(2)
    .with_val_fraction(0.25)
    .with_val_gallery_max(100)
    // synthetic cells have no red cells to standardise against or measure
    .with_colour(ColourChoice::None)
    .with_scale(ScaleChoice::Field)
}

fn synthetic_folder(n: u32) -> tempfile::TempDir {
    let dir = util::tempdir();
    for i in 0..n {
        let class = ["A", "B", "C", "D"][(i % 4) as usize];
        util::write_cell(&dir.path().join(class).join(format!("{i}.png")), i);
    }
    dir
}

#[test]
fn unreadable_image_is_reported_and_skipped_empty_folder_is_an_error() {
    let _turn = rng_lock();
    let dir = synthetic_folder(6);
    std::fs::write(dir.path().join("A/broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let data = CellImages::load(dir.path(), &Preprocess::blood_cells(16), 32, None, &()).unwrap();
    assert_eq!(data.len(), 6);
    assert_eq!(data.failed.len(), 1);
    assert!(
        data.failed[0].0.ends_with("broken.jpg"),
        "{:?}",
        data.failed
    );
    let empty = util::tempdir();
    let err = CellImages::load(empty.path(), &Preprocess::blood_cells(16), 32, None, &())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no images found") && err.contains(&empty.path().display().to_string()),
        "{err}"
    );
    let cfg = tiny_config(LossKind::Ntxent);
    let err = fit(
        &cfg,
        empty.path(),
        &empty.path().join("run"),
        &Device::flex(),
        &FitOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no images found"), "{err}");
}

/// A tiny NT-Xent configuration and eight synthetic cells loaded for it (in memory: the
/// folder is gone when this returns).
fn eight_synthetic_cells() -> (TrainConfig, std::sync::Arc<CellImages>) {
    let dir = synthetic_folder(8);
    let cfg = tiny_config(LossKind::Ntxent);
    let data = CellImages::load(dir.path(), &cfg.preprocess(), 32, None, &()).unwrap();
    (cfg, std::sync::Arc::new(data))
}

fn first_batch(data: std::sync::Arc<CellImages>, cfg: &TrainConfig) -> Batch {
    let plan = EpochPlan {
        order: (0..data.len()).collect(),
        batch_size: cfg.batch_size,
        start_batch: 0,
        aug: cfg.augment.clone(),
        pre: Preprocess::blood_cells(cfg.image_size),
        seed: 1,
        epoch: 0,
    };
    spawn_batches(data, plan).recv().unwrap()
}

#[test]
fn multi_crop_keeps_the_global_views_and_trains_on_the_local_ones() {
    let _turn = rng_lock();
    let (cfg, data) = eight_synthetic_cells();
    let two = first_batch(data.clone(), &cfg);
    let mut multi_cfg = cfg.clone();
    multi_cfg.augment = cfg
        .augment
        .clone()
        .with_local_views(Some(2))
        .with_local_size(Some(8));
    let multi = first_batch(data, &multi_cfg);
    assert!(two.locals.is_empty() && two.local_size == 0);
    // the local views are drawn after the global ones: those stay as they were
    assert_eq!(multi.view1, two.view1);
    assert_eq!(multi.view2, two.view2);
    assert_eq!(multi.local_size, 8);
    assert_eq!(multi.locals.len(), 2);
    assert!(multi.locals.iter().all(|l| l.len() == multi.n * 3 * 8 * 8));
    assert_ne!(multi.locals[0], multi.locals[1]);
    let device = Device::flex().autodiff();
    let step = |batch: &Batch| {
        device.seed(5);
        let model = cfg.encoder.init(&device);
        let mut optim = burn::optim::AdamWConfig::new().init();
        train_step(model, &mut optim, batch, &cfg, cfg.lr, &device, None).1
    };
    let (plain, with_locals) = (step(&two), step(&multi));
    assert!(with_locals.is_finite(), "{with_locals}");
    assert!(
        (plain - with_locals).abs() > 1e-4,
        "the local views must enter the loss: {plain} and {with_locals}"
    );
}

#[test]
fn nnclr_takes_its_positives_from_the_queue_and_queues_the_first_views() {
    let _turn = rng_lock();
    let (cfg, data) = eight_synthetic_cells();
    let batch = first_batch(data, &cfg);
    let device = Device::flex().autodiff();
    let step = |seed: u64, queue: Option<&mut SupportQueue>| {
        device.seed(seed);
        let model = cfg.encoder.init(&device);
        let mut optim = burn::optim::AdamWConfig::new().init();
        train_step(model, &mut optim, &batch, &cfg, cfg.lr, &device, queue).1
    };
    let mut queue = SupportQueue::new(3 * batch.n);
    // an empty queue: the plain two-view loss, and the batch's first views join the queue
    let first = step(5, Some(&mut queue));
    let again = step(5, None);
    assert!((first - again).abs() < 1e-6, "{first} and {again}");
    assert_eq!(queue.len(), batch.n);
    // what joined is the first views' embeddings: each is its own nearest queued row
    let (z1, z2) = {
        device.seed(5);
        let model = cfg.encoder.init(&device);
        let (n, s) = (batch.n, cfg.image_size as usize);
        let x =
            |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [n, 3, s, s]), &device);
        let z = model.output(
            cfg.loss.trains(),
            Tensor::cat(vec![x(&batch.view1), x(&batch.view2)], 0),
        );
        (z.clone().narrow(0, 0, n), z.narrow(0, n, n))
    };
    let off = |z: Tensor<2>| -> f32 {
        let nn = queue.nearest(&z).unwrap();
        (nn - z.detach()).abs().max().into_scalar::<f32>()
    };
    assert!(off(z1) < 1e-4, "the queue must hold the first views");
    assert!(off(z2) > 1e-3, "the second views are not queued");
    // another model's embeddings queued: its positives are those, so its loss is not the plain one
    let plain = step(6, None);
    let nn = step(6, Some(&mut queue));
    assert!(nn.is_finite(), "{nn}");
    assert!(
        (nn - plain).abs() > 1e-4,
        "the queued neighbours must be the positives: {plain} and {nn}"
    );
    assert_eq!(queue.len(), 2 * batch.n);
}

#[test]
fn loss_falls_on_a_few_dozen_real_images_with_both_losses() {
    let _turn = rng_lock();
    let Some(train) = util::real_data("loss_falls_on_a_few_dozen_real_images_with_both_losses")
    else {
        return;
    };
    let subset = util::real_subset(&train, 8, 0);
    for loss in [LossKind::Ntxent, LossKind::Triplet] {
        let cfg = tiny_config(loss)
            .with_image_size(32)
            .with_batch_size(32)
            .with_lr(3e-3);
        let data = std::sync::Arc::new(
            CellImages::load(subset.path(), &cfg.preprocess(), 64, None, &()).unwrap(),
        );
        assert_eq!(data.len(), 32);
        let batch = first_batch(data, &cfg);
        let device = Device::flex().autodiff();
        device.seed(3);
        let mut model = cfg.encoder.init(&device);
        let mut optim = burn::optim::AdamWConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..12 {
            let (m, l) = train_step(model, &mut optim, &batch, &cfg, cfg.lr, &device, None);
            model = m;
            losses.push(l);
        }
        let (first, last) = (
            losses[..3].iter().sum::<f32>() / 3.0,
            losses[9..].iter().sum::<f32>() / 3.0,
        );
        assert!(last < 0.8 * first, "{loss:?}: loss should fall: {losses:?}");
    }
}

fn metrics_losses(run: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn interrupted_run_resumes_exactly() {
    resumes_exactly_on(&Device::flex(), "flex");
}

/// A run stopped after two steps and resumed ends with the losses of an uninterrupted run.
fn resumes_exactly_on(device: &Device, backend: &str) {
    let _turn = rng_lock();
    let data = synthetic_folder(40);
    let cfg = tiny_config(LossKind::Triplet);
    let out = util::tempdir();
    let (a, b) = (out.path().join("a"), out.path().join("b"));
    let full = fit(&cfg, data.path(), &a, device, &FitOptions::default()).unwrap();
    assert_eq!(full.epochs_done, 2);
    let stopped = fit(
        &cfg,
        data.path(),
        &b,
        device,
        &FitOptions {
            stop_after_steps: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(stopped.interrupted);
    assert!(
        b.join("checkpoint/state.json").is_file(),
        "a usable checkpoint is left"
    );
    let err = fit(&cfg, data.path(), &b, device, &FitOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("--resume"),
        "an existing run is never overwritten: {err}"
    );
    let resumed = fit(
        &cfg,
        data.path(),
        &b,
        device,
        &FitOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.epochs_done, 2);
    assert_eq!(
        resumed.backend, backend,
        "the summary (and card) name the backend"
    );
    let (la, lb) = (metrics_losses(&a), metrics_losses(&b));
    assert_eq!(la.len(), 2);
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            (x - y).abs() < 1e-4,
            "resumed losses {lb:?} differ from uninterrupted {la:?}"
        );
    }
    for f in ["loss.png", "embedding-map.png", "served.bpk", "config.json"] {
        assert!(b.join(f).is_file(), "{f} written");
    }
}

/// What a caller's progress saw: each stage's name, length and the steps advanced.
#[derive(Default)]
struct Stages(std::sync::Mutex<Vec<(String, usize, usize)>>);

impl cellspace_core::progress::Progress for Stages {
    fn start(&self, stage: &str, total: usize, done: usize) {
        self.0
            .lock()
            .unwrap()
            .push((stage.to_string(), total, done));
    }
    fn advance(&self, n: usize) {
        if let Some(last) = self.0.lock().unwrap().last_mut() {
            last.2 += n;
        }
    }
}

/// `validate_every 2` over 3 epochs measures epochs 2 and 3 (the last), not epoch 1.
#[test]
fn validate_every_skips_epochs_but_measures_the_last() {
    let _turn = rng_lock();
    let data = synthetic_folder(40);
    let cfg = tiny_config(LossKind::Triplet).with_epochs(3);
    let out = util::tempdir();
    let seen = Stages::default();
    let opts = FitOptions {
        validate_every: 2,
        progress: &seen,
        ..Default::default()
    };
    let summary = fit(&cfg, data.path(), out.path(), &Device::flex(), &opts).unwrap();
    assert_eq!(summary.epochs_done, 3);
    // the library reports its stages to the caller's progress (it draws nothing itself):
    // the decoding of every image, then each epoch's batches, each stage counted in full
    let stages = seen.0.into_inner().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["decoding", "epoch 1/3", "epoch 2/3", "epoch 3/3"]);
    for (name, total, advanced) in &stages {
        assert!(
            *total > 0 && advanced == total,
            "{name}: {advanced} of {total}"
        );
    }
    let measured: Vec<bool> = std::fs::read_to_string(out.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| !serde_json::from_str::<serde_json::Value>(l).unwrap()["validation"].is_null())
        .collect();
    assert_eq!(measured, [false, true, true]);
    assert!(
        summary.served.and_then(|s| s.validation).is_some(),
        "the served (last) epoch carries its validation"
    );
}

#[test]
fn cross_validation_reports_every_fold_and_resumes() {
    let _turn = rng_lock();
    let data = synthetic_folder(48);
    let cfg = tiny_config(LossKind::Ntxent).with_epochs(1);
    let out = util::tempdir();
    let report =
        trainer::cv::cross_validate(&cfg, data.path(), out.path(), 3, &Device::flex(), 1, &())
            .unwrap()
            .expect("not interrupted");
    assert_eq!(report.fold_results.len(), 3);
    // every image is queried exactly once, by the fold that held out its (estimated) group
    let queries: usize = report.fold_results.iter().map(|f| f.query_images).sum();
    assert_eq!(queries, 48);
    for f in &report.fold_results {
        assert_eq!(f.train_images + f.query_images, 48);
        assert_eq!(
            f.validation.backbone.n_gallery, f.train_images,
            "all training cells searched"
        );
    }
    assert_eq!(report.served.knn200_per_fold.len(), 3);
    assert_eq!(report.histogram_baseline.knn200_per_fold.len(), 3);
    let m = &report.served.mean;
    assert!((0.0..=1.0).contains(&m.knn200_acc) && report.served.sd.knn200_acc >= 0.0);
    let table = trainer::cv::table(&report);
    assert!(
        table.contains("± ") && table.contains("(served)"),
        "{table}"
    );
    assert!(out.path().join("cv.json").is_file());
    // a second run reuses the finished folds: same figures, no training
    let again =
        trainer::cv::cross_validate(&cfg, data.path(), out.path(), 3, &Device::flex(), 1, &())
            .unwrap()
            .unwrap();
    assert_eq!(again.served.knn200_per_fold, report.served.knn200_per_fold);
    assert!(again.seconds < report.seconds);

    // the shift protocol on those folds, one view and eight, and the choice it makes
    use trainer::tta::TestTimeViews;
    let plan = trainer::robustness::RobustnessPlan {
        data_dir: data.path(),
        progress: &(),
        cv_dir: Some(out.path()),
        cfg: &cfg,
        folds: 3,
        shifts: cellspace_core::shift::parse("lamp:1.15,1,0.85;mag:2").unwrap(),
        per_group: 1,
        serve_stain_anchors: false,
        serve_anchor_trust: None,
        views: vec![TestTimeViews::None, TestTimeViews::Dihedral8],
        device: Device::flex(),
        oracle_scale: false,
    };
    let rob = trainer::robustness::robustness(&plan).unwrap();
    let shifts: Vec<&str> = rob.rows.iter().map(|r| r.shift.as_str()).collect();
    assert_eq!(shifts, ["clean", "lamp:1.15,1,0.85", "mag:2"]);
    for row in &rob.rows {
        for name in [
            "learned head",
            "learned head, 8 views",
            "learned backbone, 8 views",
        ] {
            let v = &row.learned[name];
            assert_eq!(
                v.len(),
                3,
                "{name} under {}: one figure per fold",
                row.shift
            );
            assert!(v.iter().all(|x| (0.0..=1.0).contains(x)), "{name}: {v:?}");
        }
        assert_eq!(row.histogram.len(), 3);
    }
    // the nested estimate scores each fold with the other folds' choice, from the report
    let choice = trainer::choice::choose_under_shift(&rob).unwrap();
    assert_eq!(choice.chosen_per_fold.len(), 3);
    for (k, name) in choice.chosen_per_fold.iter().enumerate() {
        assert_eq!(
            choice.clean_per_fold[k], rob.rows[0].learned[name][k],
            "fold {k}"
        );
    }
    assert!((0.0..=1.0).contains(&choice.worst) && choice.worst <= choice.shifts_mean + 1e-12);
}

#[test]
fn groups_estimate_finds_copies_on_real_images() {
    let Some(train) = util::real_data("groups_estimate_finds_copies_on_real_images") else {
        return;
    };
    // 60 real images and a flipped and a rotated copy of each; the reference is each source
    // image's group in source_groups.tsv (two of the 60 may be copies of one original)
    let groups = cellspace_core::dataset::SourceGroups::find(&train)
        .unwrap()
        .unwrap();
    let dir = util::tempdir();
    let subset = util::real_subset(&train, 15, 3);
    let mut truth = Vec::new();
    let mut n = 0;
    for class in ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"] {
        for e in std::fs::read_dir(subset.path().join(class)).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let source = groups
                .group_of(&format!("{class}/{name}"))
                .unwrap()
                .to_string();
            let img = image::open(&path).unwrap().to_rgb8();
            for (k, copy) in [
                img.clone(),
                image::imageops::flip_horizontal(&img),
                image::imageops::rotate180(&img),
            ]
            .iter()
            .enumerate()
            {
                let p = dir.path().join(class).join(format!("{n}_{k}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                copy.save(&p).unwrap();
                truth.push((format!("{class}/{n}_{k}.png"), source.clone()));
            }
            n += 1;
        }
    }
    let cellspace_core::duplicates::Estimate {
        images: entries,
        groups: ids,
        failed,
    } = cellspace_core::duplicates::estimate_groups(
        dir.path(),
        cellspace_core::duplicates::DEFAULT_THRESHOLD,
    )
    .unwrap();
    assert!(failed.is_empty());
    truth.sort();
    let reference: Vec<&str> = entries
        .iter()
        .map(|e| truth.iter().find(|(p, _)| *p == e.rel).unwrap().1.as_str())
        .collect();
    let (precision, recall) = cellspace_core::duplicates::pair_agreement(&ids, &reference);
    println!("groups of real copies: pairwise precision {precision:.3}, recall {recall:.3}");
    assert_eq!(recall, 1.0, "every copy found");
    assert!(precision > 0.9, "few distinct cells merged: {precision}");
}

/// The LibTorch backend (feature `libtorch`, vendored burn-tch with libtorch's own convolution,
/// batch-norm and relu backward kernels and channels-last convolutions) trains exactly as the
/// flex backend: same loss and same gradient for every parameter of the default encoder.
#[cfg(feature = "libtorch")]
#[test]
#[allow(deprecated)] // burn-tch is deprecated upstream; we vendor and patch it
fn libtorch_gradients_match_flex() {
    use burn::module::Module;
    use rand::{Rng, SeedableRng};
    let _turn = rng_lock();
    let flex = Device::flex().autodiff();
    let torch = Device::libtorch().autodiff();
    // the default encoder's layers (stride-2 stem, strided blocks, 1x1 shortcuts) at a small size
    let model = EncoderConfig::small().init(&flex);
    let dir = util::tempdir();
    let weights = dir.path().join("w.bpk");
    model.clone().save_file(&weights).unwrap();
    let copy = EncoderConfig::small()
        .init(&torch)
        .try_load_file(&weights)
        .unwrap();
    let (n, s) = (6, 32);
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let x: Vec<f32> = (0..n * 3 * s * s)
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let run = |m: &trainer::model::Encoder, device: &Device| {
        let x = Tensor::<4>::from_data(TensorData::new(x.clone(), [n, 3, s, s]), device);
        let z = m.output(trainer::model::EmbeddingOutput::Head, x);
        let loss = trainer::loss::nt_xent(z.clone().narrow(0, 0, 3), z.narrow(0, 3, 3), 0.2, 0.0);
        let grads = loss.backward();
        (loss.into_scalar::<f32>(), params::gradients(m, &grads))
    };
    let (la, ga) = run(&model, &flex);
    let (lb, gb) = run(&copy, &torch);
    // the training forward also updated batch norm's running statistics (what validation and
    // the served model use): the same on both (a second forward commits the first's update)
    let _ = (run(&model, &flex), run(&copy, &torch));
    let (va, vb) = (params::values(&model), params::values(&copy));
    assert_eq!(va.len(), vb.len());
    for (i, (a, b)) in va.iter().zip(&vb).enumerate() {
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff < 1e-4,
            "parameter or statistic {i}: max |flex - libtorch| {diff}"
        );
    }
    assert!((la - lb).abs() < 1e-4, "loss flex {la} libtorch {lb}");
    assert_eq!(ga.len(), gb.len(), "every parameter has a gradient on both");
    assert!(ga.len() > 20, "{} parameters with gradients", ga.len());
    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff / scale < 1e-3,
            "parameter {i}: max |flex - libtorch| {diff} of {scale}"
        );
    }
}

/// Asymmetric padding, which libtorch's convolution backward does not take, goes through the
/// patch's autograd path; its gradients match flex too.
#[cfg(feature = "libtorch")]
#[test]
#[allow(deprecated)]
fn libtorch_asymmetric_padding_gradients_match_flex() {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut draw = |k: usize| {
        (0..k)
            .map(|_| r.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    let (x, w) = (draw(2 * 3 * 7 * 7), draw(4 * 3 * 3 * 3));
    let run = |device: Device| {
        let x = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 7, 7]), &device)
            .require_grad();
        let w = Tensor::<4>::from_data(TensorData::new(w.clone(), [4, 3, 3, 3]), &device)
            .require_grad();
        let options = ConvOptions {
            stride: [2, 1],
            padding: [(0, 1), (2, 1)],
            dilation: [1, 1],
            groups: 1,
        };
        let y = conv2d(x.clone(), w.clone(), None, options);
        let loss = (y.clone() * y).sum();
        let g = loss.backward();
        let v = |t: Tensor<4>| t.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        (v(x), v(w))
    };
    let (a, b) = (
        run(Device::flex().autodiff()),
        run(Device::libtorch().autodiff()),
    );
    for (p, q) in [(&a.0, &b.0), (&a.1, &b.1)] {
        let diff = p.iter().zip(q).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff < 1e-3, "max |flex - libtorch| {diff}");
    }
}

/// Exact resumption holds on the LibTorch backend too.
#[cfg(feature = "libtorch")]
#[test]
fn libtorch_run_resumes_exactly() {
    #[allow(deprecated)]
    let device = Device::libtorch();
    resumes_exactly_on(&device, "libtorch");
}

/// A model trained on LibTorch (channels-last activations, libtorch's batch-norm statistics)
/// and saved computes the same embeddings when loaded on flex, where export and `cv` read it.
#[cfg(feature = "libtorch")]
#[test]
#[allow(deprecated)]
fn libtorch_trained_model_embeds_the_same_on_flex() {
    use burn::module::Module;
    use rand::{Rng, SeedableRng};
    let _turn = rng_lock();
    let torch: Device = Device::libtorch();
    let ad = torch.clone().autodiff();
    let cfg = tiny_config(LossKind::Ntxent).with_batch_size(6);
    let s = cfg.image_size as usize;
    let mut model = EncoderConfig::small().init(&ad);
    let mut optim = burn::optim::AdamWConfig::new().init();
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut draw = |k: usize| {
        (0..k)
            .map(|_| r.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        let batch = Batch {
            view1: draw(6 * 3 * s * s),
            view2: draw(6 * 3 * s * s),
            n: 6,
            index: 0,
            locals: Vec::new(),
            local_size: 0,
        };
        model = train_step(model, &mut optim, &batch, &cfg, 1e-2, &ad, None).0;
    }
    let dir = util::tempdir();
    let weights = dir.path().join("m.bpk");
    model.valid().save_file(&weights).unwrap();
    let x = draw(4 * 3 * s * s);
    let embed = |device: &Device| -> Vec<f32> {
        let m = EncoderConfig::small()
            .init(device)
            .try_load_file(&weights)
            .unwrap();
        let t = Tensor::<4>::from_data(TensorData::new(x.clone(), [4, 3, s, s]), device);
        m.output(trainer::model::EmbeddingOutput::Backbone, t)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let (a, b) = (embed(&torch), embed(&Device::flex()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff < 1e-4,
        "max |libtorch - flex| {diff} over the embeddings"
    );
}

/// One seed, one initial model on every backend: a run on LibTorch starts from the weights a
/// run on flex starts from (each backend has its own random generator).
#[cfg(feature = "libtorch")]
#[test]
#[allow(deprecated)]
fn libtorch_and_flex_runs_start_from_the_same_weights() {
    let _turn = rng_lock();
    let cfg = tiny_config(LossKind::Ntxent);
    let values = |device: Device| {
        let ad = device.autodiff();
        let m = trainer::train::fresh_encoder(&cfg, &ad);
        // a training step reads the weights first in the forward pass (flex draws them then)
        let s = cfg.image_size as usize;
        let x =
            Tensor::<4>::from_data(TensorData::new(vec![0.5; 2 * 3 * s * s], [2, 3, s, s]), &ad);
        let loss = m.output(trainer::model::EmbeddingOutput::Head, x).sum();
        // ...and every parameter is trained (moving them kept their gradients)
        let grads = loss.backward();
        let values: Vec<f32> = params::values(&m).concat();
        (values, params::gradients(&m, &grads).len())
    };
    let ((a, ga), (b, gb)) = (values(Device::flex()), values(Device::libtorch()));
    assert!(
        ga > 20 && ga == gb,
        "parameters with gradients: flex {ga}, libtorch {gb}"
    );
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().any(|x| *x != 0.0 && *x != 1.0),
        "weights were drawn"
    );
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} initial weights differ",
        a.len()
    );
}

/// A run stopped on flex resumes on LibTorch (checkpoints are backend-neutral) and finishes.
#[cfg(feature = "libtorch")]
#[test]
#[allow(deprecated)]
fn run_stopped_on_flex_resumes_on_libtorch() {
    let _turn = rng_lock();
    let data = synthetic_folder(40);
    let cfg = tiny_config(LossKind::Ntxent);
    let out = util::tempdir();
    let run = out.path().join("run");
    let stop = FitOptions {
        stop_after_steps: Some(2),
        ..Default::default()
    };
    assert!(
        fit(&cfg, data.path(), &run, &Device::flex(), &stop)
            .unwrap()
            .interrupted
    );
    let resume = FitOptions {
        resume: true,
        ..Default::default()
    };
    let done = fit(&cfg, data.path(), &run, &Device::libtorch(), &resume).unwrap();
    assert_eq!(done.epochs_done, 2);
    assert_eq!(done.backend, "libtorch");
    let losses = metrics_losses(&run);
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
}

/// Every float parameter (and running statistic) of a module, in parameter order, as plain
/// numbers: what the backend-parity tests compare.
#[cfg(feature = "libtorch")]
mod params {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::prelude::*;
    use burn::tensor::Gradients;

    struct Collect<'a>(Option<&'a Gradients>, Vec<Vec<f32>>);
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = match self.0 {
                None => Some(param.val()),
                Some(grads) => param.val().grad(grads),
            };
            if let Some(t) = t {
                self.1.push(t.into_data().try_to_vec::<f32>().unwrap());
            }
        }
    }

    /// Each parameter's values.
    pub fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
        let mut c = Collect(None, Vec::new());
        m.visit(&mut c);
        c.1
    }

    /// The gradient of each parameter that has one in `grads`.
    pub fn gradients<M: Module>(m: &M, grads: &Gradients) -> Vec<Vec<f32>> {
        let mut c = Collect(Some(grads), Vec::new());
        m.visit(&mut c);
        c.1
    }
}
