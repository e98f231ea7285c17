//! Every metric the projector exports, named and described in one place (the shared HTTP and
//! readiness metrics are `eventline_runtime::metrics`). Dashboards, the alerting rules in
//! `deploy/prometheus/` and the docs name these; `tests/observability.rs` fails if they name one
//! that is not exported.

use crate::project::BatchOutcome;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Events read from the log, by event type and outcome (applied, duplicate, dead_lettered).
pub const EVENTS: &str = "eventline_projector_events_total";
/// Time to apply one batch (one PostgreSQL transaction).
pub const BATCH_SECONDS: &str = "eventline_projector_batch_seconds";
/// Records in one applied batch.
pub const BATCH_RECORDS: &str = "eventline_projector_batch_records";
/// Batches retried after a failed apply.
pub const BATCH_RETRIES: &str = "eventline_projector_batch_retries_total";
/// Next offset to apply, per partition (the checkpoint).
pub const CHECKPOINT: &str = "eventline_projector_checkpoint";
/// Events in the log not yet applied, per partition.
pub const LAG: &str = "eventline_projector_lag";
/// Events in the log not yet applied, per projection (its live version, or its first catch-up).
pub const PROJECTION_LAG: &str = "eventline_projector_projection_lag";
/// Entries in the dead-letter queue.
pub const DEAD_LETTERS: &str = "eventline_projector_dead_letters";
/// Partitions with events to apply that no member of the group consumes.
pub const UNCONSUMED_PARTITIONS: &str = "eventline_projector_unconsumed_partitions";
/// Where the oldest record of a batch waited before being applied, by stage (log, queued).
pub const FRESHNESS_SECONDS: &str = "eventline_projector_freshness_seconds";
/// Event ids looked up in the Redis dedup fast path, by outcome (hit, miss, unavailable).
pub const FAST_PATH: &str = "eventline_projector_fast_path_total";
/// Whether the Redis dedup fast path is available (1) or not (0).
pub const FAST_PATH_AVAILABLE: &str = "eventline_projector_fast_path_available";
/// Aggregate keys parked now (behind an event the database refused), in the live version.
pub const PARKED_KEYS: &str = "eventline_projector_parked_keys";
/// Events waiting behind parked keys, in the live version.
pub const PARKED_EVENTS: &str = "eventline_projector_parked_events";
/// Keys parked, counted as they are parked.
pub const KEYS_PARKED: &str = "eventline_projector_keys_parked_total";
/// Whether the breaker is open (1): too many keys would be parked, so the projection halts.
pub const BREAKER_OPEN: &str = "eventline_projector_breaker_open";

/// Describes the metrics and starts those that only move on rare events at zero, so a rule over
/// them has a series from the start.
pub fn describe() {
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Events read from the log, by event type and outcome (applied, duplicate, dead_lettered, parked)"
    );
    describe_histogram!(BATCH_SECONDS, Unit::Seconds, "Time to apply one batch (one PostgreSQL transaction)");
    describe_histogram!(BATCH_RECORDS, Unit::Count, "Records in one applied batch");
    describe_counter!(BATCH_RETRIES, Unit::Count, "Batches retried after a failed apply");
    describe_gauge!(CHECKPOINT, Unit::Count, "Next offset to apply, per partition (the checkpoint)");
    describe_gauge!(LAG, Unit::Count, "Events in the log not yet applied, per partition");
    describe_gauge!(PROJECTION_LAG, Unit::Count, "Events in the log not yet applied, per projection");
    describe_gauge!(DEAD_LETTERS, Unit::Count, "Entries in the dead-letter queue");
    describe_gauge!(
        UNCONSUMED_PARTITIONS,
        Unit::Count,
        "Partitions with events to apply that no member of the consumer group consumes"
    );
    describe_histogram!(
        FRESHNESS_SECONDS,
        Unit::Seconds,
        "Where the oldest record of a batch waited before being applied, by stage (log: append to read; queued: read to apply)"
    );
    describe_counter!(
        FAST_PATH,
        Unit::Count,
        "Event ids looked up in the Redis dedup fast path, by outcome (hit, miss, unavailable)"
    );
    describe_gauge!(FAST_PATH_AVAILABLE, "Whether the Redis dedup fast path is available (1) or not (0)");
    describe_gauge!(PARKED_KEYS, Unit::Count, "Aggregate keys parked behind an event the database refused");
    describe_gauge!(PARKED_EVENTS, Unit::Count, "Events waiting behind parked keys");
    describe_counter!(KEYS_PARKED, Unit::Count, "Keys parked, counted as they are parked");
    describe_gauge!(
        BREAKER_OPEN,
        "Whether the breaker is open (1): too many keys would be parked, the projection halts"
    );
    counter!(BATCH_RETRIES).absolute(0);
    counter!(KEYS_PARKED).absolute(0);
    gauge!(UNCONSUMED_PARTITIONS).set(0.0);
    gauge!(BREAKER_OPEN).set(0.0);
    gauge!(PARKED_KEYS).set(0.0);
    gauge!(PARKED_EVENTS).set(0.0);
}

