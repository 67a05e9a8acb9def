//! The index as a lab's atlas: metadata from a sidecar, filtered search that returns k matching
//! cells, removal (tombstones), relabel and compact, one result per original cell, and source
//! groups found by near-duplicate detection when no groups file exists.

mod util;

use index::manifest::ModelRef;
use index::{CellIndex, Condition, Filter, HnswParams, IndexBuilder, Row};
use rand::{Rng, SeedableRng};
use std::process::Command;

const DIM: usize = 16;

/// `n` rows in `n / copies` groups of close vectors; class alternates A/B, slide is `S{i % 100}`.
fn atlas(n: usize, copies: usize) -> (CellIndex, Vec<f32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut v = Vec::with_capacity(n * DIM);
    let mut base = vec![0f32; DIM];
    for i in 0..n {
        if i % copies == 0 {
            base = (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect();
        }
        let mut row: Vec<f32> = base
            .iter()
            .map(|b| b + 0.05 * (rng.random::<f32>() - 0.5))
            .collect();
        cellspace_core::l2_normalize(&mut row);
        v.extend(row);
    }
    let model = ModelRef {
        name: "synthetic".into(),
        card: "none.json".into(),
        onnx_sha256: "abc".into(),
        dim: DIM,
        preprocess_sha256: String::new(),
    };
    let mut b = IndexBuilder::new(model, HnswParams::default()).unwrap();
    for i in 0..n {
        let mut row = Row {
            path: format!("/cells/{i}.png"),
            class: Some(["A", "B"][i % 2].into()),
            sha256: format!("h{i}"),
            group: Some(format!("g{}", i / copies)),
            ..Default::default()
        };
        row.meta.insert("slide".into(), format!("S{}", i % 100));
        b.push(row, &v[i * DIM..(i + 1) * DIM]).unwrap();
    }
    (b.build(), v)
}

fn cond(s: &str) -> Condition {
    s.parse().unwrap()
}

#[test]
fn filtered_search_returns_k_matching_cells() {
    let (idx, v) = atlas(5000, 1);
    let mut recall = 0.0;
    for q in (0..5000).step_by(250) {
        let query = &v[q * DIM..(q + 1) * DIM];
        // half the index matches: the filter runs inside the graph walk
        let f = Filter::matching(vec![cond("class=B")]);
        let hits = idx.search(query, &f, 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.class.as_deref() == Some("B")));
        let exact: Vec<usize> = cellspace_core::metrics::topk(query, &v, DIM, 10, |i| i % 2 == 1)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        recall += hits.iter().filter(|h| exact.contains(&h.id)).count() as f64 / 10.0;
        // 1% of the index matches: exact search, the true top 10
        let f = Filter::matching(vec![cond("slide=S7"), cond("class=B")]);
        let hits = idx.search(query, &f, 10, None).unwrap();
        assert_eq!(hits.len(), 10, "50 rows match: k of them are returned");
        let exact: Vec<usize> = cellspace_core::metrics::topk(query, &v, DIM, 10, |i| i % 100 == 7)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), exact);
        assert!(hits.iter().all(|h| h.meta["slide"] == "S7"));
    }
    let recall = recall / 20.0;
    println!("recall@10 of the class-filtered graph search: {recall:.3}");
    assert!(recall > 0.9, "{recall}");
    // fewer matching rows than k: all of them; none: nothing
    let f = Filter::matching(vec![cond("path=/cells/3.png")]);
    assert_eq!(idx.search(&v[..DIM], &f, 10, None).unwrap().len(), 1);
    let f = Filter::matching(vec![cond("slide=S1000")]);
    assert!(idx.search(&v[..DIM], &f, 10, None).unwrap().is_empty());
}

#[test]
fn removed_cells_are_never_returned_and_compact_drops_them() {
    let dir = util::tempdir();
    let p = dir.path().join("cells.index");
    let (mut idx, v) = atlas(3000, 1);
    let query = &v[42 * DIM..43 * DIM];
    let before = idx.search(query, &Filter::default(), 20, None).unwrap();
    let gone: Vec<usize> = before[..5].iter().map(|h| h.id).collect();
    assert_eq!(idx.remove(&gone), 5);
    assert_eq!(idx.remove(&gone), 0, "removing twice counts once");
    idx.save(&p).unwrap();
    let idx = CellIndex::open(&p).unwrap();
    assert_eq!((idx.len(), idx.live(), idx.removed()), (3000, 2995, 5));
    let after = idx.search(query, &Filter::default(), 15, None).unwrap();
    assert_eq!(after.len(), 15);
    assert!(after.iter().all(|h| !gone.contains(&h.id)), "{after:?}");
    let ids = |h: &[index::Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before[5..]), "the next cells move up");
    assert!(idx.find_path(std::path::Path::new("/cells/3.png")).len() == 1);
    let removed_path = std::path::PathBuf::from(format!("/cells/{}.png", gone[0]));
    assert!(idx.find_path(&removed_path).is_empty());
    // relabel, then compact: row ids change, cells and results do not
    let mut idx = idx;
    assert_eq!(
        idx.relabel(after[0].id, "MONOCYTE").unwrap().as_deref(),
        Some(["A", "B"][after[0].id % 2])
    );
    assert!(
        idx.relabel(gone[0], "X").is_err(),
        "a removed cell cannot be relabelled"
    );
    let compact = idx.compact().unwrap();
    assert_eq!((compact.len(), compact.removed()), (2995, 0));
    let paths = |h: &[index::Hit]| h.iter().map(|h| h.path.clone()).collect::<Vec<_>>();
    let again = compact.search(query, &Filter::default(), 15, None).unwrap();
    assert_eq!(paths(&again), paths(&after));
    assert_eq!(again[0].class.as_deref(), Some("MONOCYTE"));
}

