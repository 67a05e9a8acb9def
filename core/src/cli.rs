//! The command-line edge the three tools share (feature `cli`, so the library itself stays
//! free of CLI types): parsing with [`crate::outcome`]'s exit-code policy, and the `-o/--json`
//! pair of every command that prints a result.

use crate::outcome;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where a command's result goes (the same on every command that prints one).
#[derive(clap::Args, Debug)]
pub struct Report {
    /// Write the result to this file (atomically) instead of stdout.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// The result as JSON (this command's only form where it has no text form).
    #[arg(long)]
    pub json: bool,
}

/// A tool's `main`: parse the command line once into `C`, run it, and exit by the policy of
/// [`outcome`] (a command line that does not parse is [`outcome::USAGE`]; `--help` is OK).
pub fn main<C: clap::Parser, E: std::fmt::Display>(
    run: impl FnOnce(C) -> std::result::Result<u8, E>,
) -> ExitCode {
    match C::try_parse() {
        Ok(cli) => outcome::finish(run(cli)),
        Err(e) => {
            let _ = e.print();
            outcome::usage(e.use_stderr())
        }
    }
}
