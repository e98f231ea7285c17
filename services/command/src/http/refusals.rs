//! What a refused command answers: the problem for each way a command can fail to be accepted
//! (a broken rule, a dependency down, an append not confirmed, an idempotency key misused), with
//! the advice a client needs to retry safely.

use eventline_events::LogPosition;
use eventline_runtime::problem::{FieldError, Problem};

use crate::log::{AppendError, PartialAppend};
use crate::problems;
use crate::state::{Outcome, Rejection};

/// The answer to a command that was not accepted.
/// `keyed`: the request carried an Idempotency-Key, so the answer may tell the client to retry with it.
pub(super) fn refusal_problem(outcome: Outcome, batch: bool, keyed: bool) -> Problem {
    match outcome {
        Outcome::Accepted(_) => Problem::internal(),
        Outcome::Rejected(rejections) => rejected(rejections, batch),
        Outcome::NotAppended(partial) => append_problem(partial, batch, keyed),
        Outcome::StateUnavailable(cause) => {
            tracing::warn!(%cause, "Command not decided: decision state unavailable");
            Problem::new(
                problems::DECISION_STATE_UNAVAILABLE,
                "The command could not be checked against the current state (PostgreSQL is unavailable), so \
                 nothing was decided or appended. Retry later.",
            )
            .retry_after(1)
        }
        Outcome::NotReady => Problem::new(
            problems::DECISION_STATE_REBUILDING,
            "The command service is folding the log into its decision state and decides nothing until it \
             is complete. Retry later.",
        )
        .retry_after(2),
    }
}

/// Broken rules: a single command's own problem, or for a batch one problem listing every failing
/// command by index (nothing of the batch was appended).
fn rejected(rejections: Vec<(usize, Rejection)>, batch: bool) -> Problem {
    if !batch && let Some((_, rejection)) = rejections.first() {
        return rejection.problem();
    }
    let status = match rejections.as_slice() {
        [(_, first), rest @ ..] if rest.iter().all(|(_, r)| r.status() == first.status()) => first.status(),
        _ => problems::BATCH_REJECTED.status,
    };
    let detail = format!(
        "{} of the batch's commands break a rule, so none was appended; each is listed by index.",
        rejections.len()
    );
    let mut problem = Problem::new(problems::BATCH_REJECTED, detail);
    problem.errors = rejections
        .iter()
        .map(|(i, r)| FieldError::rule(format!("commands[{i}]"), r.slug(), r.detail()))
        .collect();
    problem.status = status.as_u16();
    problem
}

pub(super) fn key_reused() -> Problem {
    Problem::new(
        problems::IDEMPOTENCY_KEY_REUSED,
        "This Idempotency-Key was used for a different request; use a new key for a new request.",
    )
}

pub(super) fn key_in_progress() -> Problem {
    Problem::new(
        problems::IDEMPOTENCY_IN_PROGRESS,
        "A request with this Idempotency-Key is still being processed; retry shortly for its response.",
    )
    .retry_after(1)
}

pub(super) fn idempotency_unavailable() -> Problem {
    Problem::new(
        problems::IDEMPOTENCY_UNAVAILABLE,
        "Requests with an Idempotency-Key cannot be handled now; retry later, or send the request without one.",
    )
    .retry_after(1)
}

pub(super) fn if_match_on_a_batch() -> Problem {
    Problem::new(
        problems::INVALID_IF_MATCH,
        "If-Match applies to a command on one aggregate, not to a batch.",
    )
}

/// Maps a failed append to a problem; never reports success for an event the broker did not
/// acknowledge.
///
/// The advice to retry with the same Idempotency-Key is given only to a request that sent one;
/// without a key a retry is a new request, and the client must check whether the first took effect.
fn append_problem(partial: PartialAppend, batch: bool, keyed: bool) -> Problem {
    let appended = partial.positions.iter().filter(|p| p.is_some()).count();
    match partial.error {
        AppendError::NotConfirmed(cause) => {
            tracing::warn!(%cause, appended, total = partial.positions.len(), "Decided, but the append is not confirmed");
            let advice = if keyed {
                "Retry with the same Idempotency-Key to get its confirmation."
            } else {
                "Read the resource back before retrying: a retry would be a new command."
            };
            let mut problem = Problem::new(
                problems::LOG_UNAVAILABLE,
                format!(
                    "The command was decided but the event log did not confirm the append; it stays pending and \
                     will be appended. {advice}"
                ),
            )
            .retry_after(1);
            if batch {
                problem.errors = not_appended(&partial.positions);
            }
            problem
        }
        AppendError::Unavailable(cause) => {
            tracing::warn!(error = %cause, appended, total = partial.positions.len(), "Append failed: event log unavailable");
            let detail = match (appended, keyed) {
                (0, true) => "The event log did not acknowledge the append in time, so the command is not confirmed; \
                     the broker may still have recorded it. Retry with the same Idempotency-Key: the retry carries \
                     the same event id, so the command takes effect once."
                    .to_owned(),
                (0, false) => "The event log did not acknowledge the append in time, so the command is not confirmed; \
                     the broker may still have recorded it. Read the resource back before retrying: a retry \
                     would be a new command."
                    .to_owned(),
                (_, true) => format!(
                    "The event log became unavailable: {appended} of {} events were appended, the others were not. \
                     Retry with the same Idempotency-Key to complete the batch without duplicates.",
                    partial.positions.len()
                ),
                (_, false) => format!(
                    "The event log became unavailable: {appended} of {} events were appended, the others were not \
                     (`errors` lists them). Resend only those.",
                    partial.positions.len()
                ),
            };
            let mut problem = Problem::new(problems::LOG_UNAVAILABLE, detail).retry_after(1);
            if batch {
                problem.errors = not_appended(&partial.positions);
            }
            problem
        }
        AppendError::Refused(cause) => {
            tracing::error!(error = %cause, "Append refused by the broker");
            Problem::internal()
        }
    }
}

fn not_appended(positions: &[Option<LogPosition>]) -> Vec<FieldError> {
    positions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| FieldError::new(format!("commands[{i}]"), "not appended"))
        .collect()
}
