//! The projection loop: read the log partition by partition from the checkpoints, follow
//! rebalances and version switches, and hand batches to `batch` (one applied while the next is
//! read).

use eventline_runtime::config::KafkaConfig;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventline_runtime::backoff::Stop;
use futures::FutureExt as _;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use sqlx::PgPool;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::dlq::Mirror;
use crate::live::batch::{Batch, RETRY};
use crate::live::consumer::{self, Assignment, LogConsumer};
use crate::live::dedup::FastPath;
use crate::live::target::{Target, Writing};
use crate::project::checkpoint;
use crate::project::{self, DeadLetters, Record, Writer};
use eventline_read_models::{self as read_models, State};
use eventline_runtime::config::DatabaseConfig;

/// Errors that stop the projector: continuing would corrupt or silently skip.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error(
        "the checkpoint of partition {partition} of {topic:?} says offsets up to {checkpoint} (exclusive) were \
         applied, but {reason}: the log was replaced or the topic recreated. The read models belong to another \
         log; reset them (`eventline-projector reset --yes`, or a rebuild) before projecting this one"
    )]
    LogReplaced { topic: String, partition: i32, checkpoint: i64, reason: String },
}

/// What the admin API reports about the loop.
#[derive(Debug, Default)]
pub struct RunnerStatus {
    pub database_ok: AtomicBool,
    pub fatal: Mutex<Option<String>>,
    pub assigned: Mutex<Vec<i32>>,
    /// The Redis mirror of the dead letters may miss entries; reconcile it when Redis answers.
    pub mirror_dirty: AtomicBool,
    /// Errors met and retried, for an operation watching this runner (a rebuild's catch-up).
    pub retried: crate::live::reported::Reported,
    /// The batch being retried now, if one is: why, and since when.
    pub failing: Mutex<Option<Failing>>,
    /// The live versions changed (a projection became live, a rebuild switched one): the live
    /// runner moves to them before its next batch, or at once when idle (`live_versions_moved`).
    pub versions_changed: AtomicBool,
    /// Wakes an idle live runner when `versions_changed` is set.
    pub live_versions_moved: tokio::sync::Notify,
}

impl RunnerStatus {
    /// Tells the live runner the live versions changed.
    pub fn live_versions_changed(&self) {
        self.versions_changed.store(true, Ordering::Relaxed);
        self.live_versions_moved.notify_one();
    }
}

/// A batch that keeps failing: what the console, `status` and `/readyz` say about it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failing {
    pub kind: FailingKind,
    pub sqlstate: Option<String>,
    pub error: String,
    pub since: chrono::DateTime<chrono::Utc>,
    pub attempts: u32,
    /// Records in the batch.
    pub records: usize,
}

/// Why a batch keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailingKind {
    /// The database is unavailable.
    Outage,
    /// An error neither a data error nor an outage, retried a few times before it counts as data.
    Unclassed,
    /// The breaker is open: too many keys would be parked.
    Breaker,
}

impl FailingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailingKind::Outage => "outage",
            FailingKind::Unclassed => "unclassed",
            FailingKind::Breaker => "breaker",
        }
    }
}

impl RunnerStatus {
    /// Why the projection cannot do its job now, for `/readyz`: a fatal error, the breaker open,
    /// or a batch failing for longer than `stall` (an outage shorter than that is ridden out).
    pub fn not_ready_because(&self, stall: Duration) -> Option<String> {
        if let Some(fatal) = self.fatal.lock().ok().and_then(|f| f.clone()) {
            return Some(fatal);
        }
        let failing = self.failing.lock().ok().and_then(|f| f.clone())?;
        let for_secs = (chrono::Utc::now() - failing.since).num_seconds();
        let stalled = u64::try_from(for_secs).unwrap_or(0) >= stall.as_secs();
        (failing.kind == FailingKind::Breaker || stalled).then(|| {
            format!(
                "{} for {for_secs} s ({} attempts): {}",
                failing.kind.as_str(),
                failing.attempts,
                failing.error
            )
        })
    }
}

