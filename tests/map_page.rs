//! The map of the atlas on the lab page, on real cells with the shipped model: the API (places,
//! colours and counts by class or cluster, edits through the CLI's locked atomic save, stale
//! edits refused, export), and a Chromium test that draws the map, clicks a point and sees
//! its neighbours, lasso-selects and relabels, and sees the map and a later query follow.

mod util;

use std::net::SocketAddr;
use std::path::Path;

/// 40 real cells per class, indexed with the shipped model and served from the saved folder.
fn serve_real(test: &str) -> Option<(tempfile::TempDir, tempfile::TempDir, SocketAddr)> {
    let train = util::real_data(test)?;
    let cells = util::real_subset(&train, 40, 3);
    let embedder = util::shipped_embedder();
    let index = util::index_images(cells.path(), &embedder);
    let dir = util::tempdir();
    let at = dir.path().join("atlas");
    index.save(&at).unwrap();
    let index = index::CellIndex::open(&at).unwrap();
    let addr = index::serve::spawn_with(
        index::serve::AppState::watching(&at, index, embedder, 5),
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
    )
    .unwrap();
    Some((cells, dir, addr))
}

fn get(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (st, body) = util::http(addr, "GET", path, b"");
    assert_eq!(st, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn post(addr: SocketAddr, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (st, out) = util::http_with(
        addr,
        "POST",
        path,
        "Content-Type: application/json\r\n",
        body.to_string().as_bytes(),
    );
    (st, serde_json::from_slice(&out).unwrap_or_default())
}

fn count(map: &serde_json::Value, name: &str) -> u64 {
    map["legend"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map_or(0, |e| e["count"].as_u64().unwrap())
}

#[test]
fn the_map_api_colours_counts_edits_and_exports() {
    let Some((_cells, dir, addr)) = serve_real("the_map_api_colours_counts_edits_and_exports")
    else {
        return;
    };
    let map = get(addr, "/api/map?by=class");
    assert_eq!(map["ids"].as_array().unwrap().len(), 160);
    assert_eq!(map["laid_out_now"], false, "index build saved the map");
    for class in ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"] {
        assert_eq!(count(&map, class), 40, "{class}");
    }
    let clusters = get(addr, "/api/map?by=cluster&k=4");
    let sizes: u64 = clusters["legend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, 160);
    assert!(clusters["legend"].as_array().unwrap().len() <= 4);
    let ids: Vec<u64> = map["ids"].as_array().unwrap()[..3]
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let version = map["version"].clone();
    let (st, out) = post(
        addr,
        "/api/edit",
        serde_json::json!({"version": version, "ids": ids, "relabel": "BAND"}),
    );
    assert_eq!(st, 200, "{out}");
    // saved as `index relabel` saves: the folder holds it, and the map follows
    let saved = index::CellIndex::open(&dir.path().join("atlas")).unwrap();
    assert_eq!(saved.rows()[ids[0] as usize].class.as_deref(), Some("BAND"));
    let after = get(addr, "/api/map?by=class");
    assert_eq!(count(&after, "BAND"), 3);
    assert_ne!(after["version"], version);
    // an edit against the map loaded before is refused, not applied to what the ids now are
    let (st, out) = post(
        addr,
        "/api/edit",
        serde_json::json!({"version": version, "ids": [ids[0]], "remove": true}),
    );
    assert_eq!(st, 409, "{out}");
    assert!(out["error"].as_str().unwrap().contains("reload"), "{out}");
    let (st, out) = post(
        addr,
        "/api/edit",
        serde_json::json!({"version": after["version"], "ids": [ids[0]], "remove": true}),
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(get(addr, "/api/map")["ids"].as_array().unwrap().len(), 159);
    let now = get(addr, "/api/map?by=cluster&k=")["version"].clone(); // an empty k: the default
    let (st, out) = post(
        addr,
        "/api/export",
        serde_json::json!({"version": version, "ids": [ids[1], ids[2]]}),
    );
    assert_eq!(st, 409, "ids of an older atlas are not exported: {out}");
    let (st, out) = post(
        addr,
        "/api/export",
        serde_json::json!({"version": now, "ids": [ids[1], ids[2]]}),
    );
    assert_eq!(st, 200, "{out}");
    let cells = out["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    assert_eq!(cells[0]["class"], "BAND");
    assert!(
        cells[0]["path"].as_str().unwrap().ends_with(".jpeg"),
        "{out}"
    );
    let (st, _) = post(
        addr,
        "/api/export",
        serde_json::json!({"version": now, "ids": [ids[0]]}),
    );
    assert_eq!(st, 404, "a removed cell is not exported");
}

/// A server told not to take edits refuses them (403) and changes nothing.
#[test]
fn a_read_only_server_refuses_edits() {
    let cells = util::tempdir();
    util::cells_folder(cells.path(), 12, &["A", "B"]);
    let embedder = runtime::Embedder::new(&util::tiny_model(), &Default::default()).unwrap();
    let index = util::index_images(cells.path(), &embedder);
    let dir = util::tempdir();
    let at = dir.path().join("atlas");
    index.save(&at).unwrap();
    let mut state =
        index::serve::AppState::watching(&at, index::CellIndex::open(&at).unwrap(), embedder, 5);
    state.edits = false;
    let addr = index::serve::spawn_with(state, "127.0.0.1:0".parse().unwrap(), Default::default())
        .unwrap();
    let map = get(addr, "/api/map");
    let (st, out) = post(
        addr,
        "/api/edit",
        serde_json::json!({"version": map["version"], "ids": [0], "remove": true}),
    );
    assert_eq!(st, 403, "{out}");
    assert_eq!(index::CellIndex::open(&at).unwrap().live(), 12);
}

/// Run JavaScript in the page; its value.
fn js(b: &util::Browser, script: &str) -> serde_json::Value {
    b.wd(
        "POST",
        "/execute/sync",
        serde_json::json!({"script": script, "args": []}),
    )
}

fn wait_for(b: &util::Browser, script: &str, what: &str) -> serde_json::Value {
    for _ in 0..150 {
        let v = js(b, script);
        if !v.is_null() && v != false {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn screenshot(b: &util::Browser, name: &str) {
    let Some(dir) = std::env::var_os("CELLSPACE_SCREENSHOTS") else {
        return;
    };
    use base64::Engine;
    let png = b.wd("GET", "/screenshot", serde_json::Value::Null);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    let p = Path::new(&dir).join(name);
    std::fs::write(&p, bytes).unwrap();
    println!("screenshot: {}", p.display());
}

#[test]
fn the_page_draws_the_map_a_click_answers_and_a_lasso_relabels() {
    let test = "the_page_draws_the_map_a_click_answers_and_a_lasso_relabels";
    let Some(b) = util::Browser::start(test) else {
        return;
    };
    let Some((_cells, _dir, addr)) = serve_real(test) else {
        return;
    };
    b.wd(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://{addr}/")}),
    );
    let drawn = wait_for(
        &b,
        "return window.cellspaceMap.drawn",
        "the map to be drawn",
    );
    assert_eq!(drawn, 160, "every cell drawn");
    // a point's place on the screen (viewport coordinates), the map scrolled into view
    let place = |k: usize| -> (f64, f64, u64) {
        let v = js(
            &b,
            &format!(
                "document.getElementById('map').scrollIntoView({{block: 'center'}}); \
                 const M = window.cellspaceMap, r = document.getElementById('map').getBoundingClientRect(); \
                 return [M.view.s * M.data.x[{k}] + M.view.tx + r.left, M.view.s * M.data.y[{k}] + M.view.ty + r.top, M.data.ids[{k}]];"
            ),
        );
        (
            v[0].as_f64().unwrap(),
            v[1].as_f64().unwrap(),
            v[2].as_u64().unwrap(),
        )
    };
    let (x, y, _) = place(10);
    let mouse = |actions: serde_json::Value, keys: serde_json::Value| {
        b.wd(
            "POST",
            "/actions",
            serde_json::json!({"actions": [
                {"type": "key", "id": "keyboard", "actions": keys},
                {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}
            ]}),
        );
        b.wd("DELETE", "/actions", serde_json::Value::Null);
    };
    let at = |x: f64, y: f64| serde_json::json!({"type": "pointerMove", "x": x.round() as i64, "y": y.round() as i64, "origin": "viewport"});
    let pause = serde_json::json!({"type": "pause"});
    // a click on the point: its neighbours in the grid, ringed on the map
    mouse(
        serde_json::json!([at(x, y), {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]),
        serde_json::json!([pause, pause, pause]),
    );
    assert!(
        !b.find(".hit", 1).is_empty(),
        "a click on a point shows its neighbours"
    );
    wait_for(
        &b,
        "return window.cellspaceMap.hits.size > 0",
        "the neighbours ringed",
    );
    screenshot(&b, "map.png");
    // shift+drag a square around it: the lasso (the grid of neighbours moved the map down)
    let (x, y, _) = place(10);
    let r = 40.0;
    let corners = [
        (x - r, y - r),
        (x + r, y - r),
        (x + r, y + r),
        (x - r, y + r),
        (x - r, y - r),
    ];
    let mut acts = vec![
        at(corners[0].0, corners[0].1),
        serde_json::json!({"type": "pointerDown", "button": 0}),
    ];
    for (cx, cy) in &corners[1..] {
        acts.push(at(*cx, *cy));
    }
    acts.push(serde_json::json!({"type": "pointerUp", "button": 0}));
    let mut keys = vec![serde_json::json!({"type": "keyDown", "value": "\u{E008}"})];
    keys.extend(std::iter::repeat_n(pause.clone(), acts.len() - 1));
    keys.push(serde_json::json!({"type": "keyUp", "value": "\u{E008}"}));
    acts.push(pause.clone());
    mouse(
        serde_json::Value::Array(acts),
        serde_json::Value::Array(keys),
    );
    let selected = wait_for(
        &b,
        "return window.cellspaceMap.selected.size || null",
        "a lasso selection",
    )
    .as_u64()
    .unwrap();
    // the page's own count of the points inside the square agrees with the selection
    let inside = js(
        &b,
        &format!(
            "const M = window.cellspaceMap, r = document.getElementById('map').getBoundingClientRect(); let n = 0; \
             for (let i = 0; i < M.data.x.length; i++) {{ const px = M.view.s * M.data.x[i] + M.view.tx + r.left, py = M.view.s * M.data.y[i] + M.view.ty + r.top; \
             if (Math.abs(px - {x}) < {r} && Math.abs(py - {y}) < {r}) n++; }} return n;"
        ),
    );
    assert_eq!(
        Some(selected),
        inside.as_u64(),
        "the lasso holds the points inside it"
    );
    screenshot(&b, "map-lasso.png");
    let input = b.find("#relabelas", 1);
    b.wd(
        "POST",
        &format!("/element/{}/value", input[0]),
        serde_json::json!({"text": "REVIEW"}),
    );
    let button = b.find("#relabel", 1);
    b.wd(
        "POST",
        &format!("/element/{}/click", button[0]),
        serde_json::json!({}),
    );
    // the map follows the edit: its legend counts the new class
    let relabelled = wait_for(
        &b,
        "const e = (window.cellspaceMap.data.legend || []).find((e) => e.name === 'REVIEW'); return e ? e.count : null;",
        "the map to show the relabelled cells",
    );
    assert_eq!(relabelled.as_u64(), Some(selected));
    // and a later query: only cells of the new class, each showing it
    let filter = b.find("#where", 1);
    b.wd(
        "POST",
        &format!("/element/{}/value", filter[0]),
        serde_json::json!({"text": "class=REVIEW\n"}),
    );
    if selected >= 2 {
        let classes = wait_for(
            &b,
            "const c = [...document.querySelectorAll('.hit .cls')].map((e) => e.textContent); return c.length && c.every((t) => t === 'REVIEW') ? c : null;",
            "a query filtered to the new class",
        );
        assert!(!classes.as_array().unwrap().is_empty());
    }
}

/// Benchmark, not a test (`scripts/bench.sh --map`, or `cargo test --release --test map_page
/// -- --ignored --nocapture`): map layout time and the page's frame time at 10^5 cells
/// (128-d, 20 clusters), printed, never asserted.
#[test]
#[ignore]
fn map_layout_and_frame_time_at_1e5_cells() {
    use rand::{Rng, SeedableRng};
    let n: usize = std::env::var("CELLSPACE_MAP_CELLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dim = 128;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dim).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let model = index::manifest::ModelRef {
        name: "synthetic".into(),
        card: "none.json".into(),
        onnx_sha256: "abc".into(),
        dim,
        preprocess_sha256: String::new(),
    };
    let mut b = index::IndexBuilder::new(model, index::HnswParams::default()).unwrap();
    for i in 0..n {
        let mut v: Vec<f32> = centres[i % 20]
            .iter()
            .map(|c| c + 0.15 * (rng.random::<f32>() - 0.5))
            .collect();
        cellspace_core::l2_normalize(&mut v);
        let row = index::Row {
            path: format!("/synthetic/{i}.png"),
            class: Some(format!("C{}", i % 20)),
            sha256: format!("s{i}"),
            ..Default::default()
        };
        b.push(row, &v).unwrap();
    }
    let t = std::time::Instant::now();
    let index = b.build();
    let build = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let map = index.lay_out_map();
    let layout = t.elapsed().as_secs_f64();
    assert_eq!(map.len(), n);
    println!(
        "map bench: {n} cells x {dim}-d: index build (graph + map) {build:.1} s, map layout alone {layout:.1} s ({:.0} cells/s)",
        n as f64 / layout
    );
    let Some(br) = util::Browser::start("map_layout_and_frame_time_at_1e5_cells") else {
        return;
    };
    let embedder = runtime::Embedder::new(&util::tiny_model(), &Default::default()).unwrap();
    let addr = index::serve::spawn_with(
        index::serve::AppState::new(index, embedder, 5),
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    br.wd(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://{addr}/")}),
    );
    wait_for(
        &br,
        "return window.cellspaceMap.drawn || null",
        "the map drawn",
    );
    let load = t.elapsed().as_secs_f64();
    let frames = js(
        &br,
        "const M = window.cellspaceMap, t = []; for (let k = 0; k < 30; k++) { M.view.s *= 1.02; draw(); t.push(M.frameMs); } \
         t.sort((a, b) => a - b); return [t[15], t[27], M.drawn];",
    );
    println!(
        "map bench: page at {n} cells: loaded and drawn in {load:.1} s; frame (zoom step, full redraw) median {:.1} ms, 90th percentile {:.1} ms, {} points drawn",
        frames[0].as_f64().unwrap(),
        frames[1].as_f64().unwrap(),
        frames[2]
    );
}
