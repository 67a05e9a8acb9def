//! The index crate's promises: identical results after save/load, an indexed vector finds
//! itself first, k beyond the index size, the empty index, a truncated graph file, and a
//! model the index was not built with.

mod util;

use index::manifest::{GRAPH_BIN, ModelRef};
use index::{CellIndex, Filter, HnswParams, IndexBuilder, IndexParams, Row};
use rand::{Rng, SeedableRng};

fn model(dim: usize, sha: &str) -> ModelRef {
    ModelRef {
        name: "synthetic".into(),
        card: "none.json".into(),
        onnx_sha256: sha.into(),
        dim,
        preprocess_sha256: String::new(),
    }
}

fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>() - 0.5).collect();
    for r in v.chunks_mut(dim) {
        cellspace_core::l2_normalize(r);
    }
    v
}

fn build(n: usize, dim: usize) -> (CellIndex, Vec<f32>) {
    let v = vectors(n, dim, 1);
    let mut b = IndexBuilder::new(model(dim, "abc"), HnswParams::default()).unwrap();
    for i in 0..n {
        let row = Row {
            path: format!("/cells/{i}.png"),
            class: Some(["A", "B"][i % 2].into()),
            sha256: format!("h{i}"),
            ..Default::default()
        };
        b.push(row, &v[i * dim..(i + 1) * dim]).unwrap();
    }
    (b.build(), v)
}

#[test]
fn save_load_round_trip_gives_identical_results_and_self_first() {
    let dir = util::tempdir();
    let (idx, v) = build(500, 16);
    idx.save(&dir.path().join("i")).unwrap();
    let loaded = CellIndex::open(&dir.path().join("i")).unwrap();
    assert_eq!(loaded.len(), 500);
    for q in [0usize, 17, 499] {
        let query = &v[q * 16..(q + 1) * 16];
        let a = idx.search(query, &Filter::default(), 10, None).unwrap();
        let b = loaded.search(query, &Filter::default(), 10, None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].id, q, "an indexed vector finds itself first");
        assert!((a[0].similarity - 1.0).abs() < 1e-5);
        let mut own = Filter::default();
        own.exclude.insert(q);
        let skipped = loaded.search(query, &own, 3, None).unwrap();
        assert!(skipped.iter().all(|h| h.id != q) && skipped.len() == 3);
    }
}

#[test]
fn a_saved_manifest_still_opens_in_earlier_builds() {
    let dir = util::tempdir();
    let (idx, _) = build(20, 8);
    idx.save(&dir.path().join("i")).unwrap();
    let text = std::fs::read_to_string(dir.path().join("i/manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    // the params as builds before this one read them: these four required, no defaults
    for key in ["m", "ef_construction", "max_layer", "ef_search"] {
        assert!(
            manifest["params"][key].is_u64(),
            "an earlier build cannot read {} (no {key})",
            manifest["params"]
        );
    }
}

#[test]
fn k_larger_than_index_returns_everything() {
    let (idx, v) = build(7, 8);
    let hits = idx.search(&v[..8], &Filter::default(), 50, None).unwrap();
    assert_eq!(hits.len(), 7);
    assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
}

#[test]
fn empty_index_saves_loads_and_answers_nothing() {
    let dir = util::tempdir();
    let idx = IndexBuilder::new(model(8, "abc"), HnswParams::default())
        .unwrap()
        .build();
    idx.save(&dir.path().join("e")).unwrap();
    let loaded = CellIndex::open(&dir.path().join("e")).unwrap();
    assert!(loaded.is_empty());
    assert!(
        loaded
            .search(&[0.5; 8], &Filter::default(), 5, None)
            .unwrap()
            .is_empty()
    );
    // adding to an empty index works and persists
    let mut loaded = loaded;
    let v = vectors(3, 8, 2);
    let rows = (0..3)
        .map(|i| Row {
            path: format!("{i}"),
            class: None,
            sha256: format!("{i}"),
            ..Default::default()
        })
        .collect();
    loaded.add(rows, &v).unwrap();
    loaded.save(&dir.path().join("e")).unwrap();
    assert_eq!(CellIndex::open(&dir.path().join("e")).unwrap().len(), 3);
}

#[test]
fn truncated_graph_file_is_an_error_not_a_panic() {
    let dir = util::tempdir();
    let (idx, _) = build(100, 8);
    let p = dir.path().join("t");
    idx.save(&p).unwrap();
    let g = std::fs::read(p.join(GRAPH_BIN)).unwrap();
    std::fs::write(p.join(GRAPH_BIN), &g[..g.len() / 2]).unwrap();
    let err = CellIndex::open(&p)
        .err()
        .expect("truncated graph refused")
        .to_string();
    assert!(
        err.contains(GRAPH_BIN) && err.contains("does not match"),
        "{err}"
    );
    // the same truncation with its checksum rewritten: the structure check refuses it
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap()).unwrap();
    manifest["files"][GRAPH_BIN] = serde_json::json!(cellspace_core::sha256_hex(&g[..g.len() / 2]));
    std::fs::write(p.join("manifest.json"), manifest.to_string()).unwrap();
    let err = CellIndex::open(&p).err().expect("refused").to_string();
    assert!(
        err.contains(GRAPH_BIN) && err.contains("truncated"),
        "{err}"
    );
    let missing = CellIndex::open(&dir.path().join("nowhere"))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("no index here"), "{missing}");
}