/// Where a partition's reading stands.
struct Cursor {
    /// Next offset to apply (the checkpoint, advanced as records are accepted into batches).
    next: i64,
    /// Seeks issued since the last accepted record, to stop retrying a seek that cannot work.
    seeks: u32,
}

/// The live version of every projection that has one, opened, the main projection's first.
pub(crate) async fn open_live_targets(
    public: &PgPool,
    database: &DatabaseConfig,
) -> anyhow::Result<Vec<Arc<Target>>> {
    let mut versions = read_models::live_versions(public).await?;
    versions.sort_by_key(|v| v.projection != read_models::Projection::Main);
    anyhow::ensure!(
        versions.first().is_some_and(|v| v.projection == read_models::Projection::Main),
        "the main projection has no live version"
    );
    let mut targets = Vec::with_capacity(versions.len());
    for version in versions {
        targets.push(Target::open(database, version).await?);
    }
    Ok(targets)
}

/// What the runner writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The live read-model version; when a switch makes another version live, follow it there.
    Live,
    /// A version being caught up (by a rebuild or rollback) in the given state; stop when it
    /// leaves that state.
    CatchUp(State),
}

impl Role {
    /// How a writer in this role writes `version`: the live one records every dead letter, a
    /// catch-up only those the live version has not (it replays what the live one already saw).
    pub fn writer(self, version: read_models::Version) -> Writer {
        match self {
            Role::Live => Writer { version, state: State::Live, dead_letters: DeadLetters::Record },
            Role::CatchUp(state) => Writer { version, state, dead_letters: DeadLetters::RecordUnseen },
        }
    }
}

pub struct Runner {
    pub consumer: Arc<LogConsumer>,
    /// The versions written, each with its pool.
    pub writing: Arc<Writing>,
    pub role: Role,
    /// A pool on the `public` schema (version control, dead letters).
    pub public: PgPool,
    pub database: DatabaseConfig,
    pub topic: String,
    /// The consumer group read as (for spans).
    pub group_id: String,
    pub kafka: KafkaConfig,
    pub fast_path: Arc<FastPath>,
    pub mirror: Arc<Mirror>,
    /// Most records applied in one transaction (reached only when behind).
    pub batch_size: usize,
    /// The breaker's limit: most keys parked at once.
    pub park_max_keys: usize,
    pub status: Arc<RunnerStatus>,
}

impl Runner {
    /// A runner writing `targets` (the primary first) as `role`, reading the log as member of
    /// `group_id`, with the assignments its consumer will be given.
    pub(crate) fn new(
        config: &crate::Config,
        public: PgPool,
        targets: Vec<Arc<Target>>,
        role: Role,
        group_id: &str,
        batch_size: usize,
    ) -> anyhow::Result<(Runner, UnboundedReceiver<Assignment>)> {
        use anyhow::Context as _;
        let writing = Writing::new(targets);
        let (consumer, assignments) =
            consumer::subscribe(config, group_id, writing.clone()).context("creating the Kafka consumer")?;
        let redis_url = || "REDIS_URL is not a valid Redis URL";
        let runner = Runner {
            consumer,
            writing,
            role,
            public,
            database: config.database.clone(),
            topic: config.kafka.topic.clone(),
            group_id: group_id.to_owned(),
            kafka: config.kafka.clone(),
            fast_path: Arc::new(FastPath::new(&config.redis).context(redis_url())?),
            mirror: Arc::new(Mirror::new(&config.redis, &config.kafka.topic).context(redis_url())?),
            batch_size: batch_size.max(1),
            park_max_keys: config.park_max_keys,
            // Reconcile the dead-letter mirror once at start: Redis may have lost it meanwhile.
            status: Arc::new(RunnerStatus { mirror_dirty: true.into(), ..RunnerStatus::default() }),
        };
        Ok((runner, assignments))
    }
}

/// Awaits the batch being applied, if any, and forgets it.
async fn finish(applying: &mut Option<Applying<'_>>) -> Result<(), project::Superseded> {
    let Some(batch) = applying.as_mut() else { return Ok(()) };
    let applied = batch.await;
    *applying = None;
    applied
}

