//! The projection loop: read a batch from the log, apply it in one transaction (retrying transient
//! failures without ever advancing past them), then tell Kafka how far we got.

use eventline_runtime::config::KafkaConfig;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventline_runtime::backoff::Backoff;
use futures::FutureExt as _;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use sqlx::PgPool;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dlq::{self, Mirror};
use crate::live::consumer::{self, Assignment, LogConsumer};
use crate::live::dedup::FastPath;
use crate::live::spans::BatchSpans;
use crate::live::target::{Target, Writing};
use crate::project::checkpoint;
use crate::project::{self, DeadLetters, Decoded, Record, Writer};
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
    pub retried: crate::operations::progress::Problems,
}

/// Where a partition's reading stands.
struct Cursor {
    /// Next offset to apply (the checkpoint, advanced as records are accepted into batches).
    next: i64,
    /// Seeks issued since the last accepted record, to stop retrying a seek that cannot work.
    seeks: u32,
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

pub struct Runner {
    pub consumer: Arc<LogConsumer>,
    /// The version written, with its pool.
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
    pub status: Arc<RunnerStatus>,
}

/// Records read for one transaction, and when the first of them was read.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    first: Option<FirstRead>,
}

impl Batch {
    fn push(&mut self, record: Record, message: &BorrowedMessage<'_>) {
        if self.first.is_none() {
            let read_ms = chrono::Utc::now().timestamp_millis();
            self.first = Some(FirstRead {
                in_log: message
                    .timestamp()
                    .to_millis()
                    .map(|appended| (read_ms - appended).max(0) as f64 / 1000.0),
                read_at: std::time::Instant::now(),
            });
        }
        self.records.push(record);
    }
}

/// Where the oldest record of a batch spent its time before being applied, for the freshness
/// profile (`eventline_projector_freshness_seconds`): appended to the log → read (the broker's
/// fetch and the consumer's queue) → applying (waiting for the batch before to commit). The
/// apply itself is `eventline_projector_batch_seconds`.
struct FirstRead {
    /// Seconds from the producer's timestamp to the read (wall clocks), when the message has one.
    in_log: Option<f64>,
    read_at: std::time::Instant,
}

