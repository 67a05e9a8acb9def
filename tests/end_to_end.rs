//! The product end to end on real images: a short self-supervised fit, ONNX export (checked
//! against burn through onnxruntime), `runtime embed`, `index build` and `index query`, through
//! the library APIs and through the command-line tools.

mod util;

use burn::prelude::*;
use std::path::Path;
use std::process::Command;

/// Short fit on a few dozen real images, exported; returns (run dir, card path).
fn fit_and_export(work: &Path, data: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use trainer::model::EncoderConfig;
    use trainer::train::{FitOptions, TrainConfig, fit};
    let cfg = TrainConfig::new(
        EncoderConfig::new()
            .with_widths([8, 16, 32, 32])
            .with_dim(32)
            .with_head_dim(32),
        trainer::augment::AugmentConfig::new(),
    )
    .with_image_size(32)
    .with_batch_size(16)
    .with_epochs(4)
    .with_val_gallery_max(200)
    // the in-graph colour branch is exported too, so parity covers it
    .with_colour_weight(0.5);
    let run = work.join("run");
    let summary = fit(&cfg, data, &run, &Device::flex(), &FitOptions::default()).unwrap();
    let card = trainer::export::export_run(
        &run,
        &work.join("models/e2e"),
        Some(&summary),
        &Default::default(),
    )
    .unwrap();
    (run, card)
}