/// A batch being applied while the next one is read.
type Applying<'a> = Pin<Box<dyn Future<Output = Result<(), project::Superseded>> + Send + 'a>>;

impl Runner {
    /// Runs until `shutdown`. `assignments` carries the consumer's rebalances; they are taken
    /// before every message, so a partition is positioned before its first message is looked at.
    ///
    /// One batch is applied while the next is read: a batch goes to the database as soon as none
    /// is being applied, holding whatever was read by then. An idle projector thus applies an event
    /// the moment it arrives, and one that is behind applies larger batches (up to `batch_size`),
    /// each read while the one before it commits.
    pub async fn run(
        self,
        mut assignments: UnboundedReceiver<Assignment>,
        shutdown: CancellationToken,
    ) -> Result<(), FatalError> {
        let mut cursors: HashMap<i32, Cursor> = HashMap::new();
        let mut batch = Batch::default();
        let mut applying: Option<Applying<'_>> = None;
        'reading: loop {
            if applying.is_none() && !batch.records.is_empty() {
                applying = Some(Box::pin(self.flush(std::mem::take(&mut batch), &shutdown)));
            }
            let (busy, full) = (applying.is_some(), batch.records.len() >= self.batch_size);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                applied = finish(&mut applying), if busy => {
                    if applied.is_err() && !self.superseded(&mut batch, &mut cursors, &shutdown).await? {
                        return Ok(());
                    }
                }
                // Idle: follow a switch now, so the first event after it is not the one to wait
                // for the move (and reads with a token of it for that one).
                _ = self.status.live_versions_moved.notified(), if !busy && batch.records.is_empty() && self.role == Role::Live => {
                    if self.status.versions_changed.load(Ordering::Relaxed) && !self.follow_live_versions(&mut cursors, &shutdown).await {
                        return Ok(());
                    }
                }
                Some(change) = assignments.recv() => {
                    // A rebalance while no messages flow (e.g. an empty or idle log).
                    if !self.settle(&mut applying, &mut batch, &mut cursors, &shutdown).await? { return Ok(()) }
                    let mut changes = vec![change];
                    changes.extend(std::iter::from_fn(|| assignments.try_recv().ok()));
                    if !self.reassign(changes, &mut cursors, &shutdown).await? { break 'reading }
                }
                message = self.consumer.recv(), if !full => {
                    // The message awaited, then every one already fetched, up to the batch size.
                    let mut next = Some(message);
                    while let Some(message) = next.take() {
                        let message = match message {
                            Ok(m) => m,
                            Err(error) => {
                                tracing::warn!(%error, "Reading from the log failed; retrying");
                                self.status.retried.push(format!("reading from the log failed: {error}"));
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                break;
                            }
                        };
                        let changes: Vec<Assignment> = std::iter::from_fn(|| assignments.try_recv().ok()).collect();
                        if !changes.is_empty() {
                            // Finish what was read under the old assignment before taking the new one.
                            if !self.settle(&mut applying, &mut batch, &mut cursors, &shutdown).await? { return Ok(()) }
                            if !self.reassign(changes, &mut cursors, &shutdown).await? { break 'reading }
                        }
                        if let Some(record) = self.admit(&message, &mut cursors).await {
                            batch.push(record, &message);
                        }
                        if batch.records.len() < self.batch_size {
                            next = self.consumer.recv().now_or_never();
                        }
                    }
                }
            }
        }
        // Shutting down: apply what was already read, so a SIGTERM loses nothing and redoes little.
        self.settle(&mut applying, &mut batch, &mut cursors, &shutdown).await?;
        Ok(())
    }

