//! What a scenario found, and docs/reliability.md written from it.

use std::time::Duration;

use serde::Serialize;

/// What one scenario found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) faults: u32,
    /// Commands answered 202; refused by a business rule (409/422, final); answered 503 (the
    /// client may retry).
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) unavailable: u64,
    /// Requests that got no answer (connection refused or cut: a killed service), and answers
    /// outside the protocol (429, a 422 or 5xx that is not a rule's refusal or a 503): counted,
    /// never silently dropped; the latter must be 0.
    pub(crate) no_answer: u64,
    pub(crate) other_answers: u64,
    /// The fault visibly bit: its scenario's evidence (503s or lost connections while a
    /// dependency was away, dead letters for poison, processes killed) was seen.
    pub(crate) fault_bit: bool,
    /// Payments among the accepted commands (and orders paid twice in the log, which must be 0).
    pub(crate) payments: u64,
    pub(crate) orders_paid_twice: u64,
    /// Times a sku's stock went below zero when the log is folded in order (must be 0).
    pub(crate) negative_stock: u64,
    /// Distinct events in the log, and copies of an event id (a producer retry that appended twice).
    pub(crate) events_in_log: u64,
    pub(crate) duplicate_copies_in_log: u64,
    /// Acknowledged with 202 but not in the log.
    pub(crate) acknowledged_not_in_log: u64,
    /// Units of stock the read model lacks (lost) or has in excess (doubled) against the log.
    pub(crate) lost: i64,
    pub(crate) doubled: i64,
    /// Event ids applied more than once, or not at all, by the projector.
    pub(crate) applied_twice_or_missing: i64,
    /// The `orders_by_status` projection against the fold: orders whose status differs or that
    /// one side lacks, and its events applied more than once or not at all.
    pub(crate) orders_by_status_differing: u64,
    pub(crate) orders_by_status_applied_twice_or_missing: i64,
    pub(crate) dead_letters: i64,
    pub(crate) poison_sent: u64,
    /// From the end of the last fault to the projection caught up.
    pub(crate) recover_s: f64,
    /// Per fault that takes something away, how long until commands were accepted again (the
    /// cluster scenario: after the leader's loss, and after both brokers came back).
    pub(crate) recovery_after_fault_s: Vec<f64>,
    /// Commands first sent while fewer brokers ran than the minimum in-sync replicas, and accepted
    /// before the brokers came back (must be 0).
    pub(crate) accepted_below_min_isr: u64,
    /// The parking scenario: events parked behind the refused key before the redrive; applied
    /// plus parked at that moment (must be the events in the log); how long events of other
    /// keys took from their 202 to being applied meanwhile, in ms.
    pub(crate) parked: i64,
    pub(crate) applied_plus_parked: Option<i64>,
    pub(crate) other_keys_freshness_ms: Vec<u64>,
    pub(crate) passed: bool,
}

/// Where docs/reliability.md's hand-written history starts; a full run rewrites what is above it.
pub(crate) const HISTORY_MARKER: &str = "<!-- history: kept by make chaos -->";

/// The history section of the previous docs/reliability.md (from its marker on), if any.
pub(crate) fn kept_history(previous: &str) -> String {
    previous.find(HISTORY_MARKER).map(|at| format!("\n{}", &previous[at..])).unwrap_or_default()
}

pub(crate) fn round_tenths(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10.0).round() / 10.0
}

