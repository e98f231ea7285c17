//! Folding the log into decision state: at start-up when the state is missing or belongs to
//! another log, for `state rebuild`, and for `state verify`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventline_events::{Envelope, LogPosition};
use eventline_runtime::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

use super::model::Aggregates;

/// The fold of a whole log.
#[derive(Debug, Default)]
pub struct Folded {
    pub state: Aggregates,
    /// Each event once (its first copy), with the aggregate it belongs to and where it sits.
    pub decided: Vec<(Uuid, String, LogPosition)>,
    /// Later copies of an event already folded (a pending decision appended twice).
    pub duplicates: u64,
    /// Messages that are not events (the projector dead-letters them); skipped.
    pub undecodable: u64,
}

/// Reads every partition of the topic from the beginning to its end as of now, folding each event
/// in log order (partition by partition: an aggregate's events share one partition).
pub async fn fold_log(kafka: &KafkaConfig) -> anyhow::Result<Folded> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || fold_blocking(&kafka)).await.context("the log fold panicked")?
}

fn fold_blocking(kafka: &KafkaConfig) -> anyhow::Result<Folded> {
    let consumer: BaseConsumer = eventline_runtime::kafka::client_config(kafka)
        .set("group.id", "eventline-command-state-fold")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("creating the log reader")?;
    let timeout = Duration::from_secs(10);
    let metadata =
        consumer.fetch_metadata(Some(&kafka.topic), timeout).context("reading the topic's metadata")?;
    let partitions: Vec<i32> =
        metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut ends = Vec::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&kafka.topic, partition, timeout)
            .with_context(|| format!("reading the end of partition {partition}"))?;
        if high > low {
            ends.push((partition, high));
        }
    }
    let total: i64 = ends.iter().map(|(_, high)| high).sum();
    let mut folded = Folded::default();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut read: i64 = 0;
    for (partition, end) in ends {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&kafka.topic, partition, Offset::Beginning)?;
        consumer.assign(&assignment).context("assigning a partition to the log reader")?;
        let mut next = 0;
        let mut idle_since = Instant::now();
        while next < end {
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                anyhow::ensure!(
                    idle_since.elapsed() < Duration::from_secs(30),
                    "partition {partition} gave nothing for 30 s at offset {next} of {end}"
                );
                continue;
            };
            let message = message.with_context(|| format!("reading partition {partition}"))?;
            idle_since = Instant::now();
            next = message.offset() + 1;
            read += 1;
            let position = LogPosition { partition, offset: message.offset() };
            match Envelope::decode(message.payload().unwrap_or_default()) {
                Ok(envelope) if seen.insert(envelope.event_id) => {
                    folded.state.apply(&envelope.event);
                    folded.decided.push((envelope.event_id, envelope.aggregate_id(), position));
                }
                Ok(_) => folded.duplicates += 1,
                Err(_) => folded.undecodable += 1,
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                tracing::info!(read, total, "Folding the log into the decision state");
                last_report = Instant::now();
            }
        }
    }
    tracing::info!(
        events = folded.decided.len(),
        duplicates = folded.duplicates,
        undecodable = folded.undecodable,
        seconds = started.elapsed().as_secs_f64(),
        "Folded the log into the decision state"
    );
    Ok(folded)
}
