//! Queries by example (`index query --like A --like B --unlike C`): one answer list, ranked
//! by the average-vector rule (2 · mean(like) − mean(unlike)), never the examples' own cells;
//! an image that is not indexed can be an example; a query of nothing to be like is refused.

mod util;

use index::CellIndex;
use std::process::Command;

fn ids(out: &std::process::Output) -> Vec<usize> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "one answer list: {v}");
    v[0]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn more_like_these_less_like_those() {
    let dir = util::tempdir();
    let cells = util::cells_folder(dir.path(), 16, &["A", "B"]);
    let idx = dir.path().join("cells.index");
    util::run_ok(
        Command::new(util::bin("index"))
            .args(["build", "--images"])
            .arg(&cells)
            .arg("--model")
            .arg(util::tiny_model())
            .arg("-o")
            .arg(&idx),
    );
    let index = CellIndex::open(&idx).unwrap();
    let out = util::index_cmd(
        &idx,
        &[
            "query", "--like", "id:0", "--like", "id:2", "--unlike", "id:1", "-k", "5", "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = ids(&out);
    assert_eq!(got.len(), 5);
    // the examples' own cells: their copies and their originals' other copies
    let own: std::collections::HashSet<usize> = [0, 1, 2]
        .iter()
        .flat_map(|&i| index::ops::same_cell(&index, &index.rows()[i].sha256))
        .collect();
    assert!(own.is_superset(&[0, 1, 2].into()));
    assert!(
        got.iter().all(|i| !own.contains(i)),
        "examples never answered: {got:?}"
    );
    // the exact ranking of the average-vector rule over the other cells
    let v = |i: usize| index.vector(i).unwrap().into_owned();
    let (a, b, c) = (v(0), v(2), v(1));
    let q = index::examples::recommend_vector(&[&a, &b], &[&c]).unwrap();
    let all: Vec<f32> = (0..index.len()).flat_map(v).collect();
    let expect: Vec<usize> =
        cellspace_core::metrics::topk(&q, &all, q.len(), 5, |i| !own.contains(&i))
            .into_iter()
            .map(|(i, _)| i)
            .collect();
    assert_eq!(got, expect);
    // the unlike cell pushes the answer away from it: without it the list differs
    let plain = ids(&util::index_cmd(
        &idx,
        &[
            "query", "--like", "id:0", "--like", "id:2", "-k", "5", "--json",
        ],
    ));
    let q2 = index::examples::recommend_vector(&[&a, &b], &[]).unwrap();
    let sim = |i: usize, q: &[f32]| cellspace_core::metrics::dot(&v(i), q);
    let to_c = |list: &[usize]| list.iter().map(|&i| sim(i, &c)).sum::<f32>();
    assert!(to_c(&got) <= to_c(&plain) + 1e-6, "{got:?} vs {plain:?}");
    assert!(sim(plain[0], &q2) >= sim(plain[4], &q2));
    // an image that is not indexed is an example too (embedded), with a positional query
    let outside = dir.path().join("outside.png");
    util::write_cell(&outside, 99);
    let out = util::index_cmd(
        &idx,
        &[
            "query",
            "--unlike",
            "id:3",
            "--json",
            outside.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ids(&out).contains(&3));
    // nothing to be like: refused
    let out = util::index_cmd(&idx, &["query", "--unlike", "id:3"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an answer with an error: partial"
    );
    let v: serde_json::Value = {
        let out = util::index_cmd(&idx, &["query", "--unlike", "id:3", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(
        v[0]["error"]
            .as_str()
            .unwrap()
            .contains("at least one cell to be like"),
        "{v}"
    );
    let out = util::index_cmd(&idx, &["query", "--like", "id:999", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["error"].as_str().unwrap().contains("id:999"), "{v}");
}
