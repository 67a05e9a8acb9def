//! A microscope calibrated once: single images embedded with `--calibration` (the embed.json
//! of a folder of that microscope's fields) get exactly the preprocessing the folder's fields
//! got, so a lab's single query is sized and standardised as its atlas was.

mod util;

use std::path::Path;
use std::process::Command;

/// Before `--calibration`, a single image had no folder: it was measured alone, so under a
/// paler stain its colour went unstandardised where its folder's did not.
#[test]
fn a_single_image_with_its_folder_s_calibration_is_embedded_as_in_the_folder() {
    let Some(train) = util::real_data("a_single_image_with_its_folder_s_calibration") else {
        return;
    };
    let subset = util::real_subset(&train, 3, 7);
    let dir = util::tempdir();
    let pale = dir.path().join("pale");
    let shift = cellspace_core::shift::parse("sat:0.6").unwrap();
    let (entries, _) = cellspace_core::dataset::list_images(subset.path()).unwrap();
    for e in &entries {
        let img = image::open(&e.path).unwrap().to_rgb8();
        let name = e
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".jpeg", ".png");
        std::fs::create_dir_all(&pale).unwrap();
        shift[0]
            .apply(&img, (160.0, 120.0))
            .save(pale.join(name))
            .unwrap();
    }
    let model = util::root().join("models/cellspace.onnx");
    let out = dir.path().join("pale.embeddings");
    util::run_ok(
        Command::new(util::bin("runtime"))
            .arg("embed")
            .arg(&pale)
            .arg("-o")
            .arg(&out)
            .arg("--model")
            .arg(&model),
    );
    let folder = cellspace_core::embeddings::Embeddings::load(&out).unwrap();
    assert!(
        folder.state.scale.calibration.is_some(),
        "12 fields calibrate a folder"
    );
    let one = |extra: &[&Path]| {
        let mut cmd = Command::new(util::bin("runtime"));
        cmd.arg("embed-one")
            .arg(pale.join(&folder.rows[0].path))
            .arg("--model")
            .arg(&model);
        for p in extra {
            cmd.arg("--calibration").arg(p);
        }
        let v: serde_json::Value = serde_json::from_slice(&util::run_ok(&mut cmd).stdout).unwrap();
        let e: Vec<f32> = v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        (e, v["window"].clone())
    };
    let row = &folder.data[..folder.dim];
    let cos = |a: &[f32]| a.iter().zip(row).map(|(x, y)| x * y).sum::<f32>();
    let (calibrated, window) = one(&[&out.join("embed.json")]);
    // alone, the same file is measured on its own and comes out otherwise (0.975 with the
    // od-anchors model, when this test was written)
    let alone = cos(&one(&[]).0);
    assert!(alone < 0.999, "alone: cos {alone}");
    assert!(
        cos(&calibrated) > 0.9999,
        "cos {} (window {window} vs {:?})",
        cos(&calibrated),
        folder.rows[0].window
    );
    // the lab page and its API: uploads are embedded as the calibrated folder's fields, and a
    // pixel size is honoured (`index serve` ignored both before)
    let idx = dir.path().join("pale.index");
    util::run_ok(
        Command::new(util::bin("index"))
            .arg("build")
            .arg(&out)
            .arg("-o")
            .arg(&idx),
    );
    let upload = std::fs::read(pale.join(&folder.rows[0].path)).unwrap();
    let served_window = |flag: &str, value: &std::ffi::OsStr| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Command::new(util::bin("index"))
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "-i"])
            .arg(&idx)
            .arg(flag)
            .arg(value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = (0..300).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::net::TcpStream::connect(addr).is_ok()
        });
        let answer = up.then(|| util::http(addr, "POST", "/api/query?k=3", &upload));
        let _ = server.kill();
        let _ = server.wait();
        let (status, body) = answer.expect("server started");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["query_window"].clone()
    };
    let w = served_window("--calibration", out.join("embed.json").as_os_str());
    let want = serde_json::to_value(folder.rows[0].window.as_ref().unwrap()).unwrap();
    assert_eq!(w["side"], want["side"], "{w} vs {want}");
    assert_eq!(
        (&w["x"], &w["y"]),
        (&want["x"], &want["y"]),
        "{w} vs {want}"
    );
    // 0.1 µm per pixel: red cells of 75 px, a window of 2.33 of them
    let w = served_window("--pixel-size", std::ffi::OsStr::new("0.1"));
    let side = w["side"].as_u64().unwrap();
    assert!((170..=180).contains(&side), "{w}");
    // a file that is no calibration is refused, naming it
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"rbc_px\": \"big\"}").unwrap();
    let o = Command::new(util::bin("runtime"))
        .arg("embed-one")
        .arg(pale.join(&folder.rows[0].path))
        .arg("--model")
        .arg(&model)
        .arg("--calibration")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.json"), "{err}");
}

/// `runtime bench` timed every field measured alone (the single-image path, its red-cell
/// reading at full resolution), where `runtime embed` calibrates the folder once: it reported
/// 107 images/s end to end on TRAIN where `runtime embed` ran at 195.
#[test]
fn runtime_bench_times_a_folder_as_runtime_embed_runs_it_calibrated() {
    let Some(train) = util::real_data("runtime_bench_times_a_folder_calibrated") else {
        return;
    };
    let subset = util::real_subset(&train, 3, 11);
    let out = util::run_ok(
        Command::new(util::bin("runtime"))
            .arg("bench")
            .arg(subset.path())
            .arg("--model")
            .arg(util::root().join("models/cellspace.json"))
            .args(["--device", "cpu", "--batch-sizes", "4", "--json"]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rbc = report["calibration"]["rbc_px"].as_f64();
    assert!(
        rbc.is_some_and(|d| (d / 48.0 - 1.0).abs() < 0.15),
        "12 TRAIN fields calibrate the folder near their 48 px red cells: {report}"
    );
    assert!(report["calibration_s"].as_f64().is_some_and(|s| s > 0.0));
    assert!(
        report["rows"][0]["end_to_end_images_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}
