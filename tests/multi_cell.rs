//! Every white cell of a field, end to end on real BCCD fields with the shipped model:
//! `runtime embed --cells all` writes one row per cell with its number and box, `index build`
//! keeps them, and `index query` answers each cell of a field, indexed or not; a one-cell
//! image is one row and one answer, as before.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The BCCD fields folder, or None with an honest skip.
fn bccd_fields(test: &str) -> Option<PathBuf> {
    util::bccd(test).map(|d| d.join("fields"))
}

/// `runtime embed FOLDER --cells all -o EMB` with the shipped model; its output.
fn embed_all(folder: &Path, emb: &Path, model: &Path) -> std::process::Output {
    util::run_ok(
        Command::new(util::bin("runtime"))
            .arg("embed")
            .arg(folder)
            .args(["--cells", "all", "--json", "-o"])
            .arg(emb)
            .arg("--model")
            .arg(model),
    )
}

/// The white-cell boxes `[x0, y0, x1, y1]` of a BCCD field.
fn wbc_boxes(name: &str) -> Vec<[f32; 4]> {
    let text = std::fs::read_to_string(util::root().join("../shared/data/bccd/boxes.csv")).unwrap();
    text.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[0] == name && f[1] == "WBC")
        .map(|f| {
            let n = |i: usize| f[i].parse::<f32>().unwrap();
            [n(2), n(4), n(3), n(5)]
        })
        .collect()
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let i = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    i / (area(a) + area(b) - i)
}

fn cell_box(window: &serde_json::Value) -> [f32; 4] {
    let b = window["cell_box"].as_array().expect("a cell box");
    std::array::from_fn(|i| b[i].as_f64().unwrap() as f32)
}

/// Each box found by one of `got` at IoU >= 0.5.
fn all_found(name: &str, got: &[[f32; 4]]) {
    for b in wbc_boxes(name) {
        let best = got.iter().map(|g| iou(*g, b)).fold(0.0, f32::max);
        assert!(best >= 0.5, "{name}: box {b:?} best IoU {best} of {got:?}");
    }
}

fn query(index: &Path, image: &Path) -> Vec<serde_json::Value> {
    let out = util::run_ok(
        Command::new(util::bin("index"))
            .arg("query")
            .arg(image)
            .arg("-i")
            .arg(index)
            .args(["-k", "3", "--json"]),
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn every_cell_of_a_field_is_a_row_and_an_answer() {
    let Some(fields) = bccd_fields("every_cell_of_a_field_is_a_row_and_an_answer") else {
        return;
    };
    let dir = util::tempdir();
    let folder = dir.path().join("fields");
    std::fs::create_dir_all(&folder).unwrap();
    // two fields of two white cells, two of one; more than 8 fields give a calibration
    let names = [
        "BloodImage_00010.jpg",
        "BloodImage_00034.jpg",
        "BloodImage_00000.jpg",
        "BloodImage_00001.jpg",
        "BloodImage_00003.jpg",
        "BloodImage_00005.jpg",
        "BloodImage_00006.jpg",
        "BloodImage_00007.jpg",
        "BloodImage_00008.jpg",
        "BloodImage_00009.jpg",
    ];
    for n in names {
        std::fs::copy(fields.join(n), folder.join(n)).unwrap();
    }
    // a copy of a one-cell field under another name: a copy, not another cell
    std::fs::copy(
        fields.join("BloodImage_00000.jpg"),
        folder.join("copy_of_00000.jpg"),
    )
    .unwrap();
    let model = util::root().join("models/cellspace.onnx");
    let emb = dir.path().join("fields.embeddings");
    embed_all(&folder, &emb, &model);
    let manifest = std::fs::read_to_string(emb.join("manifest.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |name: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|r| r["path"] == name).collect()
    };
    for two in ["BloodImage_00010.jpg", "BloodImage_00034.jpg"] {
        let r = of(two);
        assert_eq!(r.len(), 2, "{two}: {r:?}");
        assert_eq!(
            (r[0]["cell"].as_u64(), r[1]["cell"].as_u64()),
            (Some(0), Some(1))
        );
        let boxes: Vec<[f32; 4]> = r.iter().map(|r| cell_box(&r["window"])).collect();
        all_found(two, &boxes);
    }
    let one = of("BloodImage_00000.jpg");
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        one[0].get("cell").is_none(),
        "a one-cell field has no cell number"
    );
    all_found("BloodImage_00000.jpg", &[cell_box(&one[0]["window"])]);

    let index = dir.path().join("fields.index");
    util::run_ok(
        Command::new(util::bin("index"))
            .arg("build")
            .arg(&emb)
            .arg("--model")
            .arg(&model)
            .arg("-o")
            .arg(&index),
    );
    // an indexed two-cell field: its two rows, each answered
    let answers = query(&index, &folder.join("BloodImage_00010.jpg"));
    assert_eq!(answers.len(), 2, "{answers:?}");
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a["cell"]["cell"].as_u64(), Some(i as u64), "{a}");
        assert_eq!(a["cell"]["of"].as_u64(), Some(2), "{a}");
        assert!(!a["neighbours"].as_array().unwrap().is_empty(), "{a}");
    }
    // an indexed one-cell field with a copy in the atlas: one answer, not one per copy
    let answers = query(&index, &folder.join("BloodImage_00000.jpg"));
    assert_eq!(answers.len(), 1, "{answers:?}");
    // each cell's thumbnail is its own window, and its own ETag
    let atlas = index::CellIndex::open(&index).unwrap();
    let ids: Vec<usize> = (0..atlas.rows().len())
        .filter(|&i| atlas.rows()[i].path.ends_with("BloodImage_00010.jpg"))
        .collect();
    assert_eq!(ids.len(), 2);
    let embedder = runtime::Embedder::new(&model, &Default::default()).unwrap();
    let addr = index::serve::spawn_with(
        index::serve::AppState::new(atlas, embedder, 5),
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
    )
    .unwrap();
    let thumb = |id: usize| util::http_full(addr, "GET", &format!("/thumb/{id}"), "", b"");
    let (t0, t1) = (thumb(ids[0]), thumb(ids[1]));
    assert_eq!((t0.0, t1.0), (200, 200));
    assert_ne!(t0.2, t1.2, "two cells, two windows");
    let etag = |head: &str| {
        head.lines()
            .find(|l| l.starts_with("etag:"))
            .map(str::to_string)
    };
    assert_ne!(etag(&t0.1), etag(&t1.1));
    // rows placed by an earlier version of the window rule are embedded again, not reused
    let state_path = emb.join("embed.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["window_rule"] = serde_json::json!(1);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let again = embed_all(&folder, &emb, &model);
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["reused"], 0, "{summary}");
    assert_eq!(
        summary["rows"].as_u64(),
        Some(rows.len() as u64),
        "{summary}"
    );
    // flags count images, not cells
    let files = summary["total"].as_u64().unwrap();
    assert!(
        summary["flagged"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n.as_u64().unwrap() <= files),
        "{summary}"
    );
    // a field that is not indexed: embedded, every cell answered
    let outside = fields.join("BloodImage_00043.jpg");
    let answers = query(&index, &outside);
    assert_eq!(answers.len(), 2, "{answers:?}");
    let boxes: Vec<[f32; 4]> = answers.iter().map(|a| cell_box(&a["window"])).collect();
    all_found("BloodImage_00043.jpg", &boxes);
    // a one-cell image: one answer without a cell number, as before
    let answers = query(&index, &fields.join("BloodImage_00002.jpg"));
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].get("cell").is_none(), "{:?}", answers[0]);
    edits_name_one_cell_of_a_field(
        &index,
        &folder.join("BloodImage_00010.jpg"),
        &folder.join("BloodImage_00000.jpg"),
    );
}