pub(crate) fn markdown(reports: &[Report], took: Duration) -> String {
    let mut md = String::from("# Reliability\n\n");
    md.push_str(&format!(
        "Written by `make chaos` (`tools/src/bin/eventline-chaos/`) in {:.0} s on the two-core development \
         machine. The run starts a PostgreSQL cluster, a Redis server and an Apache Kafka 4.4 broker of its own \
         (one KRaft node, started by the launcher `make up` uses) and injects its faults into \
         those. Each scenario drives mixed commands through the command API (8 workers: inventory \
         `add`, `remove` and `set` on 16 skus, and payments of 40 orders placed first; an Idempotency-Key \
         on every command, a lost or unconfirmed answer asked again with the same key until it is a 202 or \
         a rule's refusal), injects its fault, stops the load, waits for the projection to catch up, and \
         compares the read model with a fold of the log written for the test, in log order: the stock may \
         never go below zero at any point and no order may be paid twice. `make test` runs the same \
         scenarios briefly (`--short`).\n\n",
        took.as_secs_f64()
    ));
    md.push_str("| scenario | faults | fault bit | accepted (202) | refused by a rule | payments | 503 answers | no answer | other answers | events in log | 202 not in log | stock < 0 | paid twice | lost | doubled | applied ≠ once | orders by status ≠ fold / applied ≠ once | dead letters / poison | recover s | |\n");
    md.push_str(
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in reports {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |\n",
            r.scenario,
            r.faults,
            if r.fault_bit { "yes" } else { "**no**" },
            r.accepted,
            r.refused,
            r.payments,
            r.unavailable,
            r.no_answer,
            r.other_answers,
            r.events_in_log,
            r.acknowledged_not_in_log,
            r.negative_stock,
            r.orders_paid_twice,
            r.lost,
            r.doubled,
            r.applied_twice_or_missing,
            r.orders_by_status_differing,
            r.orders_by_status_applied_twice_or_missing,
            r.dead_letters,
            r.poison_sent,
            r.recover_s,
            if r.passed { "pass" } else { "**FAIL**" }
        ));
    }
    md.push_str(
        "\nA scenario passes only if its fault visibly bit (`fault bit`: 503s from the frozen broker, lost \
         connections to the killed command service, dead letters for poison; for a restarted dependency, \
         the new process — PostgreSQL's start time moved, Redis came back without a marker key set before, \
         a new broker process — and commands accepted after it, since those recover within milliseconds \
         and need not produce a 503) and no answer \
         fell outside the protocol (`other answers`: a 429, a 5xx other than 503, or a 409/422 that is not \
         a rule's refusal). The fold reads the raw JSON of every message with its own code, not the \
         events crate's decoder the projector uses, and every projection is checked against it: the main \
         one (stock, payments, events applied once) and `orders_by_status` (each placed order's status, \
         row for row, and its events applied once).\n\n`events in log` counts the 41 commands that prepare each scenario (a user and its orders) besides \
         the load's. A 503 answer means \"not confirmed\", not \"not recorded\": the decision may be pending \
         and is appended later; the load asks again with the same key, whose retry finds the decision and \
         gets its 202.\n",
    );
    for r in reports.iter().filter(|r| !r.recovery_after_fault_s.is_empty()) {
        md.push_str(&format!(
            "\nThree-broker cluster: commands were accepted again {} s after the busiest leader was \
             SIGKILLed (new leaders from the in-sync replicas) and {} s after both killed brokers were \
             restarted; of the commands first sent while one broker alone ran, below \
             `min.insync.replicas=2`, {} were accepted before the brokers came back (must be 0: each \
             got 503 and was asked again with its key).\n",
            r.recovery_after_fault_s.first().copied().unwrap_or_default(),
            r.recovery_after_fault_s.last().copied().unwrap_or_default(),
            r.accepted_below_min_isr,
        ));
    }
    for r in reports.iter().filter(|r| r.applied_plus_parked.is_some()) {
        let mut freshness = r.other_keys_freshness_ms.clone();
        freshness.sort_unstable();
        md.push_str(&format!(
            "\nOne key refused by the database (a trigger on `CHAOS-0`'s stock, added mid-load): {} of its \
             events were parked behind the first refused one while every other key was applied; applied plus \
             parked made {} of the {} events in the log; events of other keys took {} ms (median) and {} ms \
             (slowest of {}) from their 202 to being applied meanwhile. Then the trigger was dropped and the \
             key redriven (the CLI's code), and the stock checks above ran on the result.\n",
            r.parked,
            r.applied_plus_parked.unwrap_or_default(),
            r.events_in_log,
            freshness.get(freshness.len() / 2).copied().unwrap_or_default(),
            freshness.last().copied().unwrap_or_default(),
            freshness.len(),
        ));
    }
    md.push_str(
        "\n`lost`/`doubled` are units of stock the read model lacks or has in excess against the log; \
         `applied ≠ once` compares the projector's applied event ids with the distinct events in the log; \
         `recover s` runs from the end of the last fault until the projection has caught up (it includes \
         stopping the load and the backlog built meanwhile).\n\n\
         Projector killed: every restarted instance rejoins the same consumer group, as in production, \
         so the broker must hand it the killed member's partitions. Two projector instances: in each \
         round a second instance joins the group and one of the two, the newcomer or the old hand in \
         turn, is killed 0.1–1.5 s later, mid-rebalance; after the last round the survivor alone must \
         finish (the broker hands it the dead member's partitions after the session timeout, 6 s). \
         Broker restarted: SIGKILL mid-load and a new broker process on the same storage; every event \
         acknowledged before is still in the log (`202 not in log` = 0), and the command service and \
         projector carry on without a restart of their own. Command service killed: SIGKILL at random \
         moments under the mixed load and a new process on the same port; decisions cut off between their \
         commit and their append are appended by the new process, and no sku's stock goes below zero.\n\n\
         A broker that is down and comes back is also covered by the fault-path tests against \
         librdkafka's mock cluster: `services/command/src/log.rs` (`fault_paths`: a broker going down, \
         transient produce errors retried into one append, a message refused for good) and \
         `tests/projector_faults.rs` (the broker down mid-stream and back; transient fetch, offset \
         commit and heartbeat errors; every event applied once).\n",
    );
    md
}
