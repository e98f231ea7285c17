//! The write model: the state every business rule is decided against, kept in PostgreSQL (schema
//! `command_state`) and equal to a fold of the log plus the decisions on their way to it.
//!
//! - `model`: the state of each aggregate and how an event changes it (pure).
//! - `rules`: which events the state allows (pure).
//! - `decider`: deciding requests in groups, under the aggregates' locks, and appending them.
//! - `store`: the SQL.
//! - `replay`: folding the whole log, for start-up, `state rebuild` and `state verify`.
//!
//! The state is trusted only for the log it was folded from: its identity (cluster and topic ids)
//! is recorded, and a state that is missing or from another log is folded again before any
//! command is decided (`/readyz` is false meanwhile).

mod decider;
pub mod model;
mod replay;
pub mod rules;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use eventline_events::Envelope;
use eventline_runtime::backoff::{Backoff, Stop};
use eventline_runtime::config::KafkaConfig;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

pub use decider::{Decider, Outcome, Request};
pub use model::AggregateRef;
pub use rules::Rejection;
use store::RecordedLog;

use crate::log::EventLog;

/// How often the guardian checks the log's identity and sweeps pending decisions.
const GUARD_INTERVAL: Duration = Duration::from_secs(5);

/// The decision state and the deciders that use it.
#[derive(Clone)]
pub struct WriteModel {
    shared: Arc<decider::Shared>,
    kafka: KafkaConfig,
    pub decider: Decider,
}

impl WriteModel {
    /// Starts `workers` deciders; nothing is decided until [`WriteModel::guard`] has made the
    /// state ready.
    pub fn new(pool: PgPool, log: EventLog, kafka: KafkaConfig, workers: usize) -> Self {
        let shared = Arc::new(decider::Shared {
            pool,
            log,
            ready: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        });
        let decider = Decider::start(shared.clone(), workers);
        WriteModel { shared, kafka, decider }
    }

    /// The decision state's pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// Whether commands can be decided: the state is a complete fold of the log.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Makes the state ready (creating, folding or re-folding it as needed), then keeps it so
    /// until `shutdown`: every few seconds it checks that the log is still the one the state was
    /// folded from and appends any decision left pending by an interrupted append.
    pub async fn guard(self, shutdown: CancellationToken) {
        let retry = Backoff::new(Duration::from_millis(200), GUARD_INTERVAL);
        loop {
            // A failed round leaves readiness as it was: an unreachable broker or database makes
            // commands fail on their own (503), and does not make the state wrong.
            let checked = retry.retry(Stop::OnShutdown(&shutdown), || self.check(), |error: &anyhow::Error, _| {
                tracing::warn!(error = %format!("{error:#}"), ready = self.is_ready(), "Checking the decision state failed");
            });
            if checked.await.is_err() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(GUARD_INTERVAL) => {}
                _ = self.lost() => {}
            }
        }
    }

    /// Resolves soon after a decision found the state's tables missing.
    async fn lost(&self) {
        while !self.shared.lost.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One round of the guardian.
    async fn check(&self) -> anyhow::Result<()> {
        let mut conn = self.shared.pool.acquire().await.context("connecting to PostgreSQL")?;
        self.shared.lost.store(false, Ordering::Release);
        store::ensure_schema(&mut conn).await.context("creating the decision-state schema")?;
        let log = self.current_log().await?;
        let recorded = store::recorded_log(&mut conn).await.context("reading which log the state is of")?;
        if recorded.as_ref() != Some(&log) {
            match &recorded {
                None => {
                    tracing::warn!(topic = %log.topic, "No decision state yet: folding the log into it before deciding")
                }
                Some(old) => tracing::warn!(
                    was = %old.identity, now = %log.identity,
                    "The decision state was folded from another log: folding this one before deciding"
                ),
            }
            self.shared.ready.store(false, Ordering::Release);
            rebuild_on(&mut conn, &self.shared.log, &self.kafka, &log, false).await?;
        }
        let swept = sweep(&mut conn, &self.shared.log).await;
        store::unlock_all(&mut conn).await?;
        swept?;
        if !self.shared.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("The decision state is ready: deciding commands");
        }
        Ok(())
    }

    async fn current_log(&self) -> anyhow::Result<RecordedLog> {
        let identity = eventline_runtime::log_identity::fetch(
            &self.kafka.brokers,
            &self.kafka.security,
            &self.kafka.topic,
        )
        .await
        .context("asking the broker which log this is")?;
        Ok(RecordedLog { topic: self.kafka.topic.clone(), identity })
    }

    /// `state rebuild`: folds the log into a new state, pausing decisions meanwhile.
    pub async fn rebuild(&self) -> anyhow::Result<()> {
        let mut conn = self.shared.pool.acquire().await.context("connecting to PostgreSQL")?;
        store::ensure_schema(&mut conn).await?;
        let log = self.current_log().await?;
        let same = store::recorded_log(&mut conn).await?.as_ref() == Some(&log);
        rebuild_on(&mut conn, &self.shared.log, &self.kafka, &log, same).await
    }

    /// `state verify`: compares the state with a fold of the log, pausing decisions meanwhile.
    pub async fn verify(&self) -> anyhow::Result<Differences> {
        let mut conn = exclusive(&self.shared.pool).await?;
        let result = compare_with_log(&mut conn, &self.shared.log, &self.kafka).await;
        store::unlock_all(&mut conn).await?;
        result
    }
}

