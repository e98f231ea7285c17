//! How every retry loop in eventline waits between attempts, and [`Backoff::retry`], the loop
//! itself: an operation retried until it succeeds, a shutdown or an attempt limit stops it.

use std::future::Future;
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

/// Exponential backoff: `first`, doubling each attempt up to `max`. Each wait is a random 50–100 %
/// of that, so processes that failed together (a database restart) do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.first.saturating_mul(1 << attempt.min(20)).min(self.max);
        nominal.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Runs `operation` until it succeeds, waiting [`Backoff::delay`] after each failure, which is
    /// first given to `failed` with its attempt number (0 for the first). A shutdown ends the
    /// waiting at once.
    pub async fn retry<T, E, Fut>(
        &self,
        stop: Stop<'_>,
        mut operation: impl FnMut() -> Fut,
        mut failed: impl FnMut(&E, u32),
    ) -> Result<T, Stopped>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            let error = match operation().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            failed(&error, attempt);
            let shutdown = match stop {
                Stop::After(attempts) if attempt + 1 >= attempts => return Err(Stopped::GaveUp),
                Stop::After(_) => None,
                Stop::OnShutdown(shutdown) => Some(shutdown),
            };
            let shutting_down = async {
                match shutdown {
                    Some(shutdown) => shutdown.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutting_down => return Err(Stopped::Shutdown),
                () = tokio::time::sleep(self.delay(attempt)) => {}
            }
            attempt += 1;
        }
    }
}

/// What ends a [`Backoff::retry`] that keeps failing.
#[derive(Debug, Clone, Copy)]
pub enum Stop<'a> {
    /// Retry until the token is cancelled (a service's shutdown).
    OnShutdown(&'a CancellationToken),
    /// Give up after this many attempts (where the caller has a fallback).
    After(u32),
}

/// Why [`Backoff::retry`] returned without a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error("stopped retrying: shutting down")]
    Shutdown,
    #[error("gave up after the last attempt")]
    GaveUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_with_at_most_half_taken_off() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for (attempt, nominal) in [(0, 100), (1, 200), (3, 800), (7, 10_000), (40, 10_000)] {
            let delay = backoff.delay(attempt).as_millis();
            assert!((nominal / 2..=nominal).contains(&delay), "attempt {attempt}: {delay} ms");
        }
    }

    const QUICK: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));

    #[tokio::test]
    async fn retries_until_the_operation_succeeds_reporting_each_failure() {
        let (mut calls, mut failures) = (0, Vec::new());
        let shutdown = CancellationToken::new();
        let result = QUICK
            .retry(
                Stop::OnShutdown(&shutdown),
                || {
                    calls += 1;
                    let outcome = if calls < 4 { Err(calls) } else { Ok("done") };
                    async move { outcome }
                },
                |error: &i32, attempt| failures.push((*error, attempt)),
            )
            .await;
        assert_eq!(result, Ok("done"));
        assert_eq!(failures, [(1, 0), (2, 1), (3, 2)]);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_it_was_given() {
        let mut calls = 0;
        let result: Result<(), _> = QUICK
            .retry(
                Stop::After(5),
                || {
                    calls += 1;
                    async { Err("down") }
                },
                |_, _| {},
            )
            .await;
        assert_eq!((result, calls), (Err(Stopped::GaveUp), 5));
    }

    #[tokio::test]
    async fn a_shutdown_ends_a_long_wait_at_once() {
        let hourly = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                shutdown.cancel();
            }
        });
        let mut calls = 0;
        let started = std::time::Instant::now();
        let result: Result<(), _> = hourly
            .retry(
                Stop::OnShutdown(&shutdown),
                || {
                    calls += 1;
                    async { Err("down") }
                },
                |_, _| {},
            )
            .await;
        assert_eq!((result, calls), (Err(Stopped::Shutdown), 1));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
