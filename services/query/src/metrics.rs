//! Every metric the query service exports, named and described in one place (the shared HTTP and
//! readiness metrics are `eventline_runtime::metrics`). Dashboards, the alerting rules in
//! `deploy/prometheus/` and the docs name these; `tests/observability.rs` fails if they name one
//! that is not exported.

use metrics::{Unit, describe_histogram, histogram};

/// Time a read waited for the read models to reach its Consistency-Token, by outcome.
pub const CONSISTENCY_WAIT_SECONDS: &str = "eventline_query_consistency_wait_seconds";

pub fn describe() {
    describe_histogram!(
        CONSISTENCY_WAIT_SECONDS,
        Unit::Seconds,
        "Time a read waited for the read models to reach its Consistency-Token, by outcome \
         (reached; behind: the wait timed out, answered 503; not_ready)"
    );
}

/// A consistency wait ended with `outcome` (`reached`, `behind`, `not_ready`).
pub fn consistency_wait(outcome: &'static str, seconds: f64) {
    histogram!(CONSISTENCY_WAIT_SECONDS, "outcome" => outcome).record(seconds);
}
