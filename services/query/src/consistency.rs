//! Which read models to read, and read-your-writes: waiting until they have applied the positions
//! of a Consistency-Token.
//!
//! One task per process and projection follows its live version and its checkpoints. The projector
//! announces on `eventline_checkpoints` the positions each batch reached as it commits, which the
//! task applies as they come; a switch (rebuild, rollback) notifies `eventline_read_model_versions`,
//! and the task re-reads then (and once a second, in case a notification was lost while
//! reconnecting). Requests take the latest snapshot — a version, a pool on its tables and its
//! checkpoints — from a watch channel, so a thousand waiting requests cost no query at all, not a
//! thousand polls, and a switch changes what the next request reads without failing any request
//! under way (each keeps the snapshot it started with).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventline_events::ConsistencyToken;
use eventline_read_models::checkpoints::Advanced;
use eventline_read_models::{self as read_models, Projection, State, Version};
use eventline_runtime::config::DatabaseConfig;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The live read models as last seen.
pub struct Snapshot {
    pub version: Version,
    /// A pool whose tables are the version's.
    pub pool: PgPool,
    /// Partition → next offset to apply.
    pub checkpoints: BTreeMap<i32, i64>,
}

/// Follows the live read models: the live version of each projection.
#[derive(Clone)]
pub struct LiveReadModels {
    followed: Arc<BTreeMap<Projection, Followed>>,
}

/// One projection as followed.
#[derive(Clone)]
struct Followed {
    latest: watch::Receiver<Option<Arc<Snapshot>>>,
    /// It has no live version yet, and one is being caught up with the log for the first time.
    catching_up: Arc<AtomicBool>,
}

/// Why a read cannot be answered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The live version is not known yet (database down or not migrated).
    NotReady,
    /// The projection read has never been live: it is catching up with the log for the first
    /// time (a projection added by a deploy).
    CatchingUp,
    /// The read models did not reach the token in time.
    Behind,
}

impl LiveReadModels {
    /// Starts following the live version of every projection and its checkpoints of `topic`;
    /// stops with `shutdown`.
    pub fn follow(
        database: DatabaseConfig,
        public: PgPool,
        topic: String,
        shutdown: CancellationToken,
    ) -> LiveReadModels {
        let mut followed = BTreeMap::new();
        for projection in Projection::ALL {
            let (tx, rx) = watch::channel(None);
            let catching_up = Arc::new(AtomicBool::new(false));
            let task = Follow {
                database: database.clone(),
                public: public.clone(),
                topic: topic.clone(),
                projection,
                catching_up: catching_up.clone(),
            };
            tokio::spawn(task.run(tx, shutdown.clone()));
            followed.insert(projection, Followed { latest: rx, catching_up });
        }
        LiveReadModels { followed: Arc::new(followed) }
    }

    fn of(&self, projection: Projection) -> &Followed {
        // Every projection is followed (`follow` starts one task per projection).
        &self.followed[&projection]
    }

    /// Every change of the main projection's live read models from now on (the live streams'
    /// feed follows them).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.of(Projection::Main).latest.clone()
    }

    /// Whether the main projection's live version and its checkpoints are known (the service can
    /// answer reads).
    pub fn known(&self) -> bool {
        self.of(Projection::Main).latest.borrow().is_some()
    }

    /// The live read models of `projection` now; right after start, waits (at most `bound`)
    /// until they are known.
    pub async fn current(
        &self,
        projection: Projection,
        bound: Duration,
    ) -> Result<Arc<Snapshot>, Unavailable> {
        let followed = self.of(projection);
        if let Some(snapshot) = followed.latest.borrow().clone() {
            return Ok(snapshot);
        }
        if followed.catching_up.load(Ordering::Relaxed) {
            return Err(Unavailable::CatchingUp);
        }
        let mut latest = followed.latest.clone();
        match tokio::time::timeout(bound, latest.wait_for(Option::is_some)).await {
            Ok(Ok(snapshot)) => snapshot.clone().ok_or(Unavailable::NotReady),
            _ if followed.catching_up.load(Ordering::Relaxed) => Err(Unavailable::CatchingUp),
            _ => Err(Unavailable::NotReady),
        }
    }

    /// The live read models of `projection` once every position of `token` is applied to them,
    /// waiting at most `bound`.
    pub async fn reaching(
        &self,
        projection: Projection,
        token: &ConsistencyToken,
        bound: Duration,
    ) -> Result<Arc<Snapshot>, Unavailable> {
        let followed = self.of(projection);
        if followed.latest.borrow().is_none() && followed.catching_up.load(Ordering::Relaxed) {
            return Err(Unavailable::CatchingUp);
        }
        let reached = |latest: &Option<Arc<Snapshot>>| {
            latest.as_ref().is_some_and(|s| {
                token
                    .positions()
                    .all(|p| s.checkpoints.get(&p.partition).is_some_and(|next| *next > p.offset))
            })
        };
        let mut latest = followed.latest.clone();
        match tokio::time::timeout(bound, latest.wait_for(reached)).await {
            Ok(Ok(snapshot)) => snapshot.clone().ok_or(Unavailable::Behind),
            _ => Err(Unavailable::Behind),
        }
    }
}

/// Following one projection.
struct Follow {
    database: DatabaseConfig,
    public: PgPool,
    topic: String,
    projection: Projection,
    catching_up: Arc<AtomicBool>,
}