#[test]
fn library_path_fit_export_embed_index_query() {
    let Some(train) = util::real_data("library_path_fit_export_embed_index_query") else {
        return;
    };
    let data = util::real_subset(&train, 12, 3);
    let work = util::tempdir();
    let (run, card) = fit_and_export(work.path(), data.path());

    // export parity: onnxruntime and burn agree on real images
    let embedder = runtime::Embedder::new(
        &card,
        &runtime::EmbedOptions {
            device: runtime::Device::CPU,
            ..Default::default()
        },
    )
    .unwrap();
    // export --cv with a file that is not a cv report is refused by name (it once gave a card
    // whose estimate was all nulls), and writes nothing
    let not_cv = run.join("config.json");
    let err = trainer::export::export_run(
        &run,
        &work.path().join("models/bad"),
        None,
        &trainer::export::ExportOptions {
            cv: Some(not_cv.clone()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not a trainer cv report") && err.contains("config.json"),
        "{err}"
    );
    assert!(!work.path().join("models/bad.onnx").exists());
    let (model, cfg, best) = trainer::train::load_served_model(&run, &Device::flex()).unwrap();
    let pre = cfg.preprocess();
    let (entries, _) = cellspace_core::dataset::list_images(data.path()).unwrap();
    let inputs: Vec<Vec<f32>> = entries
        .iter()
        .take(8)
        .map(|e| pre.prepare(&cellspace_core::preprocess::load_rgb(&e.path).unwrap()))
        .collect();
    let full = trainer::colour::RetrievalModel {
        colour: trainer::colour::ColourHistogram::new(&pre, &Device::flex()),
        encoder: model,
    };
    let burn_out = trainer::eval::embed_with(&inputs, pre.size, &Device::flex(), |x| {
        full.forward(x, best.output, best.colour_weight)
    });
    let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
    let ort_out = embedder.embed_prepared(&flat, inputs.len()).unwrap();
    let max_diff = burn_out
        .iter()
        .zip(&ort_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(burn_out.len(), ort_out.len());
    assert!(max_diff <= 1e-4, "max |ort - burn| = {max_diff}");
    println!(
        "export parity: max |ort - burn| = {max_diff:e} over {} real images (colour weight {})",
        inputs.len(),
        best.colour_weight
    );

    // embed, index, query
    let out = work.path().join("emb");
    let (summary, failures) =
        runtime::folder::embed_dir(&embedder, data.path(), &out, &()).unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(summary.embedded, 48);
    // the real source groups, so that queries can skip their own original's copies
    let groups = cellspace_core::dataset::SourceGroups::find(&train).unwrap();
    let index = index::ops::build_from_embeddings(
        &out,
        &index::embed::model_ref(&embedder),
        index::IndexParams::default(),
        index::ops::EmbeddingsSource {
            groups: groups.as_ref(),
            ..Default::default()
        },
    )
    .unwrap();
    index.save(&work.path().join("cells.index")).unwrap();
    let (index, embedder) =
        index::embed::open_with_model(&work.path().join("cells.index"), None, &Default::default())
            .unwrap();
    let queries: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
    let results = index::embed::query(&index, &embedder, &queries, 5, None, &Default::default());
    let mut same_class = 0usize;
    let mut total = 0usize;
    for (r, e) in results.iter().zip(&entries) {
        assert!(r.error.is_none(), "{:?}", r.error);
        let top = &r.neighbours[0];
        assert!(
            top.similarity > 0.9999 && top.path.ends_with(&e.rel),
            "an indexed image finds itself first: {r:?}"
        );
        for h in &r.neighbours[1..] {
            total += 1;
            same_class += (h.class == e.class) as usize;
        }
    }
    let rate = same_class as f64 / total as f64;
    println!("neighbours of the same class: {rate:.3} (chance 0.25)");
    assert!(rate > 0.3, "neighbours' classes beat chance: {rate}");

    // other cells, not copies of the query's own: no hit from its source group, one per group
    if groups.is_some() {
        let filter = index::ops::QueryFilter {
            exclude_self: true,
            distinct: true,
            ..Default::default()
        };
        let results = index::embed::query(&index, &embedder, &queries, 5, None, &filter);
        for (r, e) in results.iter().zip(&entries) {
            let own = index
                .rows()
                .iter()
                .find(|row| row.path.ends_with(&e.rel))
                .and_then(|row| row.group.clone())
                .expect("rows carry their source group");
            let hit_groups: Vec<&str> = r
                .neighbours
                .iter()
                .map(|h| h.group.as_deref().unwrap())
                .collect();
            assert!(!hit_groups.contains(&own.as_str()), "{own}: {hit_groups:?}");
            let mut uniq = hit_groups.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(
                uniq.len(),
                hit_groups.len(),
                "one hit per original: {hit_groups:?}"
            );
        }
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn command_line_path_fit_export_embed_index_query() {
    let Some(train) = util::real_data("command_line_path_fit_export_embed_index_query") else {
        return;
    };
    let data = util::real_subset(&train, 10, 5);
    let work = util::tempdir();
    let w = work.path();
    let model = w.join("models/cli");
    run_ok(
        Command::new(util::bin("trainer"))
            .args([
                "fit",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--image-size",
                "32",
                "--loss",
                "triplet",
            ])
            .arg("--data")
            .arg(data.path())
            .arg("--out")
            .arg(w.join("run"))
            .arg("--export")
            .arg(&model),
    );
    assert!(model.with_extension("onnx").is_file() && model.with_extension("json").is_file());
    let card = model.with_extension("json");
    let emb = w.join("emb");
    let text = run_ok(
        Command::new(util::bin("runtime"))
            .arg("embed")
            .arg(data.path())
            .arg("-o")
            .arg(&emb)
            .arg("--model")
            .arg(&card),
    );
    assert!(text.contains("embedded 40"), "{text}");
    // every manifest row records the window around the white cell that was embedded
    // (the card's red-cell diameters, ~2.33; at the training data's magnification ~112 px of a
    // 320x240 field, except where one field's measurement is off beyond the scale band)
    let card_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card).unwrap()).unwrap();
    let k = card_json["preprocess"]["resize"]["cell-window"]["window_rbc"]
        .as_f64()
        .expect("the window is in red-cell diameters");
    let manifest = std::fs::read_to_string(emb.join("manifest.jsonl")).unwrap();
    let mut at_training_scale = 0;
    let rows: Vec<&str> = manifest.lines().collect();
    for line in &rows {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let side = row["window"]["side"].as_u64().unwrap_or(0) as f64;
        if let Some(d) = row["window"]["rbc_px"].as_f64() {
            assert!(
                (side - k * d).abs() <= 2.0,
                "{k} red-cell diameters: {line}"
            );
        }
        at_training_scale += (100.0..=124.0).contains(&side) as usize;
    }
    assert!(
        at_training_scale * 10 >= rows.len() * 8,
        "{at_training_scale} of {} windows ~112 px:\n{manifest}",
        rows.len()
    );
    let card_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card).unwrap()).unwrap();
    assert!(
        card_json["preprocess"]["resize"]["cell-window"].is_object(),
        "the card carries the localisation rule: {}",
        card_json["preprocess"]
    );
    let idx = w.join("cells.index");
    run_ok(
        Command::new(util::bin("index"))
            .arg("build")
            .arg(&emb)
            .arg("--model")
            .arg(&card)
            .arg("-o")
            .arg(&idx),
    );
    let (entries, _) = cellspace_core::dataset::list_images(data.path()).unwrap();
    let q = &entries[7];
    let json = run_ok(
        Command::new(util::bin("index"))
            .arg("query")
            .arg(&q.path)
            .arg("-i")
            .arg(&idx)
            .args(["-k", "3", "--json"]),
    );
    let start = json.find('[').unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&json[start..json.rfind(']').unwrap() + 1]).unwrap();
    let first = &v[0]["neighbours"][0];
    assert!(first["path"].as_str().unwrap().ends_with(&q.rel), "{v}");
    assert_eq!(first["class"].as_str(), q.class.as_deref());
    let excl = run_ok(
        Command::new(util::bin("index"))
            .arg("query")
            .arg(&q.path)
            .arg("-i")
            .arg(&idx)
            .args(["-k", "3", "--exclude-self"]),
    );
    assert!(!excl.lines().skip(1).any(|l| l.ends_with(&q.rel)), "{excl}");
    let stats = run_ok(
        Command::new(util::bin("index"))
            .arg("stats")
            .arg("-i")
            .arg(&idx),
    );
    assert!(stats.contains("\"count\": 40"), "{stats}");
    // a different model is refused
    let other = w.join("other.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(util::tiny_model()).unwrap()).unwrap();
    c["onnx_file"] = serde_json::json!(util::fixture("tiny.onnx").display().to_string());
    std::fs::write(&other, c.to_string()).unwrap();
    let refused = Command::new(util::bin("index"))
        .arg("query")
        .arg(&q.path)
        .arg("-i")
        .arg(&idx)
        .arg("--model")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("built with model cli"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn one_exit_code_policy_across_the_three_tools() {
    let dir = util::tempdir();
    for tool in ["trainer", "runtime", "index"] {
        let code = |args: &[&str]| {
            Command::new(util::bin(tool))
                .args(args)
                .output()
                .unwrap()
                .status
                .code()
        };
        assert_eq!(code(&["--help"]), Some(0), "{tool} --help");
        assert_eq!(code(&["--no-such-flag"]), Some(64), "{tool}: a usage error");
        assert_eq!(
            code(&["no-such-command"]),
            Some(64),
            "{tool}: a usage error"
        );
    }
    // an error: nothing done, 1
    let missing = dir.path().join("nowhere");
    let out = Command::new(util::bin("index"))
        .args(["stats", "-i"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no index here"));
    // nothing could be embedded: 1; results to a file with -o
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(bad.join("A")).unwrap();
    std::fs::write(bad.join("A/x.png"), b"not an image").unwrap();
    let out = Command::new(util::bin("runtime"))
        .args(["embed", "--model"])
        .arg(util::tiny_model())
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    util::write_cell(&bad.join("A/ok.png"), 3);
    let result = dir.path().join("one.json");
    let out = Command::new(util::bin("runtime"))
        .args(["embed-one", "--model"])
        .arg(util::tiny_model())
        .arg(bad.join("A/ok.png"))
        .arg("-o")
        .arg(&result)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "the result went to the file");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(v["embedding"].as_array().unwrap().len(), 8);
}

#[test]
fn gpu_check_stops_at_once_without_a_gpu() {
    let script = util::root().join("scripts/gpu-check.sh");
    let dir = util::tempdir();
    let run = |path: &Path| {
        Command::new("/bin/bash")
            .arg(&script)
            .env("PATH", path)
            .output()
            .unwrap()
    };
    // no driver at all
    let out = run(dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no NVIDIA GPU") && err.contains("nvidia-smi"),
        "{err}"
    );
    assert!(err.contains("Nothing was installed"), "{err}");
    // a driver tool that finds no device
    let smi = dir.path().join("nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\necho 'No devices were found'\nexit 6\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let out = run(Path::new(&path));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lists none") && err.contains("No devices were found"),
        "{err}"
    );
    assert!(!dir.path().join("runs").exists());
}
