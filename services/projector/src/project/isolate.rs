//! Applying a batch the database refused for its data: find the refused events, apply every
//! other one, and park each refused event's key with it and every later event of that key, all
//! in the batch's one transaction.
//!
//! The batch is split by key, keeping each key's events together and in log order, and applied
//! half by half under savepoints (a bisection): a half that applies is kept, a half that is
//! refused is split again, down to one key. Within that key, the longest prefix of its events
//! that applies is found the same way and kept; the rest of the key is parked. One bad key in
//! a batch of `n` keys costs about `2 log2 n` tries, and keys never wait on one another: order
//! between keys does not matter (DESIGN.md rule 3), order within one always holds.
//!
//! Before a key is parked, the breaker is asked: past `Parking::max_keys` keys parked at once,
//! the whole batch is abandoned instead ([`ApplyError::BreakerOpen`]).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use sqlx::{Connection as _, Postgres, Transaction};
use uuid::Uuid;

use super::failure::{self, Cause};
use super::parking::{self, Refusal};
use super::{ApplyError, DeadLetters, Decoded, Parked, Parking, Positioned};
use eventline_read_models::Projection;

/// One key's events in the batch, in log order.
struct KeyEvents<'p, 'a> {
    events: Vec<&'p Positioned<'a>>,
}

/// `apply_in`, finding and parking what the database refuses. `tx` holds the writer's version.
pub(super) async fn apply_parking(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    batch: &Decoded<'_>,
    known: &HashSet<Uuid>,
    dead_letters: DeadLetters,
    policy: Parking,
) -> Result<super::BatchOutcome, ApplyError> {
    let projection = batch.projection.unwrap_or(Projection::Main);
    let candidates: Vec<&Positioned<'_>> =
        batch.events.iter().filter(|e| !known.contains(&e.envelope.event_id)).collect();
    let keys: Vec<&[u8]> = candidates.iter().map(|e| e.key()).collect();
    let parked_before = parking::parked_among(tx, topic, &keys).await?;
    let (waiting, free): (Vec<&Positioned<'_>>, Vec<&Positioned<'_>>) =
        candidates.iter().partition(|e| parked_before.contains(e.key()));
    let groups = by_key(&free);
    let parked_now = parking::count(tx, topic).await?;

    let mut applied = Vec::new();
    let mut refused: Vec<(&KeyEvents<'_, '_>, usize, Refusal)> = Vec::new();
    let mut pending: Vec<Range<usize>> = Vec::new();
    if !groups.is_empty() {
        pending.push(0..groups.len());
    }
    while let Some(range) = pending.pop() {
        let events: Vec<&Positioned<'_>> =
            groups[range.clone()].iter().flat_map(|g| g.events.iter().copied()).collect();
        let error = match attempt(tx, projection, topic, &events, Keep::IfApplied).await? {
            Ok(done) => {
                applied.extend(done);
                continue;
            }
            Err(error) => error,
        };
        if range.len() > 1 {
            let middle = range.start + range.len() / 2;
            // The first half is tried first (popped last pushed).
            pending.push(middle..range.end);
            pending.push(range.start..middle);
            continue;
        }
        let group = &groups[range.start];
        let (good, refusal) = longest_applying_prefix(tx, projection, topic, &group.events, error).await?;
        if good > 0 {
            match attempt(tx, projection, topic, &group.events[..good], Keep::IfApplied).await? {
                Ok(done) => applied.extend(done),
                // It applied a moment ago in this very transaction: only an outage changes that,
                // and `attempt` returned those; anything else retries the whole batch.
                Err(error) => return Err(error.into()),
            }
        }
        let limit = i64::try_from(policy.max_keys).unwrap_or(i64::MAX);
        if parked_now + i64::try_from(refused.len() + 1).unwrap_or(i64::MAX) > limit {
            return Err(ApplyError::BreakerOpen {
                limit: policy.max_keys,
                parked: parked_now,
                sqlstate: refusal.sqlstate.unwrap_or_else(|| "none".into()),
                error: refusal.error,
            });
        }
        refused.push((group, good, refusal));
    }

    parking::join(tx, topic, &waiting).await?;
    let mut parked = Parked { events: waiting, new_keys: refused.len() };
    for (group, good, refusal) in &refused {
        let events = &group.events[*good..];
        parking::park(tx, topic, events, refusal).await?;
        parked.events.extend(events.iter().copied());
    }
    Ok(super::finish(tx, topic, batch, known, dead_letters, &applied, &parked).await?)
}

/// The events grouped by key, each group in log order, the groups in the order their keys first
/// appear.
fn by_key<'p, 'a>(events: &[&'p Positioned<'a>]) -> Vec<KeyEvents<'p, 'a>> {
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<KeyEvents<'p, 'a>> = Vec::new();
    for &event in events {
        let slot = *index.entry(event.key()).or_insert_with(|| {
            groups.push(KeyEvents { events: Vec::new() });
            groups.len() - 1
        });
        groups[slot].events.push(event);
    }
    groups
}

/// Whether a successful attempt is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    IfApplied,
    Never,
}

/// Applies `events` under a savepoint: `Ok(Ok(applied))` when the database took them (kept or
/// rolled back as `keep` says), `Ok(Err(refusal))` when it refused their data (rolled back), and
/// `Err` for an outage, which ends the batch's transaction (the batch is retried whole).
async fn attempt<'p, 'a>(
    tx: &mut Transaction<'_, Postgres>,
    projection: Projection,
    topic: &str,
    events: &[&'p Positioned<'a>],
    keep: Keep,
) -> sqlx::Result<Result<Vec<&'p Positioned<'a>>, sqlx::Error>> {
    let mut savepoint = (**tx).begin().await?;
    let tried = async {
        let claimed = super::claim_event_ids(&mut savepoint, topic, events).await?;
        let to_apply = super::first_fresh(events, &claimed.fresh);
        super::effects(&mut savepoint, projection, &to_apply).await?;
        Ok::<_, sqlx::Error>(to_apply)
    }
    .await;
    match tried {
        Ok(applied) if keep == Keep::IfApplied => {
            savepoint.commit().await?;
            Ok(Ok(applied))
        }
        Ok(applied) => {
            savepoint.rollback().await?;
            Ok(Ok(applied))
        }
        Err(error) if failure::classify(&error) == Cause::Outage => Err(error),
        Err(error) => {
            savepoint.rollback().await?;
            Ok(Err(error))
        }
    }
}

/// How many of a key's `events` (refused as a whole with `refused`) apply before the first
/// refused one, and why that one is refused: a binary search over prefixes, each tried and
/// rolled back.
async fn longest_applying_prefix(
    tx: &mut Transaction<'_, Postgres>,
    projection: Projection,
    topic: &str,
    events: &[&Positioned<'_>],
    refused: sqlx::Error,
) -> sqlx::Result<(usize, Refusal)> {
    // A prefix of `good` events applies; one of `bad` events is refused, for `reason`.
    let (mut good, mut bad, mut reason) = (0, events.len(), refused);
    while bad - good > 1 {
        let middle = good + (bad - good) / 2;
        match attempt(tx, projection, topic, &events[..middle], Keep::Never).await? {
            Ok(_) => good = middle,
            Err(error) => (bad, reason) = (middle, error),
        }
    }
    Ok((good, Refusal::of(&reason)))
}
