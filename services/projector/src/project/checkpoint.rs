//! Checkpoints: for each partition of the topic, the next offset to apply. They live in the same
//! database as the read models and are written in the same transaction as the effects, so the read
//! models and the position they reflect can never disagree.

use eventline_runtime::db;
use std::collections::BTreeMap;
use tracing::Instrument as _;

use sqlx::{Postgres, Transaction};

pub use eventline_read_models::checkpoints::{load, load_version};

/// The id of the event applied from `offset` of `partition`, if this version recorded one (the
/// dedup record of that offset): what the log must still hold there.
pub async fn applied_at(
    pool: &sqlx::PgPool,
    topic: &str,
    partition: i32,
    offset: i64,
) -> sqlx::Result<Option<uuid::Uuid>> {
    sqlx::query_scalar(
        "SELECT event_id FROM processed_events WHERE topic = $1 AND partition = $2 AND log_offset = $3",
    )
    .bind(topic)
    .bind(partition)
    .bind(offset)
    .fetch_optional(pool)
    .await
}

/// Advances checkpoints, with when the newest applied event of each partition was appended
/// (`appended_ms`, milliseconds since the epoch, where the broker said); never moves either
/// backwards (a stale instance finishing a batch after a rebalance must not rewind the new
/// owner's progress).
pub async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    next_offsets: &BTreeMap<i32, i64>,
    appended_ms: &BTreeMap<i32, i64>,
) -> sqlx::Result<()> {
    if next_offsets.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = next_offsets.keys().copied().collect();
    let offsets: Vec<i64> = next_offsets.values().copied().collect();
    let appended: Vec<Option<i64>> = partitions.iter().map(|p| appended_ms.get(p).copied()).collect();
    // Announced when the transaction commits, with the positions reached: a query service waiting
    // for them (read-your-writes) wakes without another query (payload: `checkpoints::CHANNEL`).
    sqlx::query(
        "WITH advanced AS (
             INSERT INTO projection_checkpoints (topic, partition, next_offset, updated_at, last_appended_at)
             SELECT $1, p, o, now(), to_timestamp(a / 1000.0)
             FROM UNNEST($2::int[], $3::bigint[], $5::bigint[]) AS t(p, o, a)
             ON CONFLICT (topic, partition) DO UPDATE
             SET next_offset = GREATEST(projection_checkpoints.next_offset, EXCLUDED.next_offset),
                 last_appended_at = GREATEST(projection_checkpoints.last_appended_at, EXCLUDED.last_appended_at),
                 updated_at = now()
             RETURNING partition, next_offset)
         SELECT pg_notify($4, current_schema() || ' ' || $1 || ' ' || string_agg(partition || ':' || next_offset, ','))
         FROM advanced",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .bind(eventline_read_models::checkpoints::CHANNEL)
    .bind(&appended)
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "projection_checkpoints"))
    .await?;
    Ok(())
}
