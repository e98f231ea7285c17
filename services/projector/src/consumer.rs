//! The Kafka side of the projector: a consumer-group member whose partition assignments are passed
//! to the runner, which positions each partition at its PostgreSQL checkpoint.

use std::sync::Arc;
use std::time::Duration;

use eventline_runtime::config::KafkaConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A change of the partitions this instance owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Forwards rebalances to the runner. The callback runs inside the consumer's poll, so the runner
/// sees an assignment before any message of the newly assigned partitions.
pub struct RebalanceForwarder {
    topic: String,
    tx: UnboundedSender<Assignment>,
}

impl ClientContext for RebalanceForwarder {}

impl ConsumerContext for RebalanceForwarder {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect()
        };
        let change = match rebalance {
            Rebalance::Assign(tpl) => Assignment::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => Assignment::Revoked(partitions(tpl)),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "Consumer group rebalance failed; librdkafka will retry");
                return;
            }
        };
        tracing::info!(?change, "Partition assignment changed");
        // The runner owns the receiver for the consumer's whole life.
        let _ = self.tx.send(change);
    }
}

pub type LogConsumer = StreamConsumer<RebalanceForwarder>;

/// Joins the group and subscribes to the topic.
pub fn subscribe(
    kafka: &KafkaConfig,
    group_id: &str,
    session_timeout_ms: u64,
) -> KafkaResult<(Arc<LogConsumer>, UnboundedReceiver<Assignment>)> {
    let (tx, rx) = unbounded_channel();
    let consumer: LogConsumer = eventline_runtime::kafka::client_config(&kafka.brokers)
        .set("group.id", group_id)
        // Positions come from PostgreSQL; Kafka's committed offsets are advisory (lag monitoring).
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (session_timeout_ms / 3).max(100).to_string())
        .create_with_context(RebalanceForwarder { topic: kafka.topic.clone(), tx })?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok((Arc::new(consumer), rx))
}

/// How far before a wanted offset reading starts.
///
/// A Kafka fetch returns whole record batches, and clients skip the records before the offset they
/// asked for. Tansu 0.6.0 instead answers a fetch at an offset *inside* a batch with the batch
/// after it, silently skipping the rest of that batch (measured: batches [0] [1-3] [4-8]; a fetch
/// at 2 returns 4-8). Reading from this far back and skipping below the wanted offset ourselves
/// works on both; producers batch at most 10 000 records (librdkafka's `batch.num.messages`).
pub const REWIND: i64 = 10_000;

/// Where to start reading so that `offset` is delivered (see [`REWIND`]).
pub fn rewound(offset: i64) -> i64 {
    offset.saturating_sub(REWIND).max(0)
}

/// Moves a partition's read position to `rewound(offset)`: the caller skips what lies before
/// `offset` (blocking librdkafka call, run off the async threads).
pub async fn seek(consumer: &Arc<LogConsumer>, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
    let (consumer, topic) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5))
    })
    .await
    .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
}

/// Reads the payload of the one message at `offset`, with a consumer of its own (no group):
/// `None` when the partition has no message there. Reads forward from `rewound(offset)`.
pub async fn read_one(
    brokers: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> KafkaResult<Option<Vec<u8>>> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = eventline_runtime::kafka::client_config(&brokers)
            .set("group.id", "eventline-projector-checkpoint-check")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, partition, Offset::Offset(rewound(offset)))?;
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
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) =>
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
