//! Replacing an index directory while others read it.
//!
//! A save writes the new index into `.NAME.tmp-PID` beside it, then swaps it in with two
//! renames (`NAME` to `.NAME.old-PID`, the new one to `NAME`). A reader that opened `NAME`'s
//! files one by one across those renames read half of each index ("rows.jsonl: content does
//! not match the manifest"), or found no index at all between them, and could even "recover"
//! the previous index back while the save was finishing. So the renames hold an exclusive
//! lock on `.NAME.swap`, and opening an index holds a shared one: readers see the index
//! before or after an edit, and an edit waits only for opens in progress, not for queries
//! (an opened index is in memory, or holds its files open).
//!
//! The lock is advisory and best effort: where `.NAME.swap` cannot be created (a read-only
//! share), readers go without it.

use std::fs::File;
use std::path::{Path, PathBuf};

/// A held lock on an index's `.NAME.swap`, released when dropped.
pub struct SwapLock {
    _file: File,
}

impl SwapLock {
    /// Wait for an exclusive lock (a save's renames).
    pub fn exclusive(dir: &Path) -> Option<Self> {
        let file = open(dir)?;
        file.lock().ok()?;
        Some(Self { _file: file })
    }

    /// [`SwapLock::exclusive`] where a save has been before (a recovery): a mistyped index
    /// path gets no lock file made beside it.
    pub fn exclusive_if_saved(dir: &Path) -> Option<Self> {
        if !lock_path(dir).exists() {
            return None;
        }
        Self::exclusive(dir)
    }

    /// Wait for a shared lock (an open) where a save has been: every save makes the lock file
    /// before its renames, and a mistyped index path gets none made beside it.
    pub fn shared_if_saved(dir: &Path) -> Option<Self> {
        if !lock_path(dir).exists() {
            return None;
        }
        let file = open(dir)?;
        file.lock_shared().ok()?;
        Some(Self { _file: file })
    }
}

/// `.NAME.swap` beside the index `dir`.
fn lock_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    dir.with_file_name(format!(".{name}.swap"))
}

fn open(dir: &Path) -> Option<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(dir))
        .ok()
}

/// Remove what killed saves of the index `NAME` left beside it: `.NAME.tmp-PID` folders (half
/// written) and, when the index itself is there, `.NAME.old-PID` ones (the previous index, no
/// longer needed). Only folders of processes that are gone: a save running now is left alone.
pub(crate) fn remove_stale_saves(parent: &Path, name: &str, index_exists: bool) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let (tmp, old) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = match (file.strip_prefix(&tmp), file.strip_prefix(&old)) {
            (Some(pid), _) => pid,
            (None, Some(pid)) if index_exists => pid,
            _ => continue,
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether process `pid` runs (Linux: /proc); elsewhere, assumed so (nothing is removed).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}
