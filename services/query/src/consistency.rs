//! Read-your-writes: waiting until the projection has applied the positions of a Consistency-Token.
//!
//! One task per process follows the projection's checkpoints: the projector notifies the channel
//! `eventline_checkpoints` as each batch commits, and the task re-reads the checkpoints then (and
//! once a second, in case a notification was lost while reconnecting). Requests wait on a watch
//! channel fed by that task, so a thousand waiting requests cost one query per batch, not a
//! thousand polls.

use std::collections::BTreeMap;
use std::time::Duration;

use eventline_events::ConsistencyToken;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The projection's checkpoints as last seen (partition → next offset to apply).
#[derive(Clone)]
pub struct Projection {
    checkpoints: watch::Receiver<BTreeMap<i32, i64>>,
}

/// The projection did not reach the token in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind;

impl Projection {
    /// Starts following the checkpoints of `topic`; stops with `shutdown`.
    pub fn follow(pool: PgPool, topic: String, shutdown: CancellationToken) -> Projection {
        let (tx, rx) = watch::channel(BTreeMap::new());
        tokio::spawn(follow(pool, topic, tx, shutdown));
        Projection { checkpoints: rx }
    }

    /// Waits (at most `bound`) until every position of `token` is applied.
    pub async fn wait_for(&self, token: &ConsistencyToken, bound: Duration) -> Result<(), Behind> {
        let reached = |checkpoints: &BTreeMap<i32, i64>| {
            token.positions().all(|p| checkpoints.get(&p.partition).is_some_and(|next| *next > p.offset))
        };
        let mut checkpoints = self.checkpoints.clone();
        match tokio::time::timeout(bound, checkpoints.wait_for(reached)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Behind),
        }
    }
}

async fn follow(
    pool: PgPool,
    topic: String,
    tx: watch::Sender<BTreeMap<i32, i64>>,
    shutdown: CancellationToken,
) {
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(eventline_runtime::checkpoints::CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(error) => {
                        tracing::warn!(%error, "Listening for checkpoint notifications failed; polling");
                        None
                    }
                },
                Err(error) => {
                    tracing::debug!(%error, "No notification connection yet; polling");
                    None
                }
            };
        }
        match eventline_runtime::checkpoints::load(&pool, &topic).await {
            Ok(checkpoints) => {
                tx.send_if_modified(|current| {
                    let changed = *current != checkpoints;
                    *current = checkpoints;
                    changed
                });
            }
            Err(error) => tracing::debug!(%error, "Reading checkpoints failed"),
        }
        // Wake on a notification (any topic: re-reading is cheap), or after a second anyway.
        let woke = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(Duration::from_secs(1), woke) => {
                if let Ok(Err(error)) = result {
                    tracing::debug!(%error, "Notification connection lost; reconnecting");
                    listener = None;
                }
            }
        }
    }
}