#[test]
fn failed_save_keeps_the_previous_index() {
    let dir = util::tempdir();
    let p = dir.path().join("keep");
    let (idx, _) = build(50, 8);
    idx.save(&p).unwrap();
    // a vector of the wrong dimension is refused before anything is written
    let mut b = IndexBuilder::new(model(8, "abc"), HnswParams::default()).unwrap();
    assert!(
        b.push(
            Row {
                path: "x".into(),
                class: None,
                sha256: "x".into(),
                ..Default::default()
            },
            &[1.0; 4]
        )
        .is_err()
    );
    assert_eq!(CellIndex::open(&p).unwrap().len(), 50);
}

#[test]
fn index_refuses_a_model_it_was_not_built_with() {
    let dir = util::tempdir();
    let mut b = IndexBuilder::new(model(8, "not-the-tiny-model"), HnswParams::default()).unwrap();
    b.push(
        Row {
            path: "x".into(),
            class: None,
            sha256: "x".into(),
            ..Default::default()
        },
        &vectors(1, 8, 3),
    )
    .unwrap();
    b.build().save(&dir.path().join("m")).unwrap();
    let opts = runtime::EmbedOptions {
        device: runtime::Device::CPU,
        ..Default::default()
    };
    let err =
        index::embed::open_with_model(&dir.path().join("m"), Some(&util::tiny_model()), &opts)
            .err()
            .unwrap()
            .to_string();
    assert!(
        err.contains("built with model synthetic") && err.contains("tiny"),
        "{err}"
    );
}

#[test]
fn index_refuses_the_same_onnx_with_other_preprocessing() {
    let dir = util::tempdir();
    let opts = runtime::EmbedOptions {
        device: runtime::Device::CPU,
        ..Default::default()
    };
    let embedder = runtime::Embedder::new(&util::tiny_model(), &opts).unwrap();
    let mut b =
        IndexBuilder::new(index::embed::model_ref(&embedder), HnswParams::default()).unwrap();
    b.push(
        Row {
            path: "x".into(),
            sha256: "x".into(),
            ..Default::default()
        },
        &vectors(1, embedder.dim(), 3),
    )
    .unwrap();
    b.build().save(&dir.path().join("m")).unwrap();
    // the same card opens it
    index::embed::open_with_model(&dir.path().join("m"), Some(&util::tiny_model()), &opts).unwrap();
    // the same ONNX file with another window rule or normalisation does not
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(util::tiny_model()).unwrap()).unwrap();
    card["onnx_file"] = serde_json::json!(util::fixture("tiny.onnx").display().to_string());
    card["preprocess"]["mean"] = serde_json::json!([0.5, 0.5, 0.5]);
    let other = dir.path().join("other.json");
    std::fs::write(&other, card.to_string()).unwrap();
    let err = index::embed::open_with_model(&dir.path().join("m"), Some(&other), &opts)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("another preprocessing"), "{err}");
}

