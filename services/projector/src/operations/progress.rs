//! Progress of long operator commands (rebuild, rollback, verify): a bar on a terminal, a log line
//! every few seconds otherwise, or — for the console, which measures progress itself — only the
//! errors met on the way, as they happen.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::live::reported::Reported;

/// How progress is shown.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A progress bar (events done/total, events/s, ETA), for a terminal.
    Bar,
    /// A log line every few seconds.
    Log,
    /// The errors met (each retried), handed to whoever watches (the console).
    Watched(Arc<Reported>),
}

impl Progress {
    /// A bar when stderr is a terminal, log lines otherwise.
    pub fn detect() -> Progress {
        if std::io::stderr().is_terminal() { Progress::Bar } else { Progress::Log }
    }
}

/// Shows the progress of one task, named by `label` (e.g. "catching up v3").
pub(crate) enum Reporter {
    Bar(ProgressBar),
    Log { label: String, last: Instant, started: Instant, first: Option<i64> },
    Watched(Arc<Reported>),
}

impl Reporter {
    pub(crate) fn new(progress: Progress, label: String) -> Reporter {
        match progress {
            Progress::Bar => {
                let bar = ProgressBar::new(0);
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:40}] {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(label);
                Reporter::Bar(bar)
            }
            Progress::Log => {
                Reporter::Log { label, last: Instant::now(), started: Instant::now(), first: None }
            }
            Progress::Watched(problems) => Reporter::Watched(problems),
        }
    }

    /// An error met and retried (already logged where it happened).
    pub(crate) fn problem(&self, message: String) {
        match self {
            Reporter::Bar(bar) => bar.println(format!("retrying: {message}")),
            Reporter::Log { .. } => {}
            Reporter::Watched(problems) => problems.push(message),
        }
    }

    /// `done` of `total` events.
    pub(crate) fn update(&mut self, done: i64, total: i64) {
        match self {
            Reporter::Bar(bar) => {
                bar.set_length(u64::try_from(total).unwrap_or(0));
                bar.set_position(u64::try_from(done).unwrap_or(0));
            }
            Reporter::Log { label, last, started, first } => {
                let first = *first.get_or_insert(done);
                if last.elapsed() < Duration::from_secs(5) {
                    return;
                }
                *last = Instant::now();
                let rate = (done - first) as f64 / started.elapsed().as_secs_f64().max(0.001);
                let eta = if rate > 0.0 { (total - done).max(0) as f64 / rate } else { f64::NAN };
                tracing::info!(done, total, events_per_s = rate.round(), eta_s = eta.round(), "{label}");
            }
            Reporter::Watched(_) => {}
        }
    }

    /// Where a bulk load has read to (empty once it is over), for a watcher: the version's
    /// checkpoints show nothing of it until it commits.
    pub(crate) fn loading(&self, positions: &BTreeMap<i32, i64>) {
        if let Reporter::Watched(problems) = self {
            problems.set_loading(positions);
        }
    }

    /// Takes the bar off the terminal.
    pub(crate) fn finish(&self) {
        if let Reporter::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_operation_hands_over_its_errors_once_and_keeps_the_newest() {
        let problems = Arc::new(Reported::default());
        let reporter = Reporter::new(Progress::Watched(problems.clone()), "catching up v2".into());
        reporter.problem("applying a batch failed".into());
        let met = problems.take();
        assert_eq!(met.len(), 1);
        assert_eq!(met[0].1, "applying a batch failed");
        assert!(problems.take().is_empty(), "handed over once");
        for n in 0..Reported::KEPT + 5 {
            reporter.problem(format!("error {n}"));
        }
        let kept = problems.take();
        assert_eq!(kept.len(), Reported::KEPT);
        assert_eq!(kept[0].1, "error 5", "the oldest are dropped");
    }
}
