//! Bad input never stops `runtime embed` and never loses a row: every case in the runtime issue
//! is either embedded (converted to RGB) or reported with its reason.

mod util;

use image::{DynamicImage, ImageBuffer, Luma, Rgba};
use runtime::folder::{Embeddings, FAILURES_FILE, embed_dir};
use runtime::{EmbedOptions, Embedder};
use std::path::Path;

fn embedder() -> Embedder {
    Embedder::new(
        &util::tiny_model(),
        &EmbedOptions {
            device: runtime::Device::CPU,
            ..Default::default()
        },
    )
    .unwrap()
}

fn big_png(path: &Path) {
    // 10,000 x 10,000 grey: refused from its header, never decoded into 300 MB
    let img: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(10_000, 10_000, Luma([128]));
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        f,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    );
    img.write_with_encoder(enc).unwrap();
}

#[test]
fn every_bad_input_is_embedded_or_reported() {
    let dir = util::tempdir();
    let d = dir.path().join("cells");
    let c = d.join("MIXED");
    std::fs::create_dir_all(&c).unwrap();
    util::write_cell(&c.join("good.png"), 1);
    let mut jpeg = Vec::new();
    util::cell_image(2, 64, 48)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(c.join("truncated.jpeg"), &jpeg[..jpeg.len() / 3]).unwrap();
    // cut near the end: the decoder would fill the last rows silently
    std::fs::write(c.join("cut_at_95.jpeg"), &jpeg[..jpeg.len() * 95 / 100]).unwrap();
    std::fs::write(c.join("empty.jpg"), b"").unwrap();
    std::fs::write(c.join("text.png"), b"this is not a picture\n").unwrap();
    util::cell_image(3, 1, 1)
        .save(c.join("one_pixel.png"))
        .unwrap();
    DynamicImage::ImageRgb8(util::cell_image(4, 30, 30))
        .to_luma8()
        .save(c.join("gray.png"))
        .unwrap();
    ImageBuffer::from_fn(20, 20, |x, _| Rgba([200, 100, (x * 10) as u8, 128]))
        .save(c.join("rgba.png"))
        .unwrap();
    DynamicImage::ImageRgb8(util::cell_image(5, 30, 30))
        .to_rgb16()
        .save(c.join("sixteen_bit.png"))
        .unwrap();
    std::fs::copy(util::fixture("cmyk.jpg"), c.join("cmyk.jpg")).unwrap();
    big_png(&c.join("huge.png"));
    // unreadable: a dangling symlink (permissions do not stop root, who runs CI) and mode 000
    std::os::unix::fs::symlink(c.join("missing.png"), c.join("dangling.png")).unwrap();
    util::write_cell(&c.join("no_permission.png"), 6);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        c.join("no_permission.png"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let as_root = std::fs::read(c.join("no_permission.png")).is_ok();
    // a symlink loop
    std::os::unix::fs::symlink(&d, c.join("loop")).unwrap();

    let out = dir.path().join("out");
    let (summary, failures) = embed_dir(&embedder(), &d, &out, &()).unwrap();
    let failed: Vec<&str> = failures
        .iter()
        .map(|f| f.path.rsplit('/').next().unwrap())
        .collect();
    let reason = |name: &str| {
        failures
            .iter()
            .find(|f| f.path.ends_with(name))
            .map(|f| f.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("cut_at_95.jpeg").contains("truncated"),
        "{failures:?}"
    );
    for bad in [
        "truncated.jpeg",
        "cut_at_95.jpeg",
        "empty.jpg",
        "text.png",
        "huge.png",
        "dangling.png",
    ] {
        assert!(
            failed.contains(&bad),
            "{bad} should be reported: {failures:?}"
        );
    }
    assert!(
        reason("empty.jpg").contains("empty"),
        "{}",
        reason("empty.jpg")
    );
    assert!(
        reason("text.png").contains("not an image"),
        "{}",
        reason("text.png")
    );
    assert!(
        reason("huge.png").contains("too large"),
        "{}",
        reason("huge.png")
    );
    assert!(
        failures.iter().any(|f| f.reason.contains("loop")),
        "symlink loop reported: {failures:?}"
    );
    if as_root {
        println!("note: running as root, so the mode-000 file is readable and embedded");
    } else {
        assert!(failed.contains(&"no_permission.png"));
    }
    let emb = Embeddings::load(&out).unwrap();
    let names: Vec<&str> = emb
        .rows
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap())
        .collect();
    for ok in [
        "good.png",
        "one_pixel.png",
        "gray.png",
        "rgba.png",
        "sixteen_bit.png",
        "cmyk.jpg",
    ] {
        assert!(names.contains(&ok), "{ok} should be embedded: {names:?}");
    }
    assert_eq!(summary.embedded, emb.rows.len());
    assert!(emb.data.iter().all(|x| x.is_finite()));
    // every file is accounted for: embedded or reported
    let listed = std::fs::read_dir(&c).unwrap().count() - 1; // the loop link is a folder
    assert_eq!(
        emb.rows.len()
            + failures
                .iter()
                .filter(|f| !f.reason.contains("loop"))
                .count(),
        listed
    );
    let report = std::fs::read_to_string(out.join(FAILURES_FILE)).unwrap();
    assert_eq!(report.lines().count(), failures.len());
    // every reported path is written one way: relative to the folder, like manifest rows
    for f in &failures {
        assert!(
            f.path.starts_with("MIXED/") && !f.path.starts_with('/'),
            "{f:?}"
        );
    }
    // the CMYK JPEG is converted, not garbled: its colour is close to what Pillow encoded
    let cmyk = image::open(util::fixture("cmyk.jpg")).unwrap().to_rgb8();
    let p = cmyk.get_pixel(5, 5).0;
    assert!(
        p[0] > 150 && p[1] < 200 && p[2] > 100,
        "CMYK converted to RGB: {p:?}"
    );
}

#[test]
fn second_run_reuses_unchanged_files_and_embeds_new_ones() {
    let dir = util::tempdir();
    let d = util::cells_folder(dir.path(), 5, &["A"]);
    let out = dir.path().join("out");
    let e = embedder();
    let (first, _) = embed_dir(&e, &d, &out, &()).unwrap();
    assert_eq!((first.embedded, first.reused), (5, 0));
    let before = Embeddings::load(&out).unwrap();
    util::write_cell(&d.join("A/new.png"), 9);
    util::write_cell(&d.join("A/0.png"), 3); // changed content
    let (second, _) = embed_dir(&e, &d, &out, &()).unwrap();
    assert_eq!((second.embedded, second.reused), (2, 4));
    let after = Embeddings::load(&out).unwrap();
    assert_eq!(after.rows.len(), 6);
    let row = |emb: &Embeddings, name: &str| {
        emb.row(emb.rows.iter().position(|r| r.path == name).unwrap())
            .to_vec()
    };
    assert_eq!(row(&before, "A/1.png"), row(&after, "A/1.png"));
    assert_eq!(
        row(&after, "A/0.png"),
        row(&after, "A/3.png"),
        "same content, same embedding"
    );
}

#[test]
fn model_whose_checksum_or_card_disagrees_is_refused() {
    let dir = util::tempdir();
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(util::tiny_model()).unwrap()).unwrap();
    let onnx = std::fs::read(util::fixture("tiny.onnx")).unwrap();
    // a truncated model file
    std::fs::write(dir.path().join("tiny.onnx"), &onnx[..onnx.len() - 10]).unwrap();
    std::fs::write(dir.path().join("tiny.json"), card.to_string()).unwrap();
    let err = Embedder::from_model_card(dir.path().join("tiny.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("sha256") && err.contains("tiny.onnx"), "{err}");
    // the right file, but a card that claims another dimension
    std::fs::write(dir.path().join("tiny.onnx"), &onnx).unwrap();
    let mut wrong = card.clone();
    wrong["embedding_dim"] = serde_json::json!(16);
    std::fs::write(dir.path().join("tiny.json"), wrong.to_string()).unwrap();
    let err = Embedder::from_model_card(dir.path().join("tiny.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("output shape"), "{err}");
    // a card for another input layout than the one the runtime feeds
    let mut nhwc = card.clone();
    nhwc["preprocess"]["layout"] = serde_json::json!("NHWC");
    std::fs::write(dir.path().join("tiny.json"), nhwc.to_string()).unwrap();
    let err = Embedder::from_model_card(dir.path().join("tiny.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("layout") && err.contains("NHWC") && err.contains("tiny.json"),
        "{err}"
    );
}

/// The card's `l2_normalized` is read: a model that says its output is not unit-length has its
/// rows normalised by the runtime, so cosine stays a dot product.
#[test]
fn a_card_that_says_its_output_is_not_normalised_gets_unit_rows() {
    let dir = util::tempdir();
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(util::tiny_model()).unwrap()).unwrap();
    card["l2_normalized"] = serde_json::json!(false);
    std::fs::copy(util::fixture("tiny.onnx"), dir.path().join("tiny.onnx")).unwrap();
    std::fs::write(dir.path().join("tiny.json"), card.to_string()).unwrap();
    let emb = Embedder::from_model_card(dir.path().join("tiny.json")).unwrap();
    let v = emb.embed_image(&util::cell_image(3, 64, 48)).unwrap();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
}

#[test]
fn explicit_gpu_without_support_is_an_error_not_a_cpu_run() {
    let opts = EmbedOptions {
        device: "cuda".parse().unwrap(),
        ..Default::default()
    };
    let err = Embedder::new(&util::tiny_model(), &opts)
        .err()
        .expect("no CUDA here");
    let err = cellspace_core::error_text(&err);
    // the provider, and why: this build lacks it (a CUDA build here lacks the GPU)
    assert!(
        err.contains("CUDA execution provider could not start"),
        "{err}"
    );
    if !runtime::ep::compiled_labels().contains(&"CUDA") {
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}

#[test]
fn devices_pipes_and_huge_files_are_refused_without_reading_them() {
    let dir = util::tempdir();
    let fifo = dir.path().join("cell.jpeg");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let sparse = dir.path().join("sparse.jpeg");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 * 1024 * 1024 * 1024)
        .unwrap();
    // each on its own thread: a read that blocked (a FIFO) would fail the test, not hang it
    let (tx, rx) = std::sync::mpsc::channel();
    let mut paths = vec![std::path::PathBuf::from("/dev/zero"), sparse];
    if made.is_ok_and(|s| s.success()) {
        paths.push(fifo);
    }
    let n = paths.len();
    for p in paths {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = embedder()
                .embed_path(&p)
                .map(|_| ())
                .map_err(|e| e.to_string());
            tx.send((p, r)).unwrap();
        });
    }
    for _ in 0..n {
        let (p, r) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("refused at once, never blocked");
        let err = r.expect_err("refused");
        assert!(
            err.contains(&p.display().to_string()),
            "names the file: {err}"
        );
        assert!(
            err.contains("not a regular file") || err.contains("too large"),
            "{err}"
        );
    }
}

#[test]
fn corrupted_embeddings_are_detected_never_reused_or_indexed() {
    let dir = util::tempdir();
    let d = util::cells_folder(dir.path(), 6, &["A"]);
    let out = dir.path().join("out");
    let e = embedder();
    embed_dir(&e, &d, &out, &()).unwrap();
    let good = Embeddings::load(&out).unwrap();
    // flip bits in the rows (past the 128-byte header)
    let npy = out.join("embeddings.npy");
    let mut bytes = std::fs::read(&npy).unwrap();
    for b in bytes[130..170].iter_mut() {
        *b ^= 0x5a;
    }
    std::fs::write(&npy, &bytes).unwrap();
    let err = Embeddings::load(&out).err().expect("detected").to_string();
    assert!(
        err.contains("embeddings.npy") && err.contains("checksum"),
        "{err}"
    );
    let idx = index::ops::build_from_embeddings(
        &out,
        &index::embed::model_ref(&e),
        index::IndexParams::default(),
        Default::default(),
    );
    assert!(idx.is_err(), "a corrupted folder is never indexed");
    // the next embed does not reuse it: everything is embedded again, correctly
    let (s, _) = embed_dir(&e, &d, &out, &()).unwrap();
    assert_eq!((s.embedded, s.reused), (6, 0));
    assert_eq!(Embeddings::load(&out).unwrap().data, good.data);
    // rows that are not unit-length are refused even when the checksum is made to match
    let mut data = good.data.clone();
    data[..good.dim].iter_mut().for_each(|x| *x *= 2.0);
    let sha = runtime::npy::write(&npy, &data, good.dim).unwrap();
    let state = out.join("embed.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    st["embeddings_sha256"] = serde_json::json!(sha);
    std::fs::write(&state, st.to_string()).unwrap();
    let err = Embeddings::load(&out).err().expect("refused").to_string();
    assert!(
        err.contains("row 0") && err.contains("unit-length"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named_once_with_its_os_error_once() {
    let out = std::process::Command::new(util::bin("runtime"))
        .args(["embed-one", "/no/such/cell.png", "--model"])
        .arg(util::tiny_model())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    assert!(err.contains("/no/such/cell.png"), "{err}");
}

#[test]
fn a_corrupt_model_is_named_not_blamed_on_the_cpu() {
    let dir = util::tempdir();
    let junk = b"this is not an ONNX graph at all".repeat(10);
    std::fs::write(dir.path().join("broken.onnx"), &junk).unwrap();
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(util::tiny_model()).unwrap()).unwrap();
    card["onnx_file"] = serde_json::json!("broken.onnx");
    card["onnx_sha256"] = serde_json::json!(cellspace_core::sha256_hex(&junk));
    std::fs::write(dir.path().join("broken.json"), card.to_string()).unwrap();
    let err = Embedder::new(&dir.path().join("broken.json"), &Default::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("broken.onnx") && err.contains("cannot load this model"),
        "{err}"
    );
    assert!(!err.contains("execution provider could not start"), "{err}");
}

#[test]
fn two_runs_never_write_one_output_folder() {
    let dir = util::tempdir();
    let d = dir.path().join("cells");
    util::write_cell(&d.join("A/0.png"), 0);
    let out = dir.path().join("out");
    // a run in progress holds the lock (here: this test holds it as that run would)
    let held =
        cellspace_core::atomic::OutputLock::acquire(&out.join(runtime::folder::LOCK_FILE), &out)
            .unwrap();
    let err = embed_dir(&embedder(), &d, &out, &())
        .expect_err("refused while locked")
        .to_string();
    assert!(err.contains("another run"), "{err}");
    drop(held);
    embed_dir(&embedder(), &d, &out, &()).expect("free once the other run is done");
}

#[test]
fn file_names_that_are_not_utf8_stay_distinct_through_embed_and_index() {
    use std::os::unix::ffi::OsStrExt;
    let dir = util::tempdir();
    let d = dir.path().join("cells");
    let names: [&[u8]; 2] = [b"a\xff.png", b"a\xfe.png"];
    for (i, n) in names.iter().enumerate() {
        util::write_cell(&d.join("A").join(std::ffi::OsStr::from_bytes(n)), i as u32);
    }
    let out = dir.path().join("out");
    let e = embedder();
    let (s, failures) = embed_dir(&e, &d, &out, &()).unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(s.embedded, 2);
    let emb = Embeddings::load(&out).unwrap();
    let paths: Vec<&str> = emb.rows.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["A/a%FE.png", "A/a%FF.png"],
        "two rows, told apart"
    );
    let idx = index::ops::build_from_embeddings(
        &out,
        &index::embed::model_ref(&e),
        index::IndexParams::default(),
        Default::default(),
    )
    .unwrap();
    for r in idx.rows() {
        let p = cellspace_core::dataset::decode_path(&r.path);
        assert!(p.is_file(), "{} reads back as the real file", r.path);
    }
}

#[test]
fn a_failed_save_keeps_the_previous_rows_consistent_and_reusable() {
    let dir = util::tempdir();
    let d = util::cells_folder(dir.path(), 5, &["A"]);
    let out = dir.path().join("out");
    let e = embedder();
    embed_dir(&e, &d, &out, &()).unwrap();
    for i in 5..8 {
        util::write_cell(&d.join("A").join(format!("{i}.png")), i);
    }
    // the manifest cannot be written this time (as on a full disk): a folder sits where its
    // temporary file goes
    let blocker = out.join(format!(".manifest.jsonl.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&blocker).unwrap();
    assert!(embed_dir(&e, &d, &out, &()).is_err());
    let kept = Embeddings::load(&out).expect("the previous save is intact, not half replaced");
    assert_eq!(kept.rows.len(), 5);
    std::fs::remove_dir(&blocker).unwrap();
    let (s, _) = embed_dir(&e, &d, &out, &()).unwrap();
    assert_eq!(
        (s.reused, s.embedded),
        (5, 3),
        "the earlier rows are reused"
    );
    // a stale temporary file of a killed run is cleared, not left to fill the disk
    let stale = out.join(".embeddings.npy.tmp-999999");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    embed_dir(&e, &d, &out, &()).unwrap();
    assert!(!stale.exists());
}

/// `runtime embed-one` said nothing about a field outside what the model knows (only
/// `runtime embed`, `index query` and the page warned): a single-image user got no warning.
#[test]
fn embed_one_warns_about_a_field_out_of_range() {
    let Some(train) = util::real_data("embed_one_warns_about_a_field_out_of_range") else {
        return;
    };
    let (entries, _) = cellspace_core::dataset::list_images(&train).unwrap();
    let img = image::open(&entries[0].path).unwrap().to_rgb8();
    let dir = util::tempdir();
    let plain = dir.path().join("plain.png");
    img.save(&plain).unwrap();
    // a field of one colour with a nucleus: no plasma and no red cells to standardise by
    let flat = image::RgbImage::from_fn(320, 240, |x, y| {
        let d = (x as f32 - 160.0).hypot(y as f32 - 120.0);
        if d < 20.0 {
            image::Rgb([90, 40, 160])
        } else {
            image::Rgb([200, 150, 160])
        }
    });
    let odd = dir.path().join("odd.png");
    flat.save(&odd).unwrap();
    let model = util::root().join("models/cellspace.onnx");
    let run = |p: &Path| {
        let out = std::process::Command::new(util::bin("runtime"))
            .arg("embed-one")
            .arg(p)
            .arg("--model")
            .arg(&model)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (v, err) = run(&plain);
    assert!(v["warning"].is_null(), "{}", v["warning"]);
    assert!(!err.contains("warning"), "{err}");
    assert!(v["window"]["side"].as_u64().is_some(), "{}", v["window"]);
    let (v, err) = run(&odd);
    let w = v["warning"].as_str().unwrap_or_default();
    // all of it one colour but the nucleus: no plasma to split from red cells, or no red cells
    assert!(
        w.contains("no-red-cells") || w.contains("no-background") || w.contains("range"),
        "{} {}",
        v["warning"],
        v["window"]
    );
    assert!(err.contains("warning") && err.contains("odd.png"), "{err}");
    // a real field from a grey camera: its grey discs are not taken for red cells
    let grey = image::DynamicImage::ImageRgb8(img.clone())
        .grayscale()
        .to_rgb8();
    let grey_path = dir.path().join("grey.png");
    grey.save(&grey_path).unwrap();
    let (v, _) = run(&grey_path);
    let w = v["warning"].as_str().unwrap_or_default();
    assert!(
        w.contains("no-red-cells"),
        "{} {}",
        v["warning"],
        v["window"]
    );
}

/// One image the model returns NaN for failed its whole batch: every file of it was reported
/// with the same "image K of the batch" and none embedded, run after run. Now the batch's
/// files are embedded again one by one: only the bad one fails, named, with its reason.
#[test]
fn one_image_with_a_non_finite_embedding_fails_alone() {
    let dir = util::tempdir();
    let d = dir.path().join("cells");
    std::fs::create_dir_all(&d).unwrap();
    for (name, grey) in [("a.png", 200u8), ("b_dark.png", 20), ("c.png", 180)] {
        image::RgbImage::from_pixel(32, 32, image::Rgb([grey, grey, grey]))
            .save(d.join(name))
            .unwrap();
    }
    let emb = Embedder::new(
        &util::fixture("nan_on_dark.json"),
        &EmbedOptions {
            device: runtime::Device::CPU,
            ..Default::default()
        },
    )
    .unwrap();
    let out = dir.path().join("out");
    let (summary, failures) = embed_dir(&emb, &d, &out, &()).unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].path.ends_with("b_dark.png"), "{failures:?}");
    assert!(
        failures[0].reason.contains("not a finite number"),
        "{failures:?}"
    );
    assert_eq!(
        summary.embedded, 2,
        "the good files of the batch are embedded"
    );
    let e = Embeddings::load(&out).unwrap();
    assert_eq!(e.rows.len(), 2);
    assert!(e.data.iter().all(|x| x.is_finite()));
}