impl Follow {
    async fn run(self, tx: watch::Sender<Option<Arc<Snapshot>>>, shutdown: CancellationToken) {
        let Follow { database, public, topic, projection, catching_up } = self;
        let mut listener: Option<PgListener> = None;
        let mut current: Option<(Version, PgPool)> = None;
        loop {
            if listener.is_none() {
                listener = listen(&public).await;
            }
            let live = read_models::live(&public, projection).await;
            if current.is_none() && matches!(live, Err(sqlx::Error::RowNotFound)) {
                // Never live: catching up for the first time if a version is being built.
                let building = read_models::in_state(&public, projection, State::Building).await;
                catching_up.store(matches!(building, Ok(Some(_))), Ordering::Relaxed);
            }
            match live {
                Ok(version) if current.as_ref().is_none_or(|(v, _)| *v != version) => {
                    match read_models::pool(&database, version) {
                        Ok(pool) => {
                            if let Some((previous, old)) = current.replace((version, pool)) {
                                tracing::info!(from = %previous, to = %version, "Reading the new live read-model version");
                                // Requests under way finish on the old pool; then it closes.
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    old.close().await;
                                });
                            }
                        }
                        Err(error) => {
                            tracing::error!(error = format!("{error:#}"), "No pool for the live version")
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "Reading the live read-model version failed"),
            }
            if let Some((version, pool)) = &current {
                match eventline_read_models::checkpoints::load(pool, &topic).await {
                    Ok(checkpoints) => {
                        tx.send_if_modified(|latest| {
                            let changed = latest
                                .as_ref()
                                .is_none_or(|s| s.version != *version || s.checkpoints != checkpoints);
                            if changed {
                                *latest = Some(Arc::new(Snapshot {
                                    version: *version,
                                    pool: pool.clone(),
                                    checkpoints,
                                }));
                            }
                            changed
                        });
                    }
                    Err(error) => tracing::debug!(%error, "Reading checkpoints failed"),
                }
            }
            // Follow the announced checkpoints until a notification asks for more than that (a switch,
            // a payload without positions), the connection drops, or a second passes.
            let reread_at = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                let woke = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(Some),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(reread_at) => break,
                    notification = woke => match notification {
                        Ok(Some(notification))
                            if follows(&tx, &topic, notification.channel(), notification.payload()) => {}
                        Ok(_) => break,
                        Err(error) => {
                            tracing::debug!(%error, "Notification connection lost; reconnecting");
                            listener = None;
                            break;
                        }
                    },
                }
            }
        }
    }
}

/// Applies a checkpoint announcement of the live version to the snapshot, without a query; `false`
/// when the notification needs a re-read (a version switch, or a payload without positions).
/// Announcements of other versions (a rebuild filling the next one) and topics change nothing.
fn follows(tx: &watch::Sender<Option<Arc<Snapshot>>>, topic: &str, channel: &str, payload: &str) -> bool {
    if channel != eventline_read_models::checkpoints::CHANNEL {
        return false;
    }
    let Some(advanced) = Advanced::parse(payload) else { return false };
    tx.send_if_modified(|latest| {
        let Some(snapshot) = latest.as_ref() else { return false };
        if advanced.topic != topic || advanced.schema != snapshot.version.schema() {
            return false;
        }
        let mut checkpoints = snapshot.checkpoints.clone();
        let mut moved = false;
        for (&partition, &next) in &advanced.checkpoints {
            let at = checkpoints.entry(partition).or_insert(0);
            moved |= next > *at;
            *at = (*at).max(next);
        }
        if moved {
            *latest = Some(Arc::new(Snapshot {
                version: snapshot.version,
                pool: snapshot.pool.clone(),
                checkpoints,
            }));
        }
        moved
    });
    true
}

async fn listen(public: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(public).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::debug!(%error, "No notification connection yet; polling");
            return None;
        }
    };
    let channels = [eventline_read_models::checkpoints::CHANNEL, read_models::CHANNEL];
    match listener.listen_all(channels).await {
        Ok(()) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "Listening for notifications failed; polling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoints(tx: &watch::Sender<Option<Arc<Snapshot>>>) -> BTreeMap<i32, i64> {
        tx.borrow().as_ref().map(|s| s.checkpoints.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn only_announcements_of_the_live_version_and_topic_move_the_snapshot() {
        let pool =
            sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://localhost/none").expect("lazy");
        let live = Snapshot { version: Version::main(1), pool, checkpoints: BTreeMap::from([(0, 5)]) };
        let (tx, _rx) = watch::channel(Some(Arc::new(live)));
        let channel = eventline_read_models::checkpoints::CHANNEL;

        // A rebuild filling version 2, or another topic: followed (no re-read), nothing moves.
        assert!(follows(&tx, "events", channel, "read_model_v2 events 0:100"));
        assert!(follows(&tx, "events", channel, "read_model_v1 other 0:100"));
        assert_eq!(checkpoints(&tx), BTreeMap::from([(0, 5)]));

        // The live version: positions move forward only, partitions are added.
        assert!(follows(&tx, "events", channel, "read_model_v1 events 0:9,2:3"));
        assert!(follows(&tx, "events", channel, "read_model_v1 events 0:7"));
        assert_eq!(checkpoints(&tx), BTreeMap::from([(0, 9), (2, 3)]));

        // A switch, or a payload without positions: re-read.
        assert!(!follows(&tx, "events", read_models::CHANNEL, "2"));
        assert!(!follows(&tx, "events", channel, "events"));
    }
}