/// `index relabel` of a two-cell field needs `--cell` (it relabelled both cells before) and
/// changes that cell alone; `index remove --cell` removes one cell, a bare path the field;
/// `one`, a one-cell field, is its cell 1.
fn edits_name_one_cell_of_a_field(index: &Path, two: &Path, one: &Path) {
    let of = |image: &Path| {
        let name = image.file_name().unwrap().to_str().unwrap().to_string();
        let atlas = index::CellIndex::open(index).unwrap();
        let mut rows: Vec<(Option<u32>, Option<String>, bool)> = atlas
            .rows()
            .iter()
            .filter(|r| r.path.ends_with(&name))
            .map(|r| (r.cell, r.class.clone(), r.removed))
            .collect();
        rows.sort();
        rows
    };
    let before = of(two);
    assert_eq!(before.len(), 2, "{before:?}");
    let index_cmd = |args: &[&str], image: &Path, extra: &[&str]| {
        Command::new(util::bin("index"))
            .args(args)
            .arg(image)
            .args(extra)
            .arg("-i")
            .arg(index)
            .output()
            .unwrap()
    };
    let relabel = |image: &Path, extra: &[&str]| {
        let mut args = vec!["EOSINOPHIL"];
        args.extend_from_slice(extra);
        index_cmd(&["relabel"], image, &args)
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let out = relabel(two, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 white cells") && stderr(&out).contains("--cell"),
        "{}",
        stderr(&out)
    );
    assert_eq!(of(two), before, "a refused relabel changed nothing");
    let out = relabel(two, &["--cell", "3"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no live cell 3"), "{}", stderr(&out));
    let out = relabel(two, &["--cell", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("(cell 2)"), "{}", stderr(&out));
    let after = of(two);
    assert_eq!(after[0], before[0], "cell 1 kept its class");
    assert_eq!(after[1].1.as_deref(), Some("EOSINOPHIL"), "{after:?}");
    // a one-cell field: it is its cell 1, and has no cell 2
    let out = relabel(one, &["--cell", "2"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = relabel(one, &["--cell", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(of(one)[0].1.as_deref(), Some("EOSINOPHIL"));
    let out = index_cmd(&["remove", "--cell", "1"], two, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = of(two);
    assert!(after[0].2 && !after[1].2, "only cell 1 removed: {after:?}");
}

/// A lab page over an atlas of the first 12 BCCD fields with the shipped model (the temp dir
/// holding them, and the address).
fn serve_fields(fields: &Path) -> (tempfile::TempDir, std::net::SocketAddr) {
    let dir = util::tempdir();
    let folder = dir.path().join("fields");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..12 {
        let n = format!("BloodImage_{i:05}.jpg");
        if fields.join(&n).is_file() {
            std::fs::copy(fields.join(&n), folder.join(&n)).unwrap();
        }
    }
    let embedder = util::shipped_embedder();
    let index = util::index_images(&folder, &embedder);
    let addr = index::serve::spawn_with(
        index::serve::AppState::new(index, embedder, 5),
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
    )
    .unwrap();
    (dir, addr)
}

/// The lab page's API on an uploaded field of two white cells: the answer carries the field
/// and both boxes, `cell=1` answers the other cell, and a cell the field does not hold is a
/// 400 naming the count.
#[test]
fn the_page_answers_each_cell_of_an_uploaded_field() {
    let Some(fields) = bccd_fields("the_page_answers_each_cell_of_an_uploaded_field") else {
        return;
    };
    let (_dir, addr) = serve_fields(&fields);
    let name = "BloodImage_00043.jpg";
    let body = std::fs::read(fields.join(name)).unwrap();
    let ask = |cell: usize| {
        let (st, out) = util::http(addr, "POST", &format!("/api/query?cell={cell}"), &body);
        (
            st,
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
        )
    };
    let (st, first) = ask(0);
    assert_eq!(st, 200, "{first}");
    let field = &first["field"];
    assert!(
        field["image"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,"),
        "the field is drawn"
    );
    assert_eq!(field["size"], serde_json::json!([640, 480]));
    assert_eq!(field["cell"], 0);
    let boxes: Vec<[f32; 4]> = field["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| std::array::from_fn(|i| b[i].as_f64().unwrap() as f32))
        .collect();
    assert_eq!(boxes.len(), 2, "{field}");
    all_found(name, &boxes);
    let (st, second) = ask(1);
    assert_eq!(st, 200, "{second}");
    assert_eq!(second["field"]["cell"], 1);
    assert_eq!(cell_box(&second["query_window"]), boxes[1]);
    assert_ne!(
        first["query_crop"], second["query_crop"],
        "each cell's own window"
    );
    let (st, none) = ask(2);
    assert_eq!(st, 400, "{none}");
    assert!(
        none["error"]
            .as_str()
            .unwrap()
            .contains("holds 2 white cell"),
        "{none}"
    );
    // a one-cell field: no field drawing, answered as before
    let one = std::fs::read(fields.join("BloodImage_00002.jpg")).unwrap();
    let (st, out) = util::http(addr, "POST", "/api/query", &one);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(st, 200, "{v}");
    assert!(v.get("field").is_none(), "{v}");
    assert!(!v["neighbours"].as_array().unwrap().is_empty());
}

/// The page in headless Chromium: an uploaded two-cell field is drawn with a box per cell,
/// the first answered; a click on the second box answers that cell.
#[test]
fn the_page_draws_a_box_per_cell_and_a_click_answers_that_cell() {
    let test = "the_page_draws_a_box_per_cell_and_a_click_answers_that_cell";
    let Some(fields) = bccd_fields(test) else {
        return;
    };
    let Some(b) = util::Browser::start(test) else {
        return;
    };
    let (_dir, addr) = serve_fields(&fields);
    b.wd(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://{addr}/")}),
    );
    let input = b.find("#file", 1);
    let upload = std::fs::canonicalize(fields.join("BloodImage_00043.jpg")).unwrap();
    b.wd(
        "POST",
        &format!("/element/{}/value", input[0]),
        serde_json::json!({"text": upload.display().to_string()}),
    );
    let boxes = b.find(".cellbox", 2);
    assert_eq!(boxes.len(), 2, "a box per white cell");
    let current = |b: &util::Browser| -> Option<String> {
        b.find(".cellbox.current", 1)
            .first()
            .and_then(|id| b.attribute(id, "data-cell"))
    };
    // polled: the page redraws the boxes when its answer arrives
    let first = (0..100)
        .find_map(|_| {
            let c = current(&b);
            if c.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            c
        })
        .unwrap_or_default();
    assert_eq!(first, "0", "the largest cell answered first");
    assert!(!b.find(".hit", 1).is_empty(), "neighbours shown");
    let crop = |b: &util::Browser| b.attribute(&b.find("#query-img", 1)[0], "src");
    let first_crop = crop(&b);
    b.wd(
        "POST",
        &format!("/element/{}/click", boxes[1]),
        serde_json::json!({}),
    );
    let mut now = None;
    for _ in 0..100 {
        now = current(&b);
        if now.as_deref() == Some("1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(now.as_deref(), Some("1"), "the clicked cell is answered");
    assert!(crop(&b).is_some_and(|c| c.starts_with("data:image/png")));
    assert_ne!(crop(&b), first_crop, "its own window is shown");
    assert!(!b.find(".hit", 1).is_empty(), "its neighbours shown");
}