fn embed_synthetic(dir: &std::path::Path, n: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let cells = util::cells_folder(dir, n, &["A", "B"]);
    let out = dir.join("cells.embeddings");
    let e = runtime::Embedder::new(
        &util::tiny_model(),
        &runtime::EmbedOptions {
            device: runtime::Device::CPU,
            ..Default::default()
        },
    )
    .unwrap();
    runtime::folder::embed_dir(&e, &cells, &out, &()).unwrap();
    (cells, out)
}

#[test]
fn build_refuses_an_interrupted_embed_folder_unless_asked() {
    let dir = util::tempdir();
    let (_, emb) = embed_synthetic(dir.path(), 6);
    let state = emb.join("embed.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    s["complete"] = serde_json::json!(false);
    std::fs::write(&state, s.to_string()).unwrap();
    let e = runtime::Embedder::new(&util::tiny_model(), &Default::default()).unwrap();
    let err = index::ops::build_from_embeddings(
        &emb,
        &index::embed::model_ref(&e),
        IndexParams::default(),
        Default::default(),
    )
    .err()
    .expect("an interrupted embed is refused")
    .to_string();
    assert!(
        err.contains("interrupted") && err.contains("--allow-incomplete"),
        "{err}"
    );
    let source = index::ops::EmbeddingsSource {
        allow_incomplete: true,
        ..Default::default()
    };
    let idx = index::ops::build_from_embeddings(
        &emb,
        &index::embed::model_ref(&e),
        IndexParams::default(),
        source,
    )
    .unwrap();
    assert_eq!(idx.len(), 6);
}

/// `index build -o` given a folder that is not an index (the images, the embeddings) deleted
/// it: a save swaps its output out and removes it. Now such an output is refused before the
/// build, and everything in it stays.
#[test]
fn build_refuses_an_output_that_is_not_an_index_and_deletes_nothing() {
    let dir = util::tempdir();
    let (cells, emb) = embed_synthetic(dir.path(), 4);
    fn files_under(d: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut all: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flat_map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { files_under(&p) } else { vec![p] }
            })
            .collect();
        all.sort();
        all
    }
    let before = files_under(&cells);
    assert!(!before.is_empty());
    let index_build = |out: &std::path::Path| {
        std::process::Command::new(util::bin("index"))
            .arg("build")
            .arg(&emb)
            .arg("--model")
            .arg(util::tiny_model())
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };
    for out in [&cells, &emb] {
        let run = index_build(out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{stderr}");
        assert!(
            stderr.contains(&out.display().to_string()) && stderr.contains("not an index"),
            "{stderr}"
        );
    }
    assert_eq!(files_under(&cells), before, "the images are all there");
    assert!(emb.join("embed.json").is_file(), "the embeddings are there");
    // a file as the output, through the library: refused, kept
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let (idx, _) = build(4, 8);
    let err = idx.save(&file).unwrap_err().to_string();
    assert!(err.contains("is a file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    // an index and an empty folder are still replaced
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    idx.save(&empty).unwrap();
    idx.save(&empty).unwrap();
    assert_eq!(CellIndex::open(&empty).unwrap().len(), 4);
}

#[test]
fn add_images_reports_bad_files_and_exits_2() {
    let dir = util::tempdir();
    let (_, emb) = embed_synthetic(dir.path(), 4);
    let idx = dir.path().join("cells.index");
    let status = std::process::Command::new(util::bin("index"))
        .arg("build")
        .arg(&emb)
        .arg("--model")
        .arg(util::tiny_model())
        .arg("-o")
        .arg(&idx)
        .status()
        .unwrap();
    assert!(status.success());
    let more = dir.path().join("more");
    util::write_cell(&more.join("A/ok.png"), 11);
    std::fs::write(more.join("A/broken.png"), b"\x89PNG not really").unwrap();
    let out = std::process::Command::new(util::bin("index"))
        .arg("add")
        .arg("--images")
        .arg(&more)
        .arg("-i")
        .arg(&idx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("broken.png"),
        "the bad file is named: {stderr}"
    );
    assert!(stderr.contains("added 1 cells"), "{stderr}");
}

#[test]
fn graph_of_another_index_is_a_clean_error_not_a_panic() {
    let dir = util::tempdir();
    let (a, _) = build(60, 8);
    let (b, _) = build(40, 8);
    let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
    a.save(&pa).unwrap();
    b.save(&pb).unwrap();
    // b's graph file in a, with a's manifest rewritten to its checksum
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pa.join("manifest.json")).unwrap()).unwrap();
    std::fs::copy(pb.join(GRAPH_BIN), pa.join(GRAPH_BIN)).unwrap();
    let bytes = std::fs::read(pa.join(GRAPH_BIN)).unwrap();
    manifest["files"][GRAPH_BIN] = serde_json::json!(cellspace_core::sha256_hex(&bytes));
    std::fs::write(pa.join("manifest.json"), manifest.to_string()).unwrap();
    let err = CellIndex::open(&pa).err().expect("refused").to_string();
    assert!(err.contains("40 nodes") && err.contains("60 rows"), "{err}");
}