/// Records one applied batch of `records` records and what it did.
/// A batch applied to `projection`'s live version. The counters and gauges describe the main
/// projection (which consumes every event); other projections show their progress in `status`.
pub fn batch_applied(
    projection: eventline_read_models::Projection,
    seconds: f64,
    records: usize,
    outcome: &BatchOutcome,
) {
    if projection != eventline_read_models::Projection::Main {
        return;
    }
    histogram!(BATCH_SECONDS).record(seconds);
    histogram!(BATCH_RECORDS).record(records as f64);
    for (event_type, applied) in &outcome.applied_by_type {
        counter!(EVENTS, "type" => event_type.as_str(), "outcome" => "applied").increment(*applied as u64);
    }
    counter!(EVENTS, "type" => "any", "outcome" => "duplicate").increment(outcome.duplicates as u64);
    counter!(EVENTS, "type" => "unknown", "outcome" => "dead_lettered")
        .increment(outcome.dead_lettered as u64);
    if outcome.parked > 0 {
        counter!(EVENTS, "type" => "any", "outcome" => "parked").increment(outcome.parked as u64);
        counter!(KEYS_PARKED).increment(outcome.parked_keys as u64);
    }
    for (&partition, &next_offset) in &outcome.next_offsets {
        gauge!(CHECKPOINT, "partition" => partition.to_string()).set(next_offset as f64);
    }
}

pub fn batch_retried() {
    counter!(BATCH_RETRIES).increment(1);
}

pub fn lag(partition: i32, events: i64) {
    gauge!(LAG, "partition" => partition.to_string()).set(events as f64);
}

pub fn projection_lag(projection: eventline_read_models::Projection, events: i64) {
    gauge!(PROJECTION_LAG, "projection" => projection.name()).set(events as f64);
}

pub fn breaker_open(open: bool) {
    gauge!(BREAKER_OPEN).set(f64::from(u8::from(open)));
}

pub fn parked(keys: i64, events: i64) {
    gauge!(PARKED_KEYS).set(keys as f64);
    gauge!(PARKED_EVENTS).set(events as f64);
}

pub fn dead_letters(entries: i64) {
    gauge!(DEAD_LETTERS).set(entries as f64);
}

pub fn unconsumed_partitions(partitions: usize) {
    gauge!(UNCONSUMED_PARTITIONS).set(partitions as f64);
}

/// Seconds the oldest record of a batch spent in `stage` (`log` or `queued`).
pub fn freshness(stage: &'static str, seconds: f64) {
    histogram!(FRESHNESS_SECONDS, "stage" => stage).record(seconds);
}

/// Event ids looked up in the fast path with `outcome` (`hit`, `miss`, `unavailable`).
pub fn fast_path(outcome: &'static str, ids: usize) {
    counter!(FAST_PATH, "outcome" => outcome).increment(ids as u64);
}

pub fn fast_path_available(available: bool) {
    gauge!(FAST_PATH_AVAILABLE).set(f64::from(u8::from(available)));
}
