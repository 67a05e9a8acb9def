//! How a command's outcome is told, the same for `trainer`, `runtime` and `index` (and stated
//! once in the README): the exit code, and where its result goes.
//!
//! Exit codes: [`OK`] everything was done; [`PARTIAL`] part was done and the rest is named on
//! stderr (files that could not be embedded, paths not in the index, an interrupted run that
//! saved its progress); [`ERROR`] nothing was done (the error is on stderr, and no output was
//! replaced); [`USAGE`] the command line itself was wrong (`--help` says how).
//!
//! Results: a command that prints a result prints it on stdout (JSON with `--json`), or writes
//! it to `-o/--out FILE` atomically; progress, tables and warnings go to stderr.

use crate::Result;
use serde::Serialize;
use std::path::Path;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const PARTIAL: u8 = 2;
/// BSD's `EX_USAGE`: not 2, which is [`PARTIAL`].
pub const USAGE: u8 = 64;

/// The exit of a command line that did not parse: [`USAGE`], or [`OK`] for `--help` and
/// `--version` (which "fail" to parse by design).
pub fn usage(is_error: bool) -> std::process::ExitCode {
    std::process::ExitCode::from(if is_error { USAGE } else { OK })
}

/// Print `value` as pretty JSON on stdout, or write it to `out` atomically.
pub fn emit_json(out: Option<&Path>, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("results serialise") + "\n";
    emit_text(out, &text)
}

/// Print `text` on stdout, or write it to `out` atomically.
pub fn emit_text(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => crate::atomic::write_atomic(p, text.as_bytes()),
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            // a closed pipe (`| head`) is not an error of ours
            let _ = stdout.write_all(text.as_bytes());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_go_to_a_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        super::emit_json(Some(&p), &serde_json::json!({"k": 1})).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["k"], 1);
        assert_ne!(super::USAGE, super::PARTIAL);
    }
}
