//! Every metric the command service exports, named and described in one place (the shared HTTP
//! and readiness metrics are `eventline_runtime::metrics`). Dashboards, the alerting rules in
//! `deploy/prometheus/` and the docs name these; `tests/observability.rs` fails if they name one
//! that is not exported.

use std::time::Instant;

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Events accepted (durably appended), by event type.
pub const ACCEPTED: &str = "eventline_command_accepted_total";
/// Commands refused, by route, problem type and HTTP status.
pub const REJECTED: &str = "eventline_command_rejected_total";
/// Time from a command's arrival at the decider to its durable append (or refusal).
pub const DECIDE_SECONDS: &str = "eventline_command_decide_seconds";
/// Where a decided group's time goes, by [`GroupStage`].
pub const GROUP_STAGE_SECONDS: &str = "eventline_command_group_stage_seconds";
/// Commands decided together in one group.
pub const GROUP_SIZE: &str = "eventline_command_group_size";
/// Decisions appended again after an interrupted append.
pub const PENDING_RESENT: &str = "eventline_command_pending_resent_total";
/// Kafka producers replaced after a fatal producer error.
pub const PRODUCER_REPLACEMENTS: &str = "eventline_command_producer_replacements_total";

/// Describes the metrics and starts the counters that only move on rare events at zero, so a
/// rule over them has a series from the start.
pub fn describe() {
    describe_counter!(ACCEPTED, Unit::Count, "Events accepted (durably appended to the log), by event type");
    describe_counter!(
        REJECTED,
        Unit::Count,
        "Commands refused, by route, problem type (reason) and HTTP status"
    );
    describe_histogram!(
        DECIDE_SECONDS,
        Unit::Seconds,
        "Time from a command's arrival at the decider to its durable append or its refusal"
    );
    describe_histogram!(GROUP_SIZE, Unit::Count, "Commands decided together in one group");
    describe_histogram!(
        GROUP_STAGE_SECONDS,
        Unit::Seconds,
        "Where a decided group's time goes, by stage: queue (the oldest command's wait for a decider), \
         connection, lock_read, decide, save (write and commit), append, positions, release"
    );
    describe_counter!(PENDING_RESENT, Unit::Count, "Decisions appended again after an interrupted append");
    describe_counter!(
        PRODUCER_REPLACEMENTS,
        Unit::Count,
        "Kafka producers replaced after a fatal producer error"
    );
    counter!(PENDING_RESENT).absolute(0);
    counter!(PRODUCER_REPLACEMENTS).absolute(0);
}

pub fn accepted(event_type: &'static str) {
    counter!(ACCEPTED, "type" => event_type).increment(1);
}

pub fn rejected(route: String, reason: &'static str, status: u16) {
    counter!(REJECTED, "route" => route, "reason" => reason, "status" => status.to_string()).increment(1);
}

pub fn decided(seconds: f64) {
    histogram!(DECIDE_SECONDS).record(seconds);
}

pub fn group_size(commands: usize) {
    histogram!(GROUP_SIZE).record(commands as f64);
}

pub fn pending_resent(decisions: usize) {
    counter!(PENDING_RESENT).increment(decisions as u64);
}

pub fn producer_replaced() {
    counter!(PRODUCER_REPLACEMENTS).increment(1);
}

/// The stages of a decided group, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStage {
    /// The group's oldest command waiting for a decider.
    Queue,
    /// A database connection from the pool.
    Connection,
    /// The locks and the reads (one statement).
    LockRead,
    /// Deciding every command against the state.
    Decide,
    /// Writing and committing the state and the pending decisions (one statement).
    Save,
    /// The broker's acknowledgement.
    Append,
    /// Recording where the events landed.
    Positions,
    /// Releasing the locks.
    Release,
}

impl GroupStage {
    pub const ALL: [GroupStage; 8] = [
        GroupStage::Queue,
        GroupStage::Connection,
        GroupStage::LockRead,
        GroupStage::Decide,
        GroupStage::Save,
        GroupStage::Append,
        GroupStage::Positions,
        GroupStage::Release,
    ];

    /// The `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            GroupStage::Queue => "queue",
            GroupStage::Connection => "connection",
            GroupStage::LockRead => "lock_read",
            GroupStage::Decide => "decide",
            GroupStage::Save => "save",
            GroupStage::Append => "append",
            GroupStage::Positions => "positions",
            GroupStage::Release => "release",
        }
    }
}

/// Times the stages of deciding one group, each from the end of the one before.
pub struct GroupStages(Instant);

impl GroupStages {
    /// Starts at `since` (when the group's oldest command was queued).
    pub fn since(since: Instant) -> Self {
        GroupStages(since)
    }

    /// Records the time since the last stage as `stage`.
    pub fn lap(&mut self, stage: GroupStage) {
        let now = Instant::now();
        histogram!(GROUP_STAGE_SECONDS, "stage" => stage.name())
            .record(now.duration_since(self.0).as_secs_f64());
        self.0 = now;
    }
}
