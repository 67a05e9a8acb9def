//! The command-line edge the three tools share (feature `cli`, so the library itself stays
//! free of CLI types): parsing with [`crate::outcome`]'s exit-code policy, and the `-o/--json`
//! pair of every command that prints a result.

use crate::outcome;
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit of a command that ran: its own code, or [`outcome::ERROR`] with the error (and its
/// causes, `{:#}`) on stderr.
pub fn finish<E: std::fmt::Display>(result: std::result::Result<u8, E>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(outcome::ERROR)
        }
    }
}

/// What the libraries report (they never print): each message on stderr as it is, a warning
/// prefixed `warning: `. `CELLSPACE_LOG=warn` (or `error`, `off`) quiets the progress.
struct StderrLog;

impl StderrLog {
    fn install() {
        static LOG: StderrLog = StderrLog;
        let level = match std::env::var("CELLSPACE_LOG").as_deref() {
            Ok("off") => log::LevelFilter::Off,
            Ok("error") => log::LevelFilter::Error,
            Ok("warn") => log::LevelFilter::Warn,
            Ok("debug") => log::LevelFilter::Debug,
            _ => log::LevelFilter::Info,
        };
        if log::set_logger(&LOG).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        match r.level() {
            log::Level::Warn => eprintln!("warning: {}", r.args()),
            log::Level::Error => eprintln!("error: {}", r.args()),
            _ => eprintln!("{}", r.args()),
        }
    }

    fn flush(&self) {}
}

/// The tools' progress bar on stderr for what the libraries report ([`crate::progress`]);
/// indicatif hides it when stderr is not a terminal (a log file gets the libraries' `log`
/// lines instead).
pub fn terminal_bar() -> impl crate::progress::Progress {
    struct Bar(indicatif::ProgressBar);
    impl crate::progress::Progress for Bar {
        fn start(&self, stage: &str, total: usize, done: usize) {
            self.0.reset();
            self.0.set_length(total as u64);
            self.0.set_position(done as u64);
            self.0.set_message(stage.to_string());
        }
        fn advance(&self, n: usize) {
            self.0.inc(n as u64);
        }
        fn status(&self, line: &str) {
            self.0.set_message(line.to_string());
        }
        fn finish(&self) {
            self.0.finish_and_clear();
        }
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    Bar(bar)
}

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
/// The libraries' progress and warnings (the `log` facade) are printed on stderr.
pub fn main<C: clap::Parser, E: std::fmt::Display>(
    run: impl FnOnce(C) -> std::result::Result<u8, E>,
) -> ExitCode {
    StderrLog::install();
    match C::try_parse() {
        Ok(cli) => finish(run(cli)),
        Err(e) => {
            let _ = e.print();
            outcome::usage(e.use_stderr())
        }
    }
}

/// Text from a file name, a sidecar or an image, made safe to print to a terminal: control
/// characters (escape sequences, carriage returns, bells) are written as `\u{..}` so they can
/// neither recolour, rewrite nor hide what the terminal shows.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
#[test]
fn case_16_control_characters_are_escaped_for_the_terminal() {
    assert_eq!(shown("NEUTROPHIL/a.png"), "NEUTROPHIL/a.png");
    let evil = "a\u{1b}[2J\u{1b}]0;owned\u{7}b\rc";
    let out = shown(evil);
    assert!(!out.chars().any(char::is_control), "{out:?}");
    assert!(out.contains("\\u{1b}") && out.starts_with('a') && out.ends_with('c'));
}

/// A flag whose values are a registry's names (`--device`, `--loss`): clap lists them in
/// `--help` and refuses others; each accepted name is turned into `T` by its `FromStr`.
pub fn by_name<T>(names: Vec<&'static str>) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names)
        .map(|s| s.parse::<T>().expect("a listed name parses"))
}

/// Number flags checked when the command line is parsed, so that a NaN, an infinity or an
/// out-of-range value is a usage error naming the flag, never a run that trains on it.
pub mod number {
    use std::str::FromStr;

    fn parse<T: FromStr + Into<f64> + Copy>(
        s: &str,
        ok: impl Fn(f64) -> bool,
        what: &str,
    ) -> Result<T, String> {
        match s.trim().parse::<T>() {
            Ok(x) if x.into().is_finite() && ok(x.into()) => Ok(x),
            _ => Err(format!("'{s}' is not {what}")),
        }
    }

    /// A finite number above 0.
    pub fn positive_f32(s: &str) -> Result<f32, String> {
        parse(s, |x| x > 0.0, "a number above 0")
    }

    /// A finite number above 0.
    pub fn positive_f64(s: &str) -> Result<f64, String> {
        parse(s, |x| x > 0.0, "a number above 0")
    }

    /// A finite number of 0 or more.
    pub fn non_negative_f32(s: &str) -> Result<f32, String> {
        parse(s, |x| x >= 0.0, "a number of 0 or more")
    }

    /// A finite number.
    pub fn finite_f32(s: &str) -> Result<f32, String> {
        parse(s, |_| true, "a finite number")
    }

    /// A share: 0 or more and below 1.
    pub fn share_f64(s: &str) -> Result<f64, String> {
        parse(
            s,
            |x| (0.0..1.0).contains(&x),
            "a share from 0 up to (not including) 1",
        )
    }

    /// A share: 0 or more and below 1.
    pub fn share_f32(s: &str) -> Result<f32, String> {
        parse(
            s,
            |x| (0.0..1.0).contains(&x),
            "a share from 0 up to (not including) 1",
        )
    }

    /// A share of the field: above 0, at most 1.
    pub fn field_share_f32(s: &str) -> Result<f32, String> {
        parse(s, |x| x > 0.0 && x <= 1.0, "a share above 0 and at most 1")
    }

    /// A pixel size in µm: a finite number above 0.
    pub fn pixel_size_um(s: &str) -> Result<f32, String> {
        parse(s, |x| x > 0.0, "a pixel size in µm (a number above 0)")
    }

    /// A count of 1 or more.
    pub fn at_least_one(s: &str) -> Result<usize, String> {
        match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("'{s}' is not a whole number of 1 or more")),
        }
    }

    /// A count of 2 or more (an HNSW graph's links per node).
    pub fn at_least_two(s: &str) -> Result<usize, String> {
        match s.trim().parse::<usize>() {
            Ok(n) if n >= 2 => Ok(n),
            _ => Err(format!("'{s}' is not a whole number of 2 or more")),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn non_finite_and_out_of_range_numbers_are_refused() {
            for bad in ["nan", "NaN", "inf", "-inf", "0", "-1", "x", ""] {
                assert!(positive_f64(bad).is_err(), "{bad}");
                assert!(positive_f32(bad).is_err(), "{bad}");
            }
            assert_eq!(positive_f64("2e-3"), Ok(2e-3));
            assert!(non_negative_f32("nan").is_err());
            assert_eq!(non_negative_f32("0"), Ok(0.0));
            assert!(finite_f32("inf").is_err());
            assert!(share_f64("1").is_err());
            assert_eq!(share_f64("0"), Ok(0.0));
            assert!(field_share_f32("0").is_err());
            assert_eq!(field_share_f32("1"), Ok(1.0));
            assert!(at_least_one("0").is_err());
            assert_eq!(at_least_one("3"), Ok(3));
        }
    }
}
