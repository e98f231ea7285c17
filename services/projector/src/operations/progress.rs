//! Progress of long operator commands (rebuild, rollback, verify): a bar on a terminal, a log line
//! every few seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar (events done/total, events/s, ETA), for a terminal.
    Bar,
    /// A log line every few seconds.
    Log,
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
        }
    }

    /// Takes the bar off the terminal.
    pub(crate) fn finish(&self) {
        if let Reporter::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
