//! Finding and loading `libonnxruntime` (ort's `load-dynamic`): nothing is linked or downloaded
//! at build time. Looked for in order: `$ORT_DYLIB_PATH`; beside the executable (or its `lib/`);
//! `.ort/lib/` of the workspace (what `scripts/setup-ort.sh` installs), walking up from the
//! executable and the current directory. Otherwise a clear error says how to install it.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The onnxruntime version this build's API level (`api-31`) was checked against.
pub const ORT_VERSION: &str = "1.31.1";
const LIB_NAMES: [&str; 2] = ["libonnxruntime.so.1.31.1", "libonnxruntime.so"];

/// Where the library is looked for, in order (existing or not).
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(d) = &exe_dir {
        for name in LIB_NAMES {
            out.push(d.join(name));
            out.push(d.join("lib").join(name));
        }
    }
    let cwd = std::env::current_dir().ok();
    for start in [exe_dir, cwd].into_iter().flatten() {
        for dir in start.ancestors() {
            out.push(dir.join(".ort/lib").join(LIB_NAMES[0]));
        }
    }
    out
}

/// The library file that will be loaded.
pub fn locate() -> Result<PathBuf> {
    let c = candidates();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::LibraryPathMissing(p))
        };
    }
    c.into_iter()
        .find(|p| p.is_file())
        .ok_or(Error::LibraryNotFound)
}

/// Why onnxruntime could not start from a library file (ort's load or environment error).
pub type LoadError = Arc<dyn std::error::Error + Send + Sync>;

static ENV: OnceLock<(
    PathBuf,
    std::result::Result<ort::environment::Environment, LoadError>,
)> = OnceLock::new();

/// The process's one onnxruntime environment (loaded on first use) and the library's path.
/// A library not found is looked for again at the next call; one found but refused by
/// onnxruntime stays refused for the process (ort loads a library once).
pub fn environment() -> Result<(&'static ort::environment::Environment, &'static Path)> {
    let (path, loaded) = match ENV.get() {
        Some(done) => done,
        None => {
            let path = locate()?;
            ENV.get_or_init(|| {
                let loaded = match ort::init_from(&path) {
                    Err(e) => Err(Arc::new(e) as LoadError),
                    Ok(b) => b
                        .with_name("cellspace")
                        .build()
                        .map_err(|e| Arc::new(e) as LoadError),
                };
                (path, loaded)
            })
        }
    };
    loaded
        .as_ref()
        .map(|env| (env, path.as_path()))
        .map_err(|source| Error::Library {
            path: path.clone(),
            source: source.clone(),
        })
}
