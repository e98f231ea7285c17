//! The event index (migrations/0011): one row per applied event, naming its aggregate, position,
//! version within the aggregate, time and data. Written with the other read models, so a history
//! never lists an event the read models have not applied, nor lacks one they have.

use chrono::{DateTime, Utc};
use eventline_runtime::db;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

use super::Positioned;

/// Indexes events applied for the first time, given in log order per partition. An aggregate's
/// events share a partition, so numbering them by offset after the aggregate's latest version gives
/// the same versions on every replay.
pub(super) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    events: &[&Positioned<'_>],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.envelope.event.aggregate_type()).collect();
    let ids: Vec<String> = events.iter().map(|e| e.envelope.aggregate_id()).collect();
    let partitions: Vec<i32> = events.iter().map(|e| e.record.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|e| e.record.offset).collect();
    let event_ids: Vec<Uuid> = events.iter().map(|e| e.envelope.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.envelope.event_type().as_str()).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.envelope.occurred_at).collect();
    let appended: Vec<Option<DateTime<Utc>>> =
        events.iter().map(|e| e.record.appended_at_ms.and_then(DateTime::from_timestamp_millis)).collect();
    let data: Vec<Json<serde_json::Value>> = events.iter().map(|e| Json(e.envelope.event.data())).collect();
    sqlx::query(
        "INSERT INTO event_index (aggregate_type, aggregate_id, version, partition, log_offset, event_id,
                                  event_type, occurred_at, appended_at, data)
         SELECT u.kind, u.id,
                COALESCE((SELECT max(e.version) FROM event_index e
                           WHERE e.aggregate_type = u.kind AND e.aggregate_id = u.id), 0)
                  + row_number() OVER (PARTITION BY u.kind, u.id ORDER BY u.p, u.o),
                u.p, u.o, u.event_id, u.event_type, u.occurred_at, u.appended_at, u.data
         FROM UNNEST($1::text[], $2::text[], $3::int[], $4::bigint[], $5::uuid[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::jsonb[])
              AS u(kind, id, p, o, event_id, event_type, occurred_at, appended_at, data)",
    )
    .bind(&kinds)
    .bind(&ids)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&event_ids)
    .bind(&types)
    .bind(&occurred)
    .bind(&appended)
    .bind(&data)
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "event_index"))
    .await?;
    Ok(())
}