#[test]
fn distinct_returns_one_cell_per_original_and_never_the_query_own() {
    let (idx, v) = atlas(2000, 20);
    let q = 205; // group g10
    let query = &v[q * DIM..(q + 1) * DIM];
    let plain = idx.search(query, &Filter::default(), 10, None).unwrap();
    assert!(
        plain.iter().all(|h| h.group.as_deref() == Some("g10")),
        "without distinct, copies of one cell fill the list: {plain:?}"
    );
    let mut f = Filter {
        distinct: true,
        ..Default::default()
    };
    f.exclude = (200..220).collect();
    let hits = idx.search(query, &f, 10, None).unwrap();
    assert_eq!(hits.len(), 10);
    let mut groups: Vec<_> = hits.iter().map(|h| h.group.clone().unwrap()).collect();
    assert!(!groups.contains(&"g10".to_string()));
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), 10, "one cell per original");
    // with a condition too, and more groups asked than exist among the matching rows
    f.conditions = vec![cond("slide=S5")]; // rows 5, 105, ..., 1905: 20 originals, g10 among them
    let hits = idx.search(query, &f, 50, None).unwrap();
    assert_eq!(
        hits.len(),
        19,
        "every matching original but the query's own"
    );
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn sidecar_where_remove_relabel_compact_from_the_command_line() {
    let dir = util::tempdir();
    let cells = util::cells_folder(dir.path(), 12, &["A", "B"]);
    // an exact copy under another name: the same original cell, found without a groups file
    std::fs::copy(cells.join("A/0.png"), cells.join("B/copy-of-0.png")).unwrap();
    let meta = dir.path().join("meta.csv");
    let mut csv = String::from("path,slide,patient\n");
    for i in 0..12 {
        let class = ["A", "B"][i % 2];
        csv.push_str(&format!("{class}/{i}.png,S{},\"P, {}\"\n", i % 3, i % 2));
    }
    csv.push_str("A/missing.png,S9,P\n");
    std::fs::write(&meta, csv).unwrap();
    let idx = dir.path().join("cells.index");
    let out = Command::new(util::bin("index"))
        .args(["build", "--images"])
        .arg(&cells)
        .arg("--model")
        .arg(util::tiny_model())
        .arg("--meta")
        .arg(&meta)
        .arg("-o")
        .arg(&idx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains("fields for 12 cells") && log.contains("A/missing.png"),
        "{log}"
    );
    assert!(log.contains("near-duplicates"), "groups estimated: {log}");
    let index = CellIndex::open(&idx).unwrap();
    let group = |name: &str| {
        index
            .rows()
            .iter()
            .find(|r| r.path.ends_with(name))
            .and_then(|r| r.group.clone())
            .unwrap()
    };
    assert_eq!(group("A/0.png"), group("B/copy-of-0.png"));
    let q = cells.join("A/4.png");
    let q = q.to_str().unwrap();
    // fields in the answers, and a filter on them
    let out = util::index_cmd(
        &idx,
        &["query", q, "-k", "20", "--where", "slide=S1", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = v[0]["neighbours"].as_array().unwrap();
    assert_eq!(hits.len(), 4, "the 4 cells of slide S1: {v}");
    assert!(hits.iter().all(|h| h["meta"]["slide"] == "S1"));
    let out = util::index_cmd(&idx, &["query", q, "-k", "3", "--where", "patient=P, 0"]);
    assert!(text(&out).contains("patient=P, 0"), "{}", text(&out));
    // --exclude-self leaves out the copy of the query's own cell
    let q0 = cells.join("A/0.png");
    let out = util::index_cmd(
        &idx,
        &[
            "query",
            q0.to_str().unwrap(),
            "-k",
            "20",
            "--exclude-self",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v[0]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .all(|p| !p.ends_with("/0.png") && !p.ends_with("copy-of-0.png")),
        "{names:?}"
    );
    // remove by path and by field; a path not indexed is reported, exit 2
    let gone = cells.join("B/1.png");
    let out = util::index_cmd(&idx, &["remove", gone.to_str().unwrap(), "nowhere.png"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("removed 1 cells") && text(&out).contains("not indexed: nowhere.png")
    );
    let out = util::index_cmd(&idx, &["remove", "--where", "slide=S2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed 4 cells"), "{}", text(&out));
    let out = util::index_cmd(&idx, &["query", q, "-k", "20", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = v[0]["neighbours"].as_array().unwrap();
    assert_eq!(hits.len(), 13 - 5);
    assert!(
        hits.iter().all(
            |h| h["meta"]["slide"] != "S2" && !h["path"].as_str().unwrap().ends_with("B/1.png")
        )
    );
    // relabel, compact
    let out = util::index_cmd(&idx, &["relabel", q, "MONOCYTE"]);
    assert!(text(&out).contains("A -> MONOCYTE"), "{}", text(&out));
    let out = util::index_cmd(&idx, &["compact"]);
    assert!(
        text(&out).contains("dropped 5 removed cells, 8 remain"),
        "{}",
        text(&out)
    );
    let index = CellIndex::open(&idx).unwrap();
    assert_eq!((index.len(), index.removed()), (8, 0));
    let row = index
        .rows()
        .iter()
        .find(|r| r.path.ends_with("A/4.png"))
        .unwrap();
    assert_eq!(row.class.as_deref(), Some("MONOCYTE"));
    assert_eq!(row.meta["patient"], "P, 0");
    // nothing matches: an error, the index unchanged
    let out = util::index_cmd(&idx, &["remove", "--where", "slide=S2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(CellIndex::open(&idx).unwrap().len(), 8);
}
