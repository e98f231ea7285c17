//! How every retry loop in eventline waits between attempts.

use std::time::Duration;

use rand::Rng as _;

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
}
