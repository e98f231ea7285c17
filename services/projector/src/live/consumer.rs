//! The Kafka side of the projector: a consumer-group member that starts every partition it is
//! assigned at its PostgreSQL checkpoint, and tells the runner about each change of assignment.

use eventline_runtime::config::KafkaConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::Config;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::live::target::Writing;
use crate::project::Record;
use eventline_runtime::backoff::{Backoff, Stop};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A change of the partitions this instance owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Newly owned partitions, with the checkpoint each was started from (`None` when the
    /// checkpoints could not be read: the runner then positions them itself).
    Assigned(Vec<(i32, Option<i64>)>),
    Revoked(Vec<i32>),
}

/// Positions newly assigned partitions and forwards every change to the runner.
///
/// The offsets are set in the assignment itself, before librdkafka fetches anything: seeking
/// afterwards races with fetches already under way (seeks that fail with "Erroneous state", or
/// succeed and are then never served). The callback runs inside the consumer's poll, so the runner
/// also learns of an assignment before any of its messages.
pub struct Positioner {
    topic: String,
    /// Whose checkpoints position the partitions.
    writing: Arc<Writing>,
    tx: UnboundedSender<Assignment>,
}

/// Retries of a checkpoint read inside the rebalance callback: five within about three seconds.
const CHECKPOINT_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));

impl Positioner {
    /// The checkpoints, read synchronously: the rebalance callback cannot await. Gives up after a
    /// few attempts (the database may be down) and leaves positioning to the runner.
    fn checkpoints(&self) -> Option<BTreeMap<i32, i64>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        tokio::task::block_in_place(|| {
            let load = || async { self.writing.load_checkpoints(&self.topic).await };
            let failed = |error: &sqlx::Error, attempt| {
                tracing::warn!(%error, attempt, "Reading checkpoints for an assignment failed");
            };
            handle.block_on(CHECKPOINT_RETRY.retry(Stop::After(5), load, failed)).ok()
        })
    }
}

impl ClientContext for Positioner {}

impl ConsumerContext for Positioner {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let ours = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect()
        };
        let change = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let checkpoints = self.checkpoints();
                let mut assigned = Vec::new();
                for partition in ours(tpl) {
                    let next = checkpoints.as_ref().map(|c| c.get(&partition).copied().unwrap_or(0));
                    if let Some(next) = next {
                        let _ = tpl.set_partition_offset(&self.topic, partition, Offset::Offset(next));
                    }
                    assigned.push((partition, next));
                }
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(%error, "Taking the assigned partitions failed");
                }
                Assignment::Assigned(assigned)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = ours(tpl);
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "Giving up the revoked partitions failed");
                }
                Assignment::Revoked(revoked)
            }
            other => {
                tracing::warn!(error = ?other, "Consumer group rebalance failed; librdkafka will retry");
                let _ = consumer.unassign();
                Assignment::Revoked(ours(tpl))
            }
        };
        tracing::info!(?change, "Partition assignment changed");
        // The runner owns the receiver for the consumer's whole life.
        let _ = self.tx.send(change);
    }
}

pub type LogConsumer = StreamConsumer<Positioner>;

/// Whether the consumer's brokers answer a metadata request within two seconds (readiness).
pub async fn is_reachable(consumer: &Arc<LogConsumer>) -> bool {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok())
        .await
        .unwrap_or(false)
}

/// This process as a member of the group: `eventline-projector@<host>/<pid>`.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("eventline-projector@{host}/{}", std::process::id())
}

/// Joins the group and subscribes to the topic.
pub fn subscribe(
    config: &Config,
    group_id: &str,
    writing: Arc<Writing>,
) -> KafkaResult<(Arc<LogConsumer>, UnboundedReceiver<Assignment>)> {
    let (kafka, session_timeout_ms) = (&config.kafka, config.session_timeout_ms);
    let (tx, rx) = unbounded_channel();
    let consumer: LogConsumer = eventline_runtime::kafka::client_config(kafka)
        .set("group.id", group_id)
        // Names this instance in the group's description (the console's partition owners).
        .set("client.id", instance_name())
        // Positions come from PostgreSQL; Kafka's committed offsets are advisory (lag monitoring).
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // How long a fetch may wait for new data (see `Config::fetch_wait_ms`).
        .set("fetch.wait.max.ms", config.fetch_wait_ms.to_string())
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (session_timeout_ms / 3).max(100).to_string())
        .create_with_context(Positioner { topic: kafka.topic.clone(), writing, tx })?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok((Arc::new(consumer), rx))
}

/// Moves a partition's read position to `offset` (blocking librdkafka call, run off the async
/// threads).
pub async fn seek(consumer: &Arc<LogConsumer>, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
    let (consumer, topic) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5))
    })
    .await
    .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
}

