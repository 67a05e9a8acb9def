//! Where long work says how far it is: decoding a training folder, an epoch's batches,
//! embedding a folder.
//!
//! The libraries draw nothing and print nothing. They report to a [`Progress`] that their
//! caller passes; the three tools pass a terminal bar ([`crate::cli::terminal_bar`], behind the
//! `cli` feature), a lab tool or a cluster worker passes its own, and `&()` shows nothing.

/// Receives the progress of a long piece of work, one stage at a time.
pub trait Progress: Sync {
    /// A stage named `stage` (for example "decoding", "epoch 2/4") of `total` steps begins,
    /// `done` of them already done (a resumed epoch starts part-way).
    fn start(&self, _stage: &str, _total: usize, _done: usize) {}
    /// `n` more steps are done.
    fn advance(&self, _n: usize) {}
    /// A short line about the current step (a loss, a speed), shown beside the count.
    fn status(&self, _line: &str) {}
    /// The stage is over (finished, interrupted or failed).
    fn finish(&self) {}
}

/// No progress shown.
impl Progress for () {}

#[cfg(test)]
mod tests {
    use super::Progress;
    use std::sync::Mutex;

    /// A recorder, as a caller of the libraries would write one.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Progress for Seen {
        fn start(&self, stage: &str, total: usize, done: usize) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{stage} {done}/{total}"));
        }
        fn advance(&self, n: usize) {
            self.0.lock().unwrap().push(format!("+{n}"));
        }
    }

    #[test]
    fn a_caller_sees_what_it_implements_and_the_rest_is_silent() {
        let seen = Seen::default();
        let p: &dyn Progress = &seen;
        p.start("epoch 1/2", 10, 3);
        p.advance(2);
        p.status("loss 0.5");
        p.finish();
        assert_eq!(*seen.0.lock().unwrap(), ["epoch 1/2 3/10", "+2"]);
        let silent: &dyn Progress = &();
        silent.start("x", 1, 0);
        silent.finish();
    }
}