#[test]
fn an_index_being_written_is_locked() {
    let dir = util::tempdir();
    let idx = dir.path().join("cells.index");
    let _held = index::ops::lock(&idx).unwrap();
    let err = index::ops::lock(&idx).expect_err("locked").to_string();
    assert!(
        err.contains("another run") && err.contains("cells.index"),
        "{err}"
    );
}

#[test]
fn a_save_killed_between_its_renames_is_recovered_on_open() {
    let dir = util::tempdir();
    let p = dir.path().join("cells.index");
    let (idx, _) = build(30, 8);
    idx.save(&p).unwrap();
    // what a kill after the first rename of the next save leaves behind
    std::fs::rename(&p, dir.path().join(".cells.index.old-4242")).unwrap();
    let back = CellIndex::open(&p).expect("recovered");
    assert_eq!(back.len(), 30);
    assert!(p.is_dir(), "the index is back in place");
}

#[test]
fn a_format_2_index_of_hnsw_rs_still_opens_and_answers_the_same() {
    use hnsw_rs::prelude::{AnnT, Hnsw};
    let dir = util::tempdir();
    let p = dir.path().join("old");
    let (idx, v) = build(300, 8);
    // what format 2 wrote: hnsw_rs's two files beside rows, vectors and the manifest
    idx.save(&p).unwrap();
    let g: Hnsw<f32, index::legacy_hnsw::CosineDistance> =
        Hnsw::new(16, 300, 16, 200, index::legacy_hnsw::CosineDistance);
    let items: Vec<(&[f32], usize)> = v.chunks_exact(8).zip(0..).collect();
    g.parallel_insert_slice(&items);
    g.file_dump(&p, "cells").unwrap();
    std::fs::remove_file(p.join(GRAPH_BIN)).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap()).unwrap();
    manifest["format_version"] = 2.into();
    // format 2 carried hnsw_rs's `max_layer` (this build writes it only for older builds)
    manifest["params"]["max_layer"] = 16.into();
    let files = manifest["files"].as_object_mut().unwrap();
    files.remove(GRAPH_BIN);
    for f in ["cells.hnsw.graph", "cells.hnsw.data"] {
        let bytes = std::fs::read(p.join(f)).unwrap();
        files.insert(f.into(), cellspace_core::sha256_hex(&bytes).into());
    }
    std::fs::write(p.join("manifest.json"), manifest.to_string()).unwrap();
    let old = CellIndex::open(&p).expect("format 2 opens");
    let mut agree = 0;
    for q in (0..300).step_by(30) {
        let query = &v[q * 8..(q + 1) * 8];
        let a = old.search(query, &Filter::default(), 10, None).unwrap();
        assert_eq!(a[0].id, q, "an indexed vector finds itself first");
        let exact: Vec<usize> = old
            .scan_top(query, 10)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        agree += a.iter().filter(|h| exact.contains(&h.id)).count();
    }
    assert!(agree >= 95, "recall@10 of the converted graph: {agree}/100");
    // saved again, it is format 3
    old.save(&p).unwrap();
    assert!(p.join(GRAPH_BIN).is_file() && !p.join("cells.hnsw.graph").exists());
    assert_eq!(CellIndex::open(&p).unwrap().len(), 300);
}