/// Reads the payload of the one message at `offset`, with a consumer of its own (no group):
/// `None` when the partition has no message there.
pub async fn read_one(kafka: &KafkaConfig, partition: i32, offset: i64) -> KafkaResult<Option<Vec<u8>>> {
    let kafka = kafka.clone();
    let topic = kafka.topic.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = eventline_runtime::kafka::client_config(&kafka)
            .set("group.id", "eventline-projector-checkpoint-check")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .create()?;
        // Outside the partition's range there is no message to read (Kafka answers such a fetch
        // with an offset-out-of-range error, which librdkafka reports as a failed offset reset).
        let (low, high) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        consumer.assign(&assignment)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) if message.offset() == offset => {
                    return Ok(Some(message.payload().unwrap_or_default().to_vec()));
                }
                Some(Ok(message)) if message.offset() < offset => {}
                Some(Ok(_)) => return Ok(None),
                Some(Err(error))
                    if matches!(
                        error.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
                    ) =>
                {
                    return Ok(None);
                }
                Some(Err(error)) => return Err(error),
                None => {}
            }
        }
        Ok(None)
    })
    .await
    .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
}

/// Tells Kafka how far the group got (advisory; the truth is the PostgreSQL checkpoint).
pub fn commit_advisory(
    consumer: &LogConsumer,
    topic: &str,
    next_offsets: &std::collections::BTreeMap<i32, i64>,
) {
    let mut tpl = TopicPartitionList::new();
    for (&partition, &next) in next_offsets {
        if tpl.add_partition_offset(topic, partition, Offset::Offset(next)).is_err() {
            return;
        }
    }
    if let Err(error) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async) {
        tracing::debug!(%error, "Advisory offset commit failed");
    }
}

/// Reads given offset ranges of the topic in chunks, with a consumer of its own (no group, no
/// commits): for folding a known stretch of the log (`verify`). Blocking; run it off the async
/// threads.
pub struct RangeReader {
    consumer: BaseConsumer,
    topic: String,
    /// Per partition still to read: the next offset wanted and the end (exclusive).
    pending: BTreeMap<i32, (i64, i64)>,
}

impl RangeReader {
    /// How long the log may deliver nothing before reading fails.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Starts reading `[from, to)` of each partition given.
    pub fn open(kafka: &KafkaConfig, ranges: &BTreeMap<i32, (i64, i64)>) -> KafkaResult<RangeReader> {
        let topic = kafka.topic.as_str();
        let consumer: BaseConsumer = eventline_runtime::kafka::client_config(kafka)
            .set("group.id", "eventline-projector-range-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .create()?;
        let pending: BTreeMap<i32, (i64, i64)> =
            ranges.iter().filter(|(_, (from, to))| from < to).map(|(&p, &range)| (p, range)).collect();
        let mut assignment = TopicPartitionList::new();
        for (&partition, &(from, _)) in &pending {
            assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
        }
        consumer.assign(&assignment)?;
        Ok(RangeReader { consumer, topic: topic.to_owned(), pending })
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Up to `max` further records of the ranges, in log order per partition. Fails when the log
    /// delivers nothing for a while although records are missing (a broker down, a log cut short).
    pub fn next_chunk(&mut self, max: usize) -> KafkaResult<Vec<Record>> {
        self.next_chunk_with(max, |message| Record::from_message(message))
    }

    /// As [`next_chunk`](Self::next_chunk), each message made into a `T` by `take` while it is
    /// borrowed (a reader that needs less of it than a whole [`Record`] copies less).
    pub fn next_chunk_with<T>(
        &mut self,
        max: usize,
        mut take: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> T,
    ) -> KafkaResult<Vec<T>> {
        let mut chunk = Vec::with_capacity(max.min(20_000));
        let mut last_progress = std::time::Instant::now();
        while chunk.len() < max && !self.pending.is_empty() {
            let message = match self.consumer.poll(Duration::from_millis(100)) {
                Some(message) => message?,
                None if !chunk.is_empty() => break,
                None if last_progress.elapsed() > Self::PATIENCE => {
                    return Err(rdkafka::error::KafkaError::MessageConsumption(
                        RDKafkaErrorCode::OperationTimedOut,
                    ));
                }
                None => continue,
            };
            let partition = message.partition();
            let Some((next, end)) = self.pending.get_mut(&partition) else { continue };
            if message.offset() < *next {
                continue; // a redelivery from before the range
            }
            last_progress = std::time::Instant::now();
            if message.offset() < *end {
                *next = message.offset() + 1;
                chunk.push(take(&message));
            }
            if message.offset() + 1 >= *end {
                self.pending.remove(&partition);
                let mut done = TopicPartitionList::new();
                done.add_partition(&self.topic, partition);
                // Stop fetching what lies past the range.
                let _ = self.consumer.pause(&done);
            }
        }
        Ok(chunk)
    }
}
