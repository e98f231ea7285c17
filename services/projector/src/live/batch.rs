//! Applying one batch: in one transaction, retried with backoff until it commits (a shutdown
//! stops the retries with nothing of the batch committed), then the Redis fast path, the dead
//! letters' mirror, the metrics and Kafka's advisory commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eventline_runtime::backoff::{Backoff, Stop};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dlq;
use crate::live::consumer;
use crate::live::runner::{Failing, FailingKind};
use crate::live::runner::{Role, Runner};
use crate::live::spans::BatchSpans;
use crate::live::target::{self, Target};
use crate::project::failure::{self, Cause};
use crate::project::{self, ApplyError, Decoded, Parking, Record};
use eventline_read_models::Version;

/// Records read for one transaction, and when the first of them was read.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) records: Vec<Record>,
    first: Option<FirstRead>,
}

impl Batch {
    pub(super) fn push(&mut self, record: Record, message: &BorrowedMessage<'_>) {
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

impl Runner {
    /// Applies the batch to every version this runner writes (each projection its part of it, in
    /// a transaction of its own, side by side), retrying transient failures with backoff until
    /// they commit. Only a shutdown interrupts the retries, and then nothing more of the batch is
    /// committed. `Superseded` when a version written was switched away, or the live versions
    /// changed (nothing more committed).
    pub(super) async fn flush(
        &self,
        batch: Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), project::Superseded> {
        let Batch { records: batch, first } = batch;
        if batch.is_empty() {
            return Ok(());
        }
        if self.status.versions_changed.load(Ordering::Relaxed) && self.role == Role::Live {
            return Err(project::Superseded);
        }
        let started = std::time::Instant::now();
        if let Some(first) = first {
            first.record(started);
        }
        let spans = BatchSpans::start(&self.topic, &self.group_id, &batch);
        let decoded = Decoded::new(&batch);
        // The Redis fast path only at the head of the log, where a redelivered copy may follow its
        // original closely; a full batch means catching up, and PostgreSQL dedups on its own.
        let use_fast_path = batch.len() < self.batch_size;
        let targets = self.writing.all();
        let applied = futures::future::join_all(targets.iter().map(|target| {
            let part = decoded.for_projection(target.version.projection, &target.applied());
            self.apply_part(target, part, use_fast_path, &spans, shutdown)
        }))
        .await;
        if let Ok(mut failing) = self.status.failing.lock() {
            *failing = None;
        }
        crate::metrics::breaker_open(false);
        let mut outcomes = Vec::with_capacity(applied.len());
        for (target, applied) in targets.iter().zip(applied) {
            match applied {
                Ok(Some(outcome)) => outcomes.push((target, outcome)),
                Ok(None) => {}
                Err(superseded) => {
                    tracing::info!(version = %target.version, "This projector no longer writes its read-model version");
                    return Err(superseded);
                }
            }
        }
        let applied_in = started.elapsed().as_secs_f64();
        for (target, outcome) in &outcomes {
            target.advance(&outcome.next_offsets);
            spans.applied(outcome);
            self.mirror_dead_letters(&outcome.new_dead_letters).await;
            crate::metrics::batch_applied(target.version.projection, applied_in, batch.len(), outcome);
            tracing::debug!(version = %target.version, ?outcome, "Batch applied");
        }
        self.status.database_ok.store(true, Ordering::Relaxed);
        // Kafka's advisory offsets, for the batch's partitions: where every version has applied to.
        let mut committed = target::lowest(&targets.iter().map(|t| t.applied()).collect::<Vec<_>>());
        committed.retain(|partition, _| batch.iter().any(|r| r.partition == *partition));
        consumer::commit_advisory(&self.consumer, &self.topic, &committed);
        Ok(())
    }

    /// Applies one projection's part of a batch to its version: `None` when there was nothing
    /// for it, or a shutdown stopped the retries (nothing of it committed).
    async fn apply_part(
        &self,
        target: &Arc<Target>,
        part: Decoded<'_>,
        use_fast_path: bool,
        spans: &BatchSpans,
        shutdown: &CancellationToken,
    ) -> Result<Option<project::BatchOutcome>, project::Superseded> {
        if part.is_empty() {
            return Ok(None);
        }
        let writer = self.role.writer(target.version);
        let event_ids = part.event_ids();
        let known = if use_fast_path && !event_ids.is_empty() {
            self.fast_path.known(target.projection_id, &event_ids).instrument(spans.batch.clone()).await
        } else {
            HashSet::new()
        };
        // A batch read before a shutdown still gets a second try after a failure.
        let stop = if shutdown.is_cancelled() { Stop::After(2) } else { Stop::OnShutdown(shutdown) };
        let attempts = AtomicU32::new(0);
        let records = part.len();
        let applied = RETRY
            .retry(
                stop,
                || {
                    // An error neither a refusal of the data nor an outage counts as data (its
                    // key is parked) once it has been retried a few times.
                    let parking = Parking {
                        max_keys: self.park_max_keys,
                        unknown_is_data: attempts.load(Ordering::Relaxed) >= UNCLASSED_RETRIES,
                    };
                    project::apply(&target.pool, writer, &self.topic, &part, &known, parking)
                        .instrument(spans.batch.clone())
                },
                |error, attempt| {
                    attempts.store(attempt + 1, Ordering::Relaxed);
                    self.batch_failed(target.version, error, attempt, records);
                },
            )
            .await;
        let outcome = match applied {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(superseded)) => return Err(superseded),
            Err(_) => {
                tracing::warn!(version = %target.version, records, "Stopping with an unapplied batch; it will be read again");
                return Ok(None);
            }
        };
        if use_fast_path && !event_ids.is_empty() {
            // Best effort, and off the path of the next batch.
            let (fast_path, projection_id) = (self.fast_path.clone(), target.projection_id);
            // A parked event is not applied: the fast path must not call it so.
            let mut settled = event_ids;
            if !outcome.parked_ids.is_empty() {
                let parked: HashSet<uuid::Uuid> = outcome.parked_ids.iter().copied().collect();
                settled.retain(|id| !parked.contains(id));
            }
            tokio::spawn(
                async move { fast_path.remember(projection_id, &settled).await }
                    .instrument(spans.batch.clone()),
            );
        }
        Ok(Some(outcome))
    }

    /// A failed try of a batch: counted, logged, and shown (the console, `status`, `/readyz`).
    fn batch_failed(&self, version: Version, error: &ApplyError, attempt: u32, records: usize) {
        crate::metrics::batch_retried();
        let kind = match error {
            ApplyError::BreakerOpen { .. } => FailingKind::Breaker,
            ApplyError::Database(error) if failure::classify(error) == Cause::Outage => FailingKind::Outage,
            ApplyError::Database(_) => FailingKind::Unclassed,
        };
        if kind == FailingKind::Outage {
            self.status.database_ok.store(false, Ordering::Relaxed);
        }
        crate::metrics::breaker_open(kind == FailingKind::Breaker);
        let sqlstate = error.sqlstate();
        if kind == FailingKind::Breaker {
            // The breaker's message quotes the database's, which can quote a row: the log gets the
            // SQLSTATE, the console and `status` the whole of it.
            tracing::error!(
                %version,
                sqlstate = sqlstate.as_deref().unwrap_or("none"),
                attempt,
                records,
                "The breaker is open: too many keys would be parked; the projection halts until the cause is fixed"
            );
        } else {
            tracing::warn!(
                %version,
                kind = kind.as_str(),
                sqlstate = sqlstate.as_deref().unwrap_or("none"),
                attempt,
                records,
                "Applying a batch failed; retrying"
            );
        }
        let message = error.to_string();
        self.status.retried.push(format!(
            "applying a batch of {records} to {version} failed (attempt {attempt}): {message}"
        ));
        if let Ok(mut failing) = self.status.failing.lock() {
            let since = failing.as_ref().map_or_else(chrono::Utc::now, |f| f.since);
            *failing =
                Some(Failing { kind, sqlstate, error: message, since, attempts: attempt + 1, records });
        }
    }

    /// Copies new dead letters to the Redis stream operators watch. If Redis is down they are
    /// safe in PostgreSQL, and the observer reconciles the stream once Redis answers again.
    async fn mirror_dead_letters(&self, new: &[i64]) {
        if new.is_empty() {
            return;
        }
        if let Err(error) = dlq::publish_new(&self.public, &self.mirror, new).await {
            tracing::warn!(%error, "Dead letters are safe in PostgreSQL but not yet mirrored to Redis");
            self.status.mirror_dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// Tries of a batch failing with an unclassed error before that error counts as data.
const UNCLASSED_RETRIES: u32 = 3;

/// Retries of a failed batch: 100 ms doubling up to 10 s.
pub(super) const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