#[test]
fn the_graph_is_deterministic_whether_built_at_once_or_added_to() {
    let dir = util::tempdir();
    let (all, v) = build(500, 8);
    all.save(&dir.path().join("all")).unwrap();
    let mut b = IndexBuilder::new(model(8, "abc"), HnswParams::default()).unwrap();
    let row = |i: usize| Row {
        path: format!("/cells/{i}.png"),
        class: Some(["A", "B"][i % 2].into()),
        sha256: format!("h{i}"),
        ..Default::default()
    };
    for i in 0..300 {
        b.push(row(i), &v[i * 8..(i + 1) * 8]).unwrap();
    }
    let part = b.build();
    part.save(&dir.path().join("part")).unwrap();
    let mut part = CellIndex::open(&dir.path().join("part")).unwrap();
    part.add((300..500).map(row).collect(), &v[300 * 8..])
        .unwrap();
    part.save(&dir.path().join("part")).unwrap();
    let graph = |d: &str| std::fs::read(dir.path().join(d).join(GRAPH_BIN)).unwrap();
    assert!(graph("all") == graph("part"), "same rows, same graph");
}

#[test]
fn int8_store_answers_with_exact_similarities_after_save_add_and_compact() {
    let dir = util::tempdir();
    let dim = 32;
    let v = vectors(3000, dim, 9);
    let params = IndexParams::new(HnswParams::default(), index::store::StoreKind::Int8);
    let row = |i: usize| Row {
        path: format!("/cells/{i}.png"),
        sha256: format!("h{i}"),
        ..Default::default()
    };
    let mut b = IndexBuilder::new(model(dim, "abc"), params).unwrap();
    for i in 0..2500 {
        b.push(row(i), &v[i * dim..(i + 1) * dim]).unwrap();
    }
    let p = dir.path().join("i8");
    b.build().save(&p).unwrap();
    // the store kind sits beside the graph's parameters in one flat object, where every
    // earlier build reads it
    let text = std::fs::read_to_string(p.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        manifest["params"]["store"], "int8",
        "{}",
        manifest["params"]
    );
    assert!(manifest["params"]["m"].is_u64());
    let mut idx = CellIndex::open(&p).unwrap();
    assert!(idx.store().as_f32().is_none(), "only codes in memory");
    idx.add((2500..3000).map(row).collect(), &v[2500 * dim..])
        .unwrap();
    idx.save(&p).unwrap();
    let idx = CellIndex::open(&p).unwrap();
    let mut found = 0;
    for q in (0..3000).step_by(100) {
        let query = &v[q * dim..(q + 1) * dim];
        let hits = idx.search(query, &Filter::default(), 10, Some(64)).unwrap();
        let truth = cellspace_core::metrics::topk(query, &v, dim, 10, |_| true);
        assert_eq!(hits[0].id, q, "an indexed vector finds itself first");
        for h in &hits {
            let exact = cellspace_core::metrics::dot(query, &v[h.id * dim..(h.id + 1) * dim]);
            assert!(
                (h.similarity - exact).abs() < 1e-5,
                "re-ranked: exact similarities"
            );
        }
        found += hits
            .iter()
            .filter(|h| truth.iter().any(|t| t.0 == h.id))
            .count();
        // the exact scan of codes, re-ranked, is the truth
        let scanned = idx.scan_top(query, 10).unwrap();
        let ids = |v: &[(usize, f32)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(ids(&scanned), ids(&truth));
        assert!(
            scanned
                .iter()
                .zip(&truth)
                .all(|(a, b)| (a.1 - b.1).abs() < 1e-5)
        );
    }
    assert!(found >= 294, "recall@10 {found}/300");
    let compact = idx.compact().unwrap();
    assert_eq!(compact.params().store, index::store::StoreKind::Int8);
    // codes that do not match the index are refused
    let codes = p.join(index::manifest::CODES_FILE);
    let bytes = std::fs::read(&codes).unwrap();
    std::fs::write(&codes, &bytes[..bytes.len() - 1]).unwrap();
    let err = CellIndex::open(&p).err().expect("refused").to_string();
    assert!(err.contains("codes.i8"), "{err}");
}

/// Case 15 of the hardening round: `.NAME.tmp-PID` folders of killed saves were left behind
/// for ever (a full disk's worth, on a busy atlas).
#[test]
fn case_15_stale_folders_of_killed_saves_are_cleared_on_the_next_save() {
    let (idx, _) = build(20, 8);
    let dir = util::tempdir();
    let p = dir.path().join("atlas.index");
    idx.save(&p).unwrap();
    // PIDs above the kernel's limit (2^22) never run
    let stale_tmp = dir.path().join(".atlas.index.tmp-999999991");
    let stale_old = dir.path().join(".atlas.index.old-999999992");
    let other = dir.path().join(".other.index.tmp-999999993");
    for d in [&stale_tmp, &stale_old, &other] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("vectors.bin"), vec![0u8; 4096]).unwrap();
    }
    idx.save(&p).unwrap();
    assert!(
        !stale_tmp.exists(),
        "the killed save's half-written folder stays"
    );
    assert!(
        !stale_old.exists(),
        "the killed save's previous index stays"
    );
    assert!(
        other.exists(),
        "another index's folder is not this save's to remove"
    );
    assert!(CellIndex::open(&p).is_ok());
}