    /// Waits for the batch being applied, then applies the one read meanwhile: nothing read is
    /// left unapplied. `false` when the work is over (`Role::CatchUp` superseded).
    async fn settle<'a>(
        &'a self,
        applying: &mut Option<Applying<'a>>,
        batch: &mut Batch,
        cursors: &mut HashMap<i32, Cursor>,
        shutdown: &'a CancellationToken,
    ) -> Result<bool, FatalError> {
        if finish(applying).await.is_err() {
            return self.superseded(batch, cursors, shutdown).await;
        }
        if batch.records.is_empty() || self.flush(std::mem::take(batch), shutdown).await.is_ok() {
            return Ok(true);
        }
        self.superseded(batch, cursors, shutdown).await
    }

    /// A version this runner writes was switched away (or another projection became live): what
    /// was read is dropped, and the live writer follows the live versions (`Role::Live`); a
    /// catch-up's work is over (`false`, as when shutting down).
    async fn superseded(
        &self,
        batch: &mut Batch,
        cursors: &mut HashMap<i32, Cursor>,
        shutdown: &CancellationToken,
    ) -> Result<bool, FatalError> {
        *batch = Batch::default();
        match self.role {
            Role::CatchUp(_) => Ok(false),
            Role::Live => Ok(self.follow_live_versions(cursors, shutdown).await),
        }
    }

    /// Moves to the versions that are live now: their pools, their projection ids, and every
    /// owned partition back to the lowest of their checkpoints (what was read past it is read
    /// again; each version skips what it applied). `false` when a shutdown came first.
    async fn follow_live_versions(
        &self,
        cursors: &mut HashMap<i32, Cursor>,
        shutdown: &CancellationToken,
    ) -> bool {
        let previous: Vec<String> = self.writing.all().iter().map(|t| t.version.to_string()).collect();
        self.status.versions_changed.store(false, Ordering::Relaxed);
        let open_live = || async { open_live_targets(&self.public, &self.database).await };
        let opened = RETRY.retry(Stop::OnShutdown(shutdown), open_live, |error: &anyhow::Error, _| {
            tracing::warn!(
                error = format!("{error:#}"),
                "Finding the live read-model versions failed; retrying"
            );
        });
        let Ok(targets) = opened.await else { return false };
        let now: Vec<String> = targets.iter().map(|t| t.version.to_string()).collect();
        tracing::info!(from = ?previous, to = ?now, "The live read-model versions changed; projecting into them");
        self.writing.set(targets);
        let Some(checkpoints) = self.load_checkpoints(shutdown).await else { return false };
        for (&partition, cursor) in cursors.iter_mut() {
            let next = checkpoints.get(&partition).copied().unwrap_or(0);
            *cursor = Cursor { next, seeks: 0 };
            if let Err(error) = consumer::seek(&self.consumer, &self.topic, partition, next).await {
                tracing::warn!(partition, next, %error, "Seek to the new version's checkpoint failed");
            }
        }
        true
    }

    /// Positions newly assigned partitions at their checkpoints; forgets revoked ones. `false`
    /// when a shutdown came first.
    async fn reassign(
        &self,
        changes: Vec<Assignment>,
        cursors: &mut HashMap<i32, Cursor>,
        shutdown: &CancellationToken,
    ) -> Result<bool, FatalError> {
        for change in changes {
            match change {
                Assignment::Revoked(partitions) => partitions.iter().for_each(|p| {
                    cursors.remove(p);
                }),
                Assignment::Assigned(partitions) => {
                    // Positioned by the consumer when it could read the checkpoints; otherwise
                    // (database down during the rebalance) read them now and seek.
                    let unpositioned = partitions.iter().any(|(_, next)| next.is_none());
                    let checkpoints = if unpositioned {
                        let Some(checkpoints) = self.load_checkpoints(shutdown).await else {
                            return Ok(false);
                        };
                        checkpoints
                    } else {
                        BTreeMap::new()
                    };
                    for (partition, positioned_at) in partitions {
                        let next = positioned_at
                            .unwrap_or_else(|| checkpoints.get(&partition).copied().unwrap_or(0));
                        if !self.check_within_log(partition, next, shutdown).await? {
                            return Ok(false);
                        }
                        if positioned_at.is_none()
                            && let Err(error) =
                                consumer::seek(&self.consumer, &self.topic, partition, next).await
                        {
                            // The admission filter below still enforces the position.
                            tracing::debug!(partition, next, %error, "Seek on assignment deferred");
                        }
                        tracing::info!(
                            partition,
                            next_offset = next,
                            "Resuming partition from its checkpoint"
                        );
                        cursors.insert(partition, Cursor { next, seeks: 0 });
                    }
                }
            }
        }
        if let Ok(mut assigned) = self.status.assigned.lock() {
            *assigned = cursors.keys().copied().collect();
            assigned.sort_unstable();
        }
        Ok(true)
    }

    /// Loads checkpoints, waiting out a database outage (the partition cannot start without
    /// them); `None` when a shutdown came first.
    async fn load_checkpoints(&self, shutdown: &CancellationToken) -> Option<BTreeMap<i32, i64>> {
        let load = || async { self.writing.load_checkpoints(&self.topic).await };
        RETRY
            .retry(Stop::OnShutdown(shutdown), load, |error, _| {
                self.database_failed("loading checkpoints", error)
            })
            .await
            .ok()
    }

    /// A database error the runner waits out: readiness and the operation watching it know.
    fn database_failed(&self, what: &str, error: &sqlx::Error) {
        self.status.database_ok.store(false, Ordering::Relaxed);
        tracing::warn!(%error, what, "A database read failed; retrying");
        self.status.retried.push(format!("{what} failed: {error}"));
    }

    /// Checks that the log holds what the checkpoint says was applied: the message just before
    /// the checkpoint must exist and, where its event id was recorded, be the same event. A
    /// replaced log (a new broker, a recreated topic) fails this instead of being silently skipped.
    /// `false` when a shutdown came first.
    async fn check_within_log(
        &self,
        partition: i32,
        checkpoint: i64,
        shutdown: &CancellationToken,
    ) -> Result<bool, FatalError> {
        if checkpoint == 0 {
            return Ok(true);
        }
        let last_applied = checkpoint - 1;
        let found = match consumer::read_one(&self.kafka, partition, last_applied).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(partition, %error, "Could not read the log at the checkpoint; not checking it");
                return Ok(true);
            }
        };
        let applied_at = || async {
            let pool = self.writing.current().pool.clone();
            checkpoint::applied_at(&pool, &self.topic, partition, last_applied).await
        };
        let recorded = RETRY
            .retry(Stop::OnShutdown(shutdown), applied_at, |error, _| {
                self.database_failed("reading the event applied at the checkpoint", error)
            })
            .await;
        let Ok(recorded) = recorded else { return Ok(false) };
        let problem = match found {
            None => Some("the log has no message there".to_owned()),
            Some(payload) => match (recorded, eventline_events::Envelope::decode(&payload)) {
                (Some(expected), Ok(envelope)) if envelope.event_id != expected => Some(format!(
                    "the message there is event {}, but event {expected} was applied from that offset",
                    envelope.event_id
                )),
                _ => None,
            },
        };
        let Some(reason) = problem else { return Ok(true) };
        let error = FatalError::LogReplaced { topic: self.topic.clone(), partition, checkpoint, reason };
        if let Ok(mut fatal) = self.status.fatal.lock() {
            *fatal = Some(error.to_string());
        }
        Err(error)
    }

    /// Decides whether a message is the next one to apply for its partition.
    async fn admit(
        &self,
        message: &BorrowedMessage<'_>,
        cursors: &mut HashMap<i32, Cursor>,
    ) -> Option<Record> {
        let (partition, offset) = (message.partition(), message.offset());
        let cursor = cursors.get_mut(&partition)?; // not (or no longer) ours
        if offset < cursor.next {
            return None; // already applied: a redelivery
        }
        if offset > cursor.next && cursor.seeks < 3 {
            // Ahead of the checkpoint (e.g. Kafka's committed offset was further than ours):
            // go back rather than skip.
            cursor.seeks += 1;
            if let Err(error) = consumer::seek(&self.consumer, &self.topic, partition, cursor.next).await {
                tracing::warn!(partition, next = cursor.next, %error, "Seek back to the checkpoint failed");
            }
            return None;
        }
        if offset > cursor.next {
            tracing::error!(
                partition,
                expected = cursor.next,
                got = offset,
                "Gap in the log: offsets are missing"
            );
        }
        cursor.next = offset + 1;
        cursor.seeks = 0;
        Some(Record::from_message(message))
    }
}