impl FirstRead {
    fn record(&self, applying_from: std::time::Instant) {
        if let Some(in_log) = self.in_log {
            crate::metrics::freshness("log", in_log);
        }
        crate::metrics::freshness("queued", applying_from.duration_since(self.read_at).as_secs_f64());
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
        loop {
            if applying.is_none() && !batch.records.is_empty() {
                applying = Some(Box::pin(self.flush(std::mem::take(&mut batch), &shutdown)));
            }
            let (busy, full) = (applying.is_some(), batch.records.len() >= self.batch_size);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                applied = finish(&mut applying), if busy => {
                    if applied.is_err() && !self.superseded(&mut batch, &mut cursors).await? {
                        return Ok(());
                    }
                }
                Some(change) = assignments.recv() => {
                    // A rebalance while no messages flow (e.g. an empty or idle log).
                    if !self.settle(&mut applying, &mut batch, &mut cursors, &shutdown).await? { return Ok(()) }
                    let mut changes = vec![change];
                    changes.extend(std::iter::from_fn(|| assignments.try_recv().ok()));
                    self.reassign(changes, &mut cursors).await?;
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
                            self.reassign(changes, &mut cursors).await?;
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
            return self.superseded(batch, cursors).await;
        }
        if batch.records.is_empty() || self.flush(std::mem::take(batch), shutdown).await.is_ok() {
            return Ok(true);
        }
        self.superseded(batch, cursors).await
    }

    /// This writer's version was switched away: what was read for it is dropped, and the live
    /// writer follows the live version (`Role::Live`); a catch-up's work is over (`false`).
    async fn superseded(
        &self,
        batch: &mut Batch,
        cursors: &mut HashMap<i32, Cursor>,
    ) -> Result<bool, FatalError> {
        *batch = Batch::default();
        match self.role {
            Role::CatchUp(_) => Ok(false),
            Role::Live => {
                self.follow_live_version(cursors).await?;
                Ok(true)
            }
        }
    }

    /// Moves to the version that is live now: its pool, its projection id, and every owned
    /// partition back to that version's checkpoint (what was read past it is read again).
    async fn follow_live_version(&self, cursors: &mut HashMap<i32, Cursor>) -> Result<(), FatalError> {
        let previous = self.writing.current().version;
        let mut attempt = 0;
        let target = loop {
            let opened = match read_models::live(&self.public).await {
                Ok(version) => Target::open(&self.database, version).await,
                Err(error) => Err(error.into()),
            };
            match opened {
                Ok(target) => break target,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "Finding the live read-model version failed; retrying"
                    );
                    tokio::time::sleep(RETRY.delay(attempt)).await;
                    attempt += 1;
                }
            }
        };
        tracing::info!(from = %previous, to = %target.version, "The live read-model version changed; projecting into it");
        self.writing.set(target);
        let checkpoints = self.load_checkpoints().await;
        for (&partition, cursor) in cursors.iter_mut() {
            let next = checkpoints.get(&partition).copied().unwrap_or(0);
            *cursor = Cursor { next, seeks: 0 };
            if let Err(error) = consumer::seek(&self.consumer, &self.topic, partition, next).await {
                tracing::warn!(partition, next, %error, "Seek to the new version's checkpoint failed");
            }
        }
        Ok(())
    }

    /// Positions newly assigned partitions at their checkpoints; forgets revoked ones.
    async fn reassign(
        &self,
        changes: Vec<Assignment>,
        cursors: &mut HashMap<i32, Cursor>,
    ) -> Result<(), FatalError> {
        for change in changes {
            match change {
                Assignment::Revoked(partitions) => partitions.iter().for_each(|p| {
                    cursors.remove(p);
                }),
                Assignment::Assigned(partitions) => {
                    // Positioned by the consumer when it could read the checkpoints; otherwise
                    // (database down during the rebalance) read them now and seek.
                    let unpositioned = partitions.iter().any(|(_, next)| next.is_none());
                    let checkpoints =
                        if unpositioned { self.load_checkpoints().await } else { BTreeMap::new() };
                    for (partition, positioned_at) in partitions {
                        let next = positioned_at
                            .unwrap_or_else(|| checkpoints.get(&partition).copied().unwrap_or(0));
                        self.check_within_log(partition, next).await?;
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
        Ok(())
    }

    /// Loads checkpoints, waiting out a database outage (the partition cannot start without it).
    async fn load_checkpoints(&self) -> BTreeMap<i32, i64> {
        let mut attempt = 0;
        loop {
            match checkpoint::load(&self.writing.current().pool, &self.topic).await {
                Ok(checkpoints) => return checkpoints,
                Err(error) => {
                    self.status.database_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, "Loading checkpoints failed; retrying");
                    self.status.retried.push(format!("loading checkpoints failed: {error}"));
                    tokio::time::sleep(RETRY.delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Checks that the log holds what the checkpoint says was applied: the message just before
    /// the checkpoint must exist and, where its event id was recorded, be the same event. A
    /// replaced log (a new broker, a recreated topic) fails this instead of being silently skipped.
    async fn check_within_log(&self, partition: i32, checkpoint: i64) -> Result<(), FatalError> {
        if checkpoint == 0 {
            return Ok(());
        }
        let last_applied = checkpoint - 1;
        let found = match consumer::read_one(&self.kafka, partition, last_applied).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(partition, %error, "Could not read the log at the checkpoint; not checking it");
                return Ok(());
            }
        };
        let recorded =
            checkpoint::applied_at(&self.writing.current().pool, &self.topic, partition, last_applied)
                .await
                .unwrap_or(None);
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
        let Some(reason) = problem else { return Ok(()) };
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

    /// Applies the batch, retrying transient failures with backoff until it commits. Only a
    /// shutdown interrupts the retries, and then nothing of the batch is committed. `Superseded`
    /// when this writer no longer writes its version (nothing committed).
    async fn flush(&self, batch: Batch, shutdown: &CancellationToken) -> Result<(), project::Superseded> {
        let Batch { records: batch, first } = batch;
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        if let Some(first) = first {
            first.record(started);
        }
        let target = self.writing.current();
        let writer = Writer {
            version: target.version,
            state: match self.role {
                Role::Live => State::Live,
                Role::CatchUp(state) => state,
            },
            dead_letters: match self.role {
                Role::Live => DeadLetters::Record,
                Role::CatchUp(_) => DeadLetters::RecordUnseen,
            },
        };
        let spans = BatchSpans::start(&self.topic, &self.group_id, &batch);
        let decoded = Decoded::new(&batch);
        let event_ids = decoded.event_ids();
        // The Redis fast path only at the head of the log, where a redelivered copy may follow its
        // original closely; a full batch means catching up, and PostgreSQL dedups on its own.
        let use_fast_path = batch.len() < self.batch_size;
        let known = if use_fast_path {
            self.fast_path.known(target.projection_id, &event_ids).instrument(spans.batch.clone()).await
        } else {
            HashSet::new()
        };
        let mut attempt = 0;
        let outcome = loop {
            let applied = project::apply(&target.pool, writer, &self.topic, &decoded, &known);
            match applied.instrument(spans.batch.clone()).await {
                Ok(Ok(outcome)) => break outcome,
                Ok(Err(superseded)) => {
                    tracing::info!(version = %target.version, "This projector no longer writes its read-model version");
                    return Err(superseded);
                }
                Err(error) => {
                    self.status.database_ok.store(false, Ordering::Relaxed);
                    crate::metrics::batch_retried();
                    tracing::warn!(%error, attempt, records = batch.len(), "Applying a batch failed; retrying");
                    self.status.retried.push(format!(
                        "applying a batch of {} failed (attempt {attempt}): {error}",
                        batch.len()
                    ));
                    tokio::select! {
                        _ = shutdown.cancelled(), if attempt > 0 => {
                            tracing::warn!(records = batch.len(), "Stopping with an unapplied batch; it will be read again");
                            return Ok(());
                        }
                        _ = tokio::time::sleep(RETRY.delay(attempt)) => {}
                    }
                    attempt += 1;
                }
            }
        };
        let applied_in = started.elapsed().as_secs_f64();
        spans.applied(&outcome);
        drop(decoded);
        if use_fast_path {
            // Best effort, and off the path of the next batch.
            let (fast_path, projection_id) = (self.fast_path.clone(), target.projection_id);
            tokio::spawn(
                async move { fast_path.remember(projection_id, &event_ids).await }
                    .instrument(spans.batch.clone()),
            );
        }
        self.mirror_dead_letters(&outcome.new_dead_letters).await;
        self.status.database_ok.store(true, Ordering::Relaxed);
        crate::metrics::batch_applied(applied_in, batch.len(), &outcome);
        tracing::debug!(?outcome, "Batch applied");
        consumer::commit_advisory(&self.consumer, &self.topic, &outcome.next_offsets);
        Ok(())
    }
}

impl Runner {
    /// Copies new dead letters to the Redis stream operators watch. If Redis is down they are
    /// safe in PostgreSQL, and the observer reconciles the stream once Redis answers again.
    async fn mirror_dead_letters(&self, new: &[i64]) {
        if new.is_empty() {
            return;
        }
        let mut entries = Vec::with_capacity(new.len());
        for &id in new {
            if let Ok(Some(entry)) = dlq::get(&self.public, id).await {
                entries.push(entry);
            }
        }
        if let Err(error) = self.mirror.publish(&entries).await {
            tracing::warn!(%error, "Dead letters are safe in PostgreSQL but not yet mirrored to Redis");
            self.status.mirror_dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// Retries of a failed read or batch: 100 ms doubling up to 10 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