/// Case 8 of the hardening round: the int8 store re-ranked from `embeddings.npy` as it was
/// on disk at query time: replacing the file under a running server changed answers (200,
/// wrong class), zeroing it gave similarity 0.0, cutting it gave 500 while health said ok.
#[test]
fn case_08_the_int8_store_never_answers_from_a_changed_file() {
    let dir = util::tempdir();
    let dim = 16;
    let v = vectors(300, dim, 3);
    let params = IndexParams::new(HnswParams::default(), index::store::StoreKind::Int8);
    let mut b = IndexBuilder::new(model(dim, "abc"), params).unwrap();
    for i in 0..300 {
        let row = Row {
            path: format!("/cells/{i}.png"),
            sha256: format!("h{i}"),
            ..Default::default()
        };
        b.push(row, &v[i * dim..(i + 1) * dim]).unwrap();
    }
    let p = dir.path().join("i8");
    b.build().save(&p).unwrap();
    let idx = CellIndex::open(&p).unwrap();
    let q = &v[7 * dim..8 * dim];
    let hits = idx.search(q, &Filter::default(), 5, None).unwrap();
    assert_eq!(hits[0].id, 7);
    idx.store().check_disk().unwrap();
    // the rows zeroed in place, same size
    let npy = p.join("embeddings.npy");
    let len = std::fs::metadata(&npy).unwrap().len();
    let mut bytes = std::fs::read(&npy).unwrap();
    let data = 300 * dim * 4;
    let start = bytes.len() - data;
    bytes[start..].fill(0);
    std::fs::write(&npy, &bytes).unwrap();
    assert_eq!(std::fs::metadata(&npy).unwrap().len(), len);
    let err = idx
        .search(q, &Filter::default(), 5, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("changed") && err.contains("embeddings.npy"),
        "{err}"
    );
    // cut short: an error too, and the health check says so
    std::fs::OpenOptions::new()
        .write(true)
        .open(&npy)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(idx.search(q, &Filter::default(), 5, None).is_err());
    let err = idx.store().check_disk().unwrap_err().to_string();
    assert!(err.contains("changed"), "{err}");
}

/// Case 4 of the hardening round: with a `relabel` loop running, 209 of 7,527 `index stats`
/// failed with "rows.jsonl: content does not match the manifest … rebuild the index", and
/// once "no index here". A reader must get the index before an edit or after it.
#[test]
fn case_04_readers_see_the_old_or_the_new_index_never_a_mix() {
    let dir = util::tempdir();
    let p = dir.path().join("atlas.index");
    let (a, _) = build(400, 16);
    let (b, _) = build(150, 16);
    a.save(&p).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut opened, mut failed) = (0, Vec::new());
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    match CellIndex::open(&p) {
                        Ok(i) => {
                            assert!(i.len() == 400 || i.len() == 150, "{} rows", i.len());
                            opened += 1;
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (opened, failed)
            })
        })
        .collect();
    for k in 0..80 {
        if k % 2 == 0 { &b } else { &a }.save(&p).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for r in readers {
        let (opened, failed) = r.join().unwrap();
        total += opened;
        assert!(
            failed.is_empty(),
            "{} of {} opens failed: {:?}",
            failed.len(),
            opened + failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
    println!("{total} opens during 80 saves, none failed");
    assert!(total > 0);
}

/// Opening an index that is not there says so, and leaves nothing beside the mistyped path.
#[test]
fn opening_a_missing_index_writes_nothing_beside_it() {
    let dir = util::tempdir();
    let p = dir.path().join("typo.index");
    assert!(CellIndex::open(&p).is_err());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
}
