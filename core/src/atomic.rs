//! Atomic file writes: a half-written model, card, index or embedding file never replaces a
//! good one. Every file the workspace writes goes through this module: [`write_atomic`] and
//! [`write_json`] for one file, [`write_all_atomic`] for files that must change together (an
//! embeddings folder); a whole index directory is replaced by `index::swap`.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary sibling a file is written to before it is renamed into place.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `bytes` to `path` through a temporary file, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with a closure that streams into the file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Write several files as one change: each is written in full (and synced) beside its
/// destination first, and only when all are written are they renamed into place. A failure
/// (a full disk) removes what was staged and leaves every previous file as it was, so a
/// folder of files that must agree never ends half old, half new. Renames need no space.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    for (path, bytes) in files {
        let tmp = temp_path(path);
        let r = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            for (t, _) in &staged {
                let _ = std::fs::remove_file(t);
            }
            return Err(Error::io(path, e));
        }
        staged.push((tmp, path));
    }
    for (tmp, path) in &staged {
        std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Remove temporary files that killed writers left in `dir` (`.NAME.tmp-PID`); call it only
/// while holding the folder's [`OutputLock`]. They would otherwise fill a nearly full disk.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") && e.path().is_file() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Write a value as pretty JSON, atomically (run configs, cards, manifests, states).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("value serialises to JSON");
    write_atomic(path, text.as_bytes())
}

/// An exclusive lock on an output (an embeddings folder, an index), held while a run writes
/// it: two runs into one `-o` would pair one's vectors with the other's manifest. The lock is
/// the OS's advisory lock on `path` (a small file, created if needed), released when the value
/// is dropped or the process dies, so a killed run never leaves a stale lock behind.
#[derive(Debug)]
pub struct OutputLock {
    _file: std::fs::File,
}

/// How long [`OutputLock::acquire`] waits for a lock that is held. A lock is the open file's,
/// and a process spawned by another thread holds a copy of every open file until it has
/// started its program: a lock just released can stay taken for those milliseconds (seen
/// once in the test suite, which spawns the tools beside its library calls). A run writing
/// the output holds it far longer, and is still refused.
pub const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

impl OutputLock {
    /// Take the lock on `path`, waiting at most [`LOCK_GRACE`]; `what` names the output in the
    /// error.
    pub fn acquire(path: &Path, what: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_GRACE => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::invalid(
                        what,
                        "another run is writing it now (locked): wait for it to finish, or write elsewhere",
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
            }
        }
    }
}

/// sha256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    // streamed: checking a multi-gigabyte vector file must not hold it in memory
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok(format!("{:x}", sha.finalize()))
}

/// Current UTC time as RFC 3339, without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // civil-from-days (Howard Hinnant)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_is_locked_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("out/.lock");
        let first = OutputLock::acquire(&lock, &dir.path().join("out")).unwrap();
        let err = OutputLock::acquire(&lock, &dir.path().join("out"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("another run") && err.contains("out"), "{err}");
        drop(first);
        OutputLock::acquire(&lock, &dir.path().join("out")).expect("free again");
    }

    #[test]
    fn a_lock_released_within_the_grace_is_taken_and_a_held_one_is_refused() {
        // what a process spawned by another thread does: it holds the lock a moment longer
        let dir = tempfile::tempdir().unwrap();
        let (lock, out) = (dir.path().join("out/.lock"), dir.path().join("out"));
        let first = OutputLock::acquire(&lock, &out).unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(LOCK_GRACE / 5);
            drop(first);
        });
        let started = std::time::Instant::now();
        OutputLock::acquire(&lock, &out).expect("released within the grace");
        assert!(started.elapsed() < LOCK_GRACE);
        holder.join().unwrap();
        let _held = OutputLock::acquire(&lock, &out).unwrap();
        let started = std::time::Instant::now();
        assert!(
            OutputLock::acquire(&lock, &out).is_err(),
            "a held lock is refused"
        );
        assert!(
            started.elapsed() >= LOCK_GRACE,
            "after the grace, not at once"
        );
    }

    #[test]
    fn failed_write_keeps_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.json");
        write_atomic(&p, b"good").unwrap();
        let r = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );
    }
}
