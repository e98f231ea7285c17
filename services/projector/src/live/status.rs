//! How far the projection is: per partition, the checkpoint, the log's end and the lag between
//! them; and the dead-letter queue's depth. Shown by `status` and `GET /projections`.

use eventline_runtime::config::KafkaConfig;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use sqlx::PgPool;

use crate::dlq;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub topic: String,
    pub partitions: Vec<PartitionStatus>,
    /// Sum of the partitions' lag.
    pub lag: i64,
    pub dead_letters: i64,
    /// Aggregate keys parked behind an event the database refused, and the events waiting.
    pub parked_keys: i64,
    pub parked_events: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    pub partition: i32,
    /// Next offset to apply (0 when nothing was applied yet).
    pub next_offset: i64,
    /// The log's end as the broker reports it, when it answered.
    pub high_watermark: Option<i64>,
    /// Events in the log not yet applied (never shown negative).
    pub lag: Option<i64>,
    /// When the newest applied event of the partition was appended to the log.
    pub last_appended_at: Option<DateTime<Utc>>,
}

/// Collects the status from PostgreSQL and the broker (partitions the broker does not answer for
/// show no watermark).
pub async fn collect(pool: &PgPool, kafka: &KafkaConfig) -> anyhow::Result<ProjectionStatus> {
    let topic = kafka.topic.as_str();
    let checkpoints = checkpoints(pool, topic).await?;
    let dead_letters = dlq::depth(pool, topic).await?;
    let (parked_keys, parked_events) = crate::parked::depth(pool, topic).await?;
    let watermarks = high_watermarks(kafka).await.unwrap_or_default();

    let mut partitions: Vec<PartitionStatus> = watermarks
        .into_iter()
        .map(|(partition, high_watermark)| {
            let (next_offset, last_appended_at) = checkpoints.get(&partition).copied().unwrap_or((0, None));
            PartitionStatus {
                partition,
                next_offset,
                high_watermark,
                lag: high_watermark.map(|h| (h - next_offset).max(0)),
                last_appended_at,
            }
        })
        .collect();
    for (&partition, &(next_offset, last_appended_at)) in &checkpoints {
        if !partitions.iter().any(|p| p.partition == partition) {
            partitions.push(PartitionStatus {
                partition,
                next_offset,
                high_watermark: None,
                lag: None,
                last_appended_at,
            });
        }
    }
    partitions.sort_by_key(|p| p.partition);
    let lag = partitions.iter().filter_map(|p| p.lag).sum();
    Ok(ProjectionStatus {
        topic: topic.to_owned(),
        partitions,
        lag,
        dead_letters,
        parked_keys,
        parked_events,
    })
}

/// Per partition of `topic`: the next offset to apply and when the newest applied event was appended.
async fn checkpoints(
    pool: &PgPool,
    topic: &str,
) -> sqlx::Result<BTreeMap<i32, (i64, Option<DateTime<Utc>>)>> {
    let rows: Vec<(i32, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT partition, next_offset, last_appended_at FROM projection_checkpoints WHERE topic = $1",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(partition, next, at)| (partition, (next, at))).collect())
}

/// Publishes the status as metrics (lag per partition, DLQ depth, parked keys and events).
pub fn record_metrics(status: &ProjectionStatus) {
    for p in &status.partitions {
        if let Some(lag) = p.lag {
            crate::metrics::lag(p.partition, lag);
        }
    }
    crate::metrics::dead_letters(status.dead_letters);
    crate::metrics::parked(status.parked_keys, status.parked_events);
}

/// Each partition's high watermark, `None` where the broker did not answer. The client's calls
/// block, so they run off the async threads.
pub async fn high_watermarks(kafka: &KafkaConfig) -> Result<Vec<(i32, Option<i64>)>, tokio::task::JoinError> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || blocking_high_watermarks(&kafka)).await
}

fn blocking_high_watermarks(kafka: &KafkaConfig) -> Vec<(i32, Option<i64>)> {
    let topic = kafka.topic.as_str();
    let Ok(consumer) = eventline_runtime::kafka::client_config(kafka).create::<BaseConsumer>() else {
        return Vec::new();
    };
    let timeout = Duration::from_secs(3);
    let partitions: Vec<i32> = consumer
        .fetch_metadata(Some(topic), timeout)
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()))
        .unwrap_or_default();
    partitions
        .into_iter()
        .map(|p| (p, consumer.fetch_watermarks(topic, p, timeout).ok().map(|(_, high)| high)))
        .collect()
}

/// One projection's progress: its live version (or, never live yet, the version catching up for
/// the first time) and its lag behind the log.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionLag {
    pub projection: eventline_read_models::Projection,
    pub version: i32,
    pub state: eventline_read_models::State,
    /// Events in the log it has not applied yet (sum over the partitions the broker reported).
    pub lag: i64,
}

/// The progress of every projection against the log's ends in `partitions` (as `collect` found
/// them), through a pool on `public`.
pub async fn projection_lags(
    public: &PgPool,
    topic: &str,
    partitions: &[PartitionStatus],
) -> anyhow::Result<Vec<ProjectionLag>> {
    use eventline_read_models::{self as read_models, Projection, State};
    let mut lags = Vec::new();
    for projection in Projection::ALL {
        let version = match read_models::in_state(public, projection, State::Live).await? {
            Some(live) => Some((live, State::Live)),
            None => read_models::in_state(public, projection, State::Building)
                .await?
                .map(|v| (v, State::Building)),
        };
        let Some((version, state)) = version else { continue };
        let checkpoints = read_models::checkpoints::load_version(public, version, topic).await?;
        let lag = partitions
            .iter()
            .filter_map(|p| {
                Some((p.high_watermark? - checkpoints.get(&p.partition).copied().unwrap_or(0)).max(0))
            })
            .sum();
        lags.push(ProjectionLag { projection, version: version.number, state, lag });
    }
    Ok(lags)
}