/// What differs between the stored state and a fold of the log.
#[derive(Debug, Default)]
pub struct Differences {
    pub lines: Vec<String>,
}

impl Differences {
    fn between(stored: &model::Aggregates, folded: &model::Aggregates) -> Self {
        let mut lines = Vec::new();
        compare("user", &stored.users, &folded.users, &mut lines);
        compare("order", &stored.orders, &folded.orders, &mut lines);
        compare("payment", &stored.payments, &folded.payments, &mut lines);
        compare("sku", &stored.skus, &folded.skus, &mut lines);
        Differences { lines }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

fn compare<K: std::fmt::Debug + Eq + std::hash::Hash, V: std::fmt::Debug + PartialEq>(
    kind: &str,
    stored: &std::collections::HashMap<K, V>,
    folded: &std::collections::HashMap<K, V>,
    lines: &mut Vec<String>,
) {
    for (key, value) in stored {
        match folded.get(key) {
            None => lines.push(format!("{kind} {key:?}: in the state ({value:?}), not in the log")),
            Some(expected) if expected != value => {
                lines.push(format!("{kind} {key:?}: the state has {value:?}, the log gives {expected:?}"))
            }
            Some(_) => {}
        }
    }
    for (key, value) in folded {
        if !stored.contains_key(key) {
            lines.push(format!("{kind} {key:?}: in the log ({value:?}), missing from the state"));
        }
    }
}

async fn compare_with_log(
    conn: &mut PgConnection,
    log: &EventLog,
    kafka: &KafkaConfig,
) -> anyhow::Result<Differences> {
    sweep(conn, log).await?;
    let folded = replay::fold_log(kafka).await?;
    let stored = store::load_all(conn).await?;
    Ok(Differences::between(&stored, &folded.state))
}

/// A connection holding the state lock exclusively (no lock timeout: it waits for every decision
/// in flight). Release with `store::unlock_all`.
async fn exclusive(pool: &PgPool) -> anyhow::Result<PoolConnection<Postgres>> {
    let mut conn = pool.acquire().await.context("connecting to PostgreSQL")?;
    sqlx::query("SET lock_timeout = 0").execute(&mut *conn).await?;
    store::lock_exclusive(&mut conn).await.context("pausing decisions")?;
    Ok(conn)
}

/// Replaces the state with a fold of `log`, holding the state lock exclusively. Pending
/// decisions are appended first when they belong to this same log, and dropped when the state was
/// of another one (they were never confirmed there either).
async fn rebuild_on(
    conn: &mut PoolConnection<Postgres>,
    events: &EventLog,
    kafka: &KafkaConfig,
    log: &RecordedLog,
    same_log: bool,
) -> anyhow::Result<()> {
    let conn: &mut PgConnection = conn;
    sqlx::query("SET lock_timeout = 0").execute(&mut *conn).await?;
    store::lock_exclusive(conn).await.context("pausing decisions")?;
    let result = refold(conn, events, kafka, log, same_log).await;
    store::unlock_all(conn).await?;
    sqlx::query("SET lock_timeout = DEFAULT").execute(&mut *conn).await?;
    result
}

async fn refold(
    conn: &mut PgConnection,
    events: &EventLog,
    kafka: &KafkaConfig,
    log: &RecordedLog,
    same_log: bool,
) -> anyhow::Result<()> {
    if same_log {
        sweep(conn, events).await?;
    }
    let folded = replay::fold_log(kafka).await.context("folding the log")?;
    let mut tx = sqlx::Connection::begin(conn).await?;
    store::replace_all(&mut tx, log, &folded.state, &folded.decided).await.context("writing the state")?;
    tx.commit().await?;
    tracing::info!(events = folded.decided.len(), "Rebuilt the decision state from the log");
    Ok(())
}

/// Appends pending decisions (oldest first, up to a thousand a round) through the deciders' own
/// path: under their aggregates' locks, after any older one. The caller releases the locks.
async fn sweep(conn: &mut PgConnection, log: &EventLog) -> anyhow::Result<()> {
    let pending = store::all_pending(conn, 1000).await?;
    if pending.is_empty() {
        return Ok(());
    }
    let requests: Vec<Request> = pending
        .iter()
        .filter_map(|bytes| Envelope::decode(bytes).ok())
        .map(|envelope| Request { envelopes: vec![envelope], expect: None, span: tracing::Span::current() })
        .collect();
    tracing::info!(pending = requests.len(), "Appending decisions left pending by an interrupted append");
    let mut stages = crate::metrics::GroupStages::since(std::time::Instant::now());
    let outcomes = decider::locked(log, conn, &requests.iter().collect::<Vec<_>>(), &mut stages).await?;
    let failed = outcomes.iter().filter(|o| !matches!(o, Outcome::Accepted(_))).count();
    anyhow::ensure!(failed == 0, "{failed} pending decisions could not be appended yet");
    Ok(())
}
