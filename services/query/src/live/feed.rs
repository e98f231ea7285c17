//! The feed: one task per process that turns checkpoint moves into changes for the live streams.
//!
//! It follows the live read models' snapshots (`consistency::LiveReadModels`, fed by the
//! projector's commit notifications) and, for every partition whose checkpoint moved from `a` to
//! `b`, reads the events indexed at offsets `a..b` (committed with that checkpoint, so all there)
//! and publishes them. Positions are the log's, so a switch to a rebuilt version carries on from
//! where the old one was: streams drop what they have already seen by its position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventline_read_models::history;
use tokio_util::sync::CancellationToken;

use super::Changes;
use crate::consistency::{LiveReadModels, Snapshot};

/// Most events read from the index in one statement; a longer stretch is read in several.
const CHUNK: i64 = 2_000;

/// Publishes the changes of the live read models until `shutdown`.
pub async fn run(read_models: LiveReadModels, changes: Changes, shutdown: CancellationToken) {
    let mut snapshots = read_models.subscribe();
    // Partition → the next offset whose event has not been published.
    let mut published: Option<BTreeMap<i32, i64>> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let positions = published.get_or_insert_with(|| snapshot.checkpoints.clone());
            if let Err(error) = publish(&snapshot, positions, &changes).await {
                tracing::warn!(%error, "Reading changes for live streams failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
            // A failed read is retried even if nothing moves meanwhile.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Publishes the events from `positions` up to the snapshot's checkpoints, moving `positions` as
/// it goes (a failure leaves them where the failed read began).
async fn publish(
    snapshot: &Arc<Snapshot>,
    positions: &mut BTreeMap<i32, i64>,
    changes: &Changes,
) -> sqlx::Result<()> {
    for (&partition, &next) in &snapshot.checkpoints {
        let from = positions.entry(partition).or_insert(0);
        if changes.idle() {
            // Nobody watches: nothing to read, only the place to keep.
            *from = (*from).max(next);
            continue;
        }
        while *from < next {
            let to = next.min(from.saturating_add(CHUNK));
            for change in history::changes(&snapshot.pool, partition, *from, to).await? {
                changes.publish(change);
            }
            *from = to;
        }
    }
    Ok(())
}
