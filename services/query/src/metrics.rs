//! Every metric the query service exports, named and described in one place (the shared HTTP and
//! readiness metrics are `eventline_runtime::metrics`). Dashboards, the alerting rules in
//! `deploy/prometheus/` and the docs name these; `tests/observability.rs` fails if they name one
//! that is not exported.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Time a read waited for the read models to reach its Consistency-Token, by outcome.
pub const CONSISTENCY_WAIT_SECONDS: &str = "eventline_query_consistency_wait_seconds";

/// Live streams (`GET …/live`) open now.
pub const LIVE_STREAMS: &str = "eventline_query_live_streams";

/// Live streams that fell further behind than their buffer and were sent `reset`.
pub const LIVE_RESETS_TOTAL: &str = "eventline_query_live_resets_total";

pub fn describe() {
    describe_gauge!(LIVE_STREAMS, Unit::Count, "Live streams (Server-Sent Events) open now");
    describe_counter!(
        LIVE_RESETS_TOTAL,
        Unit::Count,
        "Live streams whose client fell further behind than its buffer, sent `reset` and the current state"
    );
    // Exported from the start, so that a dashboard shows 0 rather than no data.
    gauge!(LIVE_STREAMS).set(0.0);
    counter!(LIVE_RESETS_TOTAL).absolute(0);
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

/// A live stream opened (`+1.0`) or closed (`-1.0`).
pub fn live_streams(delta: f64) {
    gauge!(LIVE_STREAMS).increment(delta);
}

/// A live stream was reset.
pub fn live_reset() {
    counter!(LIVE_RESETS_TOTAL).increment(1);
}
