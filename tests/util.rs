//! Fixture helpers shared by every integration test: temp dirs, tiny generated images, the tiny
//! committed model, the real data (with an honest skip when it is absent) and the binaries.
#![allow(dead_code)]

use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// The tiny untrained model (16 px, 8-d) committed for plumbing tests.
pub fn tiny_model() -> PathBuf {
    fixture("tiny.json")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A synthetic cell: a coloured disc (hue from `seed`) on a pale background.
pub fn cell_image(seed: u32, w: u32, h: u32) -> RgbImage {
    let hue = [[150, 60, 170], [90, 40, 140], [200, 90, 120], [60, 90, 170]][(seed % 4) as usize];
    let (cx, cy, r) = (
        w as f32 / 2.0 + (seed % 7) as f32,
        h as f32 / 2.0,
        w.min(h) as f32 / 3.0,
    );
    RgbImage::from_fn(w, h, |x, y| {
        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        if d < r {
            Rgb(hue)
        } else {
            Rgb([230, 200 + (seed % 20) as u8, 210])
        }
    })
}

pub fn write_cell(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    cell_image(seed, 40, 30).save(path).unwrap();
}

/// `parent/cells/` holding `n` synthetic cells, dealt in turn to the class folders `classes`.
pub fn cells_folder(parent: &Path, n: u32, classes: &[&str]) -> PathBuf {
    let d = parent.join("cells");
    for i in 0..n {
        write_cell(
            &d.join(classes[i as usize % classes.len()])
                .join(format!("{i}.png")),
            i,
        );
    }
    d
}

/// The BCCD folder (`boxes.csv`, `fields/`), or None with the reason printed (the test then
/// skips).
pub fn bccd(test: &str) -> Option<PathBuf> {
    let p = root().join("../shared/data/bccd");
    if p.join("boxes.csv").is_file() {
        Some(p)
    } else {
        println!(
            "SKIPPED {test}: BCCD fields not found at {} (see README: Data)",
            p.display()
        );
        None
    }
}

/// The real blood-cell TRAIN folder, or None with the reason printed (the test then skips).
pub fn real_data(test: &str) -> Option<PathBuf> {
    let p = root().join("../shared/data/blood-cells/TRAIN");
    if p.is_dir() {
        Some(p)
    } else {
        println!(
            "SKIPPED {test}: real data not found at {} (see README: Data)",
            p.display()
        );
        None
    }
}

/// A folder of `per_class` real images of each class (symlinks), spread over the source groups.
pub fn real_subset(train: &Path, per_class: usize, offset: usize) -> tempfile::TempDir {
    let dir = tempdir();
    for class in ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(train.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let step = files.len() / per_class.max(1);
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..per_class {
            let src = &files[(i * step + offset) % files.len()];
            std::os::unix::fs::symlink(src, dir.path().join(class).join(src.file_name().unwrap()))
                .unwrap();
        }
    }
    dir
}

/// The shipped model on the CPU.
#[allow(dead_code)]
pub fn shipped_embedder() -> runtime::Embedder {
    runtime::Embedder::new(
        &root().join("models/cellspace.onnx"),
        &runtime::EmbedOptions {
            device: runtime::Device::CPU,
            ..Default::default()
        },
    )
    .unwrap()
}

/// An index of every image below `dir`, embedded with `embedder` (default HNSW parameters).
#[allow(dead_code)]
pub fn index_images(dir: &Path, embedder: &runtime::Embedder) -> index::CellIndex {
    index::embed::build_from_images(dir, embedder, index::IndexParams::default(), &(), None)
        .unwrap()
        .0
}

/// A workspace binary built beside the test executable (target/<profile>/NAME).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

/// Runs a command that must succeed (its stderr in the failure message); its output.
/// `index ARGS -i DIR`, its output whatever the exit.
#[allow(dead_code)]
pub fn index_cmd(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("index"))
        .args(args)
        .arg("-i")
        .arg(dir)
        .output()
        .unwrap()
}

pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A minimal HTTP/1.1 client over a plain socket (loopback tests only): (status, body).
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    http_with(addr, method, path, "", body)
}

/// [`http`] with extra header lines (each ending in `\r\n`).
pub fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// [`http_with`], with the response head (lower-cased) too.
#[allow(dead_code)] // not every test binary looks at response headers
pub fn http_full(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    // a Host line among `headers` replaces the default one
    let host = if headers.to_ascii_lowercase().contains("host:") {
        String::new()
    } else {
        format!("Host: {addr}\r\n")
    };
    // and a Content-Type line the default one
    let kind = if headers.to_ascii_lowercase().contains("content-type:") {
        ""
    } else {
        "Content-Type: application/octet-stream\r\n"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\n{host}Connection: close\r\n{kind}{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body); // the server may answer (413) before reading everything
    // read the head, then exactly Content-Length bytes (some servers keep the socket open)
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "connection closed before the response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = raw[split + 4..].to_vec();
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = out;
    }
    (status, head, body)
}

/// A headless Chromium session driven over WebDriver (chromedriver on a free port); the
/// session is deleted and the driver stopped when dropped, a failed assertion included.
pub struct Browser {
    driver: std::process::Child,
    addr: std::net::SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser, or None with the skip printed when Chromium or chromedriver is missing.
    pub fn start(test: &str) -> Option<Browser> {
        let (chromium, driver) = (
            Path::new("/usr/bin/chromium"),
            Path::new("/usr/bin/chromedriver"),
        );
        if !chromium.is_file() || !driver.is_file() {
            println!(
                "SKIPPED {test}: /usr/bin/chromium or /usr/bin/chromedriver missing (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let ready = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(ready, "chromedriver did not start");
        let profile = tempdir();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]}}}});
        let mut b = Browser {
            driver: child,
            addr,
            session: String::new(),
            _profile: profile,
        };
        b.session = b.call("POST", "/session", caps)["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        Some(b)
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (st, v) = self.call_status(method, path, body);
        assert!(st == 200, "webdriver {method} {path}: {st} {v}");
        v["value"].clone()
    }

    fn call_status(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (st, out) = http(self.addr, method, path, text.as_bytes());
        (st, serde_json::from_slice(&out).unwrap_or_default())
    }

    /// A WebDriver command of this session (`path` after `/session/ID`).
    pub fn wd(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// The ids of the elements matching a CSS selector, waiting up to 10 s for at least
    /// `min` of them.
    pub fn find(&self, css: &str, min: usize) -> Vec<String> {
        let mut found = Vec::new();
        for _ in 0..100 {
            let v = self.wd(
                "POST",
                "/elements",
                serde_json::json!({"using": "css selector", "value": css}),
            );
            found = v
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    e.as_object()
                        .and_then(|o| o.values().next())
                        .and_then(|x| x.as_str())
                        .expect("element reference")
                        .to_string()
                })
                .collect();
            if found.len() >= min {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        found
    }

    /// An element's attribute (None when it has none, or when the page has replaced the
    /// element since it was found: a page that redraws on an answer does, and a test polling
    /// it then finds it again).
    pub fn attribute(&self, id: &str, name: &str) -> Option<String> {
        let path = format!("/session/{}/element/{id}/attribute/{name}", self.session);
        let (st, v) = self.call_status("GET", &path, serde_json::Value::Null);
        if st == 404 && v["value"]["error"] == "stale element reference" {
            return None;
        }
        assert!(st == 200, "webdriver GET {path}: {st} {v}");
        v["value"].as_str().map(str::to_string)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            b"",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
