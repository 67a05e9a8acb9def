//! Finding and loading `libonnxruntime` (ort's `load-dynamic`): nothing is linked or downloaded
//! at build time. Looked for in order: `$ORT_DYLIB_PATH`; beside the executable (or its `lib/`);
//! `.ort/lib/` of the workspace (what `scripts/setup-ort.sh` installs), walking up from the
//! executable and the current directory. Otherwise a clear error says how to install it.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
            Err(Error::Library(format!(
                "ORT_DYLIB_PATH={} does not exist",
                p.display()
            )))
        };
    }
    c.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Library(format!(
            "libonnxruntime {ORT_VERSION} not found. Install it with `scripts/setup-ort.sh` (takes the PyPI wheel onnxruntime=={ORT_VERSION}; CELLSPACE_ORT_GPU=1 for onnxruntime-gpu), put libonnxruntime.so* beside the executable, or set ORT_DYLIB_PATH to the library file"
        ))
    })
}

static ENV: OnceLock<std::result::Result<(ort::environment::Environment, PathBuf), String>> =
    OnceLock::new();

/// The process's one onnxruntime environment (loaded on first use) and the library's path.
pub fn environment() -> Result<&'static (ort::environment::Environment, PathBuf)> {
    ENV.get_or_init(|| {
        let path = locate().map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let env = builder
            .with_name("cellspace")
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((env, path))
    })
    .as_ref()
    .map_err(|e| Error::Library(e.clone()))
}
