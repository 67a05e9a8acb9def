//! `index classify`: a few labelled cells give every indexed cell a class and a confidence;
//! the labels are checked against each other; `--write` stores the classes atomically; a
//! label file that names nothing indexed is refused, naming it, and changes nothing; `--by`
//! counts per slide. `index clusters`: k-means clusters that find the classes (NMI, ARI).

mod util;

use index::manifest::ModelRef;
use index::{CellIndex, HnswParams, IndexBuilder, Row};
use rand::{Rng, SeedableRng};
use std::path::Path;

const DIM: usize = 16;

/// 60 originals of 4 copies; an original's class is the prototype its vector lies near
/// (three classes), so the class is in the vectors, as a good embedding's is.
fn atlas() -> CellIndex {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let protos: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let model = ModelRef {
        name: "synthetic".into(),
        card: "none.json".into(),
        onnx_sha256: "abc".into(),
        dim: DIM,
        preprocess_sha256: String::new(),
    };
    let mut b = IndexBuilder::new(model, HnswParams::default()).unwrap();
    for o in 0..60 {
        let class = o % 3;
        let base: Vec<f32> = protos[class]
            .iter()
            .map(|p| p + 0.25 * (rng.random::<f32>() - 0.5))
            .collect();
        for c in 0..4 {
            let mut v: Vec<f32> = base
                .iter()
                .map(|x| x + 0.03 * (rng.random::<f32>() - 0.5))
                .collect();
            cellspace_core::l2_normalize(&mut v);
            let mut row = Row {
                path: format!("/cells/o{o}-c{c}.png"),
                class: Some(format!("true{class}")),
                sha256: format!("h{o}-{c}"),
                group: Some(format!("g{o}")),
                ..Default::default()
            };
            // slide S0 holds the first 30 originals (10 of each class), S1 the rest
            row.meta.insert("slide".into(), format!("S{}", o / 30));
            b.push(row, &v).unwrap();
        }
    }
    b.build()
}

/// A label file naming copy 0 of the first `per_class` originals of each class, with the
/// class given by `name` (true: the cell's real class).
fn label_file(path: &Path, per_class: usize, name: impl Fn(usize) -> String) {
    let mut csv = String::from("path,class\n");
    for o in 0..per_class * 3 {
        csv += &format!("/cells/o{o}-c0.png,{}\n", name(o));
    }
    std::fs::write(path, csv).unwrap();
}

fn accuracy(c: &index::classify::Classification, index: &CellIndex) -> f64 {
    let unlabelled: Vec<_> = c.predictions.iter().filter(|p| p.label.is_none()).collect();
    let right = unlabelled
        .iter()
        .filter(|p| index.rows()[p.id].class.as_deref() == Some(&format!("true{}", &p.class[5..])))
        .count();
    right as f64 / unlabelled.len() as f64
}

#[test]
fn a_few_labels_classify_every_cell_with_a_confidence() {
    let dir = util::tempdir();
    let idx = atlas();
    let file = dir.path().join("labels.csv");
    label_file(&file, 2, |o| format!("label{}", o % 3));
    let labels = index::classify::labels(&idx, &file, None).unwrap();
    assert_eq!(labels.ids.len(), 6);
    let c = index::classify::classify(&idx, &labels, 200).unwrap();
    assert_eq!(c.predictions.len(), 240, "every live cell");
    assert_eq!(c.counts.values().sum::<usize>(), 240);
    assert_eq!(c.labelled, 6);
    let acc = accuracy(&c, &idx);
    assert!(acc > 0.95, "2 labelled originals per class: {acc}");
    assert!(c.label_agreement.unwrap() > 0.99, "{:?}", c.label_agreement);
    for p in &c.predictions {
        assert!(p.confidence > 0.0 && p.confidence <= 1.0);
        if let Some(l) = &p.label {
            assert_eq!(
                (&p.class, p.confidence),
                (l, 1.0),
                "a labelled cell keeps its label"
            );
        }
    }
    // labels that contradict the vectors: the check between labels says so
    label_file(&file, 2, |o| format!("label{}", (o / 3 + o) % 3));
    let bad = index::classify::labels(&idx, &file, None).unwrap();
    let c = index::classify::classify(&idx, &bad, 200).unwrap();
    assert!(c.label_agreement.unwrap() < 0.5, "{:?}", c.label_agreement);
    assert!(accuracy(&c, &idx) < 0.7);
}

#[test]
fn classify_writes_the_classes_atomically_and_refuses_labels_of_nothing() {
    let dir = util::tempdir();
    let path = dir.path().join("cells.index");
    atlas().save(&path).unwrap();
    let file = dir.path().join("labels.csv");
    label_file(&file, 1, |o| format!("label{}", o % 3));
    let file_s = file.to_str().unwrap();
    let out = util::index_cmd(
        &path,
        &["classify", "--labels", file_s, "--write", "predicted"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("240 cells, 3 labelled"), "{log}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 241, "a header and one line per cell");
    let idx = CellIndex::open(&path).unwrap();
    let label1 = idx.find_where(&["predicted=label1".parse().unwrap()]).len();
    assert!(
        (70..=90).contains(&label1),
        "about a third are label1: {label1}"
    );
    assert!(
        idx.rows()
            .iter()
            .all(|r| r.meta.contains_key("predicted_confidence"))
    );
    // a label file naming no indexed image: refused, named, the index unchanged
    let before = std::fs::read(path.join("rows.jsonl")).ok();
    std::fs::write(&file, "path,class\n/elsewhere/x.png,A\n").unwrap();
    let out = util::index_cmd(&path, &["classify", "--labels", file_s, "--write", "other"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("labels.csv") && log.contains("no labelled indexed cell"),
        "{log}"
    );
    assert_eq!(std::fs::read(path.join("rows.jsonl")).ok(), before);
    let idx = CellIndex::open(&path).unwrap();
    assert!(idx.rows().iter().all(|r| !r.meta.contains_key("other")));
    // the labels' own field cannot be overwritten by predictions
    let out = util::index_cmd(&path, &["classify", "--labels", file_s, "--write", "class"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn clusters_find_the_classes_and_count_them_per_slide() {
    let dir = util::tempdir();
    let path = dir.path().join("cells.index");
    atlas().save(&path).unwrap();
    let c = index::clusters::clusters(&atlas(), 3, 0).unwrap();
    assert_eq!(c.assignment.len(), 240);
    assert_eq!(c.sizes.iter().sum::<usize>(), 240);
    assert!(
        c.nmi.unwrap() > 0.95 && c.ari.unwrap() > 0.95,
        "{:?} {:?}",
        c.nmi,
        c.ari
    );
    let out = util::index_cmd(
        &path,
        &["clusters", "-k", "3", "--write", "cluster", "--by", "slide"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("240 cells in 3 clusters") && log.contains("NMI"),
        "{log}"
    );
    assert!(
        log.contains("S0: 120 cells") && log.contains("S1: 120 cells"),
        "{log}"
    );
    let idx = CellIndex::open(&path).unwrap();
    assert!(
        idx.rows()
            .iter()
            .all(|r| r.meta.get("cluster").is_some_and(|c| c.starts_with('c')))
    );
    // a differential count per slide from a few labels
    let file = dir.path().join("labels.csv");
    label_file(&file, 2, |o| format!("label{}", o % 3));
    let out = util::index_cmd(
        &path,
        &[
            "classify",
            "--labels",
            file.to_str().unwrap(),
            "--by",
            "slide",
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("per slide:") && log.contains("S0: 120 cells: label0 40 (33.3%)"),
        "{log}"
    );
}
