//! The atlas map: every cell's 2-D place, kept by `build`, `add` and `compact` and saved with the
//! index (checked like every other file).

mod util;

use index::manifest::ModelRef;
use index::{CellIndex, HnswParams, IndexBuilder, Row};
use rand::{Rng, SeedableRng};

const DIM: usize = 16;

/// `n` rows around `groups` well-apart centres; class = `G{group}`.
fn rows(n: usize, groups: usize, seed: u64) -> (Vec<Row>, Vec<f32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let centres: Vec<Vec<f32>> = (0..groups)
        .map(|_| (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let g = i % groups;
        let mut row: Vec<f32> = centres[g]
            .iter()
            .map(|c| c + 0.08 * (rng.random::<f32>() - 0.5))
            .collect();
        cellspace_core::l2_normalize(&mut row);
        v.extend(row);
        out.push(Row {
            path: format!("/cells/{seed}-{i}.png"),
            class: Some(format!("G{g}")),
            sha256: format!("h{seed}-{i}"),
            ..Default::default()
        });
    }
    (out, v)
}

fn model() -> ModelRef {
    ModelRef {
        name: "synthetic".into(),
        card: "none.json".into(),
        onnx_sha256: "abc".into(),
        dim: DIM,
        preprocess_sha256: String::new(),
    }
}

fn build(rows: Vec<Row>, v: &[f32]) -> CellIndex {
    let mut b = IndexBuilder::new(model(), HnswParams::default()).unwrap();
    for (i, r) in rows.into_iter().enumerate() {
        b.push(r, &v[i * DIM..(i + 1) * DIM]).unwrap();
    }
    b.build()
}

/// Share of live cells whose nearest live cell on the map has their class.
fn map_agreement(idx: &CellIndex) -> f64 {
    let map = idx.map();
    let live: Vec<usize> = (0..idx.len()).filter(|&i| !idx.rows()[i].removed).collect();
    let d = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2);
    let agree = live
        .iter()
        .filter(|&&i| {
            let j = live
                .iter()
                .copied()
                .filter(|&j| j != i)
                .min_by(|&a, &b| d(map[i], map[a]).total_cmp(&d(map[i], map[b])))
                .unwrap();
            idx.rows()[i].class == idx.rows()[j].class
        })
        .count();
    agree as f64 / live.len() as f64
}

#[test]
fn build_lays_out_a_map_where_groups_stay_groups_and_it_survives_a_save() {
    let (r, v) = rows(600, 4, 2);
    let idx = build(r, &v);
    assert_eq!(idx.map().len(), 600);
    assert!(idx.map().iter().flatten().all(|x| x.is_finite()));
    let agreement = map_agreement(&idx);
    println!("map: nearest cell on the map of the same group for {agreement:.3} of 600 cells");
    assert!(agreement > 0.95, "{agreement}");
    let dir = util::tempdir();
    let p = dir.path().join("atlas");
    idx.save(&p).unwrap();
    assert_eq!(CellIndex::open(&p).unwrap().map(), idx.map());
}

#[test]
fn add_places_new_cells_without_moving_the_others_and_compact_keeps_places() {
    let (r, v) = rows(400, 4, 3);
    let mut idx = build(r, &v);
    let before = idx.map().to_vec();
    let (more, mv) = rows(80, 4, 4);
    idx.add(more, &mv).unwrap();
    assert_eq!(
        &idx.map()[..400],
        &before[..],
        "placed cells stay where they were"
    );
    assert_eq!(idx.map().len(), 480);
    assert!(map_agreement(&idx) > 0.9, "new cells land in their group");
    let gone: Vec<usize> = (0..480).step_by(3).collect();
    idx.remove(&gone);
    let kept: Vec<[f32; 2]> = (0..480)
        .filter(|i| i % 3 != 0)
        .map(|i| idx.map()[i])
        .collect();
    let compacted = idx.compact().unwrap();
    assert_eq!(
        compacted.map(),
        &kept[..],
        "compact keeps every remaining place"
    );
}

#[test]
fn a_damaged_map_is_detected_at_open() {
    let (r, v) = rows(50, 2, 5);
    let dir = util::tempdir();
    let p = dir.path().join("atlas");
    build(r, &v).save(&p).unwrap();
    let file = p.join(index::map_file::MAP_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let err = CellIndex::open(&p).err().expect("refused").to_string();
    assert!(err.contains("map.bin"), "{err}");
}

/// An edit from the page checked only the rows' fingerprint, so an index rebuilt in place with
/// another model over the same images took the edit and was installed: the server then
/// searched that model's vectors with its own. The version now names the model, and such an
/// edit is a conflict that saves nothing.
#[test]
fn an_edit_against_an_index_rebuilt_with_another_model_is_a_conflict() {
    let dir = util::tempdir();
    let p = dir.path().join("cells.index");
    let (r, v) = rows(12, 3, 5);
    let served = build(r.clone(), &v);
    served.save(&p).unwrap();
    let seen = index::atlas_map::version(&served);
    let mut b = IndexBuilder::new(
        ModelRef {
            onnx_sha256: "another model".into(),
            ..model()
        },
        HnswParams::default(),
    )
    .unwrap();
    for (i, row) in r.into_iter().enumerate() {
        b.push(row, &v[i * DIM..(i + 1) * DIM]).unwrap();
    }
    b.build().save(&p).unwrap();
    let edit = index::atlas_map::Edit::Relabel("X".into());
    let Err(err) = index::atlas_map::edit_saved(&p, &seen, &[0], &edit) else {
        panic!("the edit was taken by an index of another model");
    };
    assert!(matches!(err, index::Error::Conflict(_)), "{err}");
    let on_disk = CellIndex::open(&p).unwrap();
    assert_eq!(on_disk.model().onnx_sha256, "another model");
    assert_eq!(
        on_disk.rows()[0].class.as_deref(),
        Some("G0"),
        "nothing saved"
    );
    // the same model's index still takes the edit
    served.save(&p).unwrap();
    index::atlas_map::edit_saved(&p, &seen, &[0], &edit).unwrap();
    assert_eq!(
        CellIndex::open(&p).unwrap().rows()[0].class.as_deref(),
        Some("X")
    );
}
