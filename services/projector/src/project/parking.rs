//! Parking, as the projection writes it (migrations/0012): a key the database refused an event
//! of, with that event and every later one of the key, in the transaction that moves the
//! checkpoint past them. `crate::parked` is the operators' side (list, redrive, discard).

use std::collections::HashSet;

use chrono::DateTime;
use eventline_events::Event;
use eventline_runtime::db;
use sqlx::{Postgres, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

use super::Positioned;

/// Why a key was parked: the refusal of its first parked event.
pub struct Refusal {
    pub sqlstate: Option<String>,
    pub error: String,
}

impl Refusal {
    pub fn of(error: &sqlx::Error) -> Refusal {
        let error_text = match error {
            sqlx::Error::Database(database) => database.message().to_owned(),
            other => other.to_string(),
        };
        Refusal { sqlstate: super::failure::sqlstate(error), error: error_text }
    }
}

/// The keys among `keys` that are parked now, locked against a redrive or discard until the
/// transaction ends (a redrive holds the key's row for update while it applies, so an event of
/// the key is either applied after the redrive or parked before it, never in between).
pub(super) async fn parked_among(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    keys: &[&[u8]],
) -> sqlx::Result<HashSet<Vec<u8>>> {
    let keys: Vec<&[u8]> = keys.to_vec();
    let parked: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT message_key FROM parked_keys WHERE topic = $1 AND message_key = ANY($2::bytea[]) FOR SHARE",
    )
    .bind(topic)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .instrument(db::span("SELECT", "parked_keys"))
    .await?;
    Ok(parked.into_iter().collect())
}

/// Keys parked now, for the breaker.
pub(super) async fn count(tx: &mut Transaction<'_, Postgres>, topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM parked_keys WHERE topic = $1")
        .bind(topic)
        .fetch_one(&mut **tx)
        .instrument(db::span("SELECT", "parked_keys"))
        .await
}

/// Parks a key: `events` are the refused event and every later one of its key in the batch, in
/// log order; `refusal` is why the first was refused.
pub(super) async fn park(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    events: &[&Positioned<'_>],
    refusal: &Refusal,
) -> sqlx::Result<()> {
    let Some(first) = events.first() else { return Ok(()) };
    // The error's text can quote the row (personal data): it is stored with the parked events,
    // the log gets only its SQLSTATE and position.
    tracing::warn!(
        partition = first.record.partition,
        offset = first.record.offset,
        sqlstate = refusal.sqlstate.as_deref().unwrap_or("none"),
        events = events.len(),
        "Parking a key: the database refused one of its events (details: eventline-projector parked list)"
    );
    sqlx::query(
        "INSERT INTO parked_keys (topic, message_key, partition, log_offset, event_type, sqlstate, error, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (topic, message_key) DO NOTHING",
    )
    .bind(topic)
    .bind(first.key())
    .bind(first.record.partition)
    .bind(first.record.offset)
    .bind(first.envelope.event_type().as_str())
    .bind(refusal.sqlstate.as_deref())
    .bind(&refusal.error)
    .bind(first.record.trace_id())
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "parked_keys"))
    .await?;
    join(tx, topic, events).await
}

/// Adds events to the keys they belong to, which are parked.
pub(super) async fn join(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    events: &[&Positioned<'_>],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let headers: Vec<sqlx::types::Json<&std::collections::BTreeMap<String, String>>> =
        events.iter().map(|e| sqlx::types::Json(&e.record.headers)).collect();
    // The user whose served document the event would change: an order's placement names it, a
    // payment's order (when applied) holds it.
    let (users, orders): (Vec<Option<Uuid>>, Vec<Option<Uuid>>) = events
        .iter()
        .map(|e| match &e.envelope.event {
            Event::OrderPlaced(placed) => (Some(placed.user_id), None),
            Event::PaymentSettled(paid) => (None, Some(paid.order_id)),
            Event::UserCreated(_) | Event::InventoryAdjusted(_) => (None, None),
        })
        .unzip();
    sqlx::query(
        "INSERT INTO parked_events (topic, partition, log_offset, message_key, event_id, event_type, payload,
                                    headers, trace_id, appended_at, user_id)
         SELECT $1, p, o, k, id, t, payload, headers, trace, appended,
                COALESCE(u, (SELECT user_id FROM orders WHERE order_id = ord))
         FROM UNNEST($2::int[], $3::bigint[], $4::bytea[], $5::uuid[], $6::text[], $7::bytea[],
                     $8::jsonb[], $9::text[], $10::timestamptz[], $11::uuid[], $12::uuid[])
              AS e(p, o, k, id, t, payload, headers, trace, appended, u, ord)
         ON CONFLICT (topic, partition, log_offset) DO NOTHING",
    )
    .bind(topic)
    .bind(events.iter().map(|e| e.record.partition).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.record.offset).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.key()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.envelope.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.envelope.event_type().as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.record.payload.as_slice()).collect::<Vec<_>>())
    .bind(headers)
    .bind(events.iter().map(|e| e.record.trace_id()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.record.appended_at_ms.and_then(DateTime::from_timestamp_millis))
            .collect::<Vec<_>>(),
    )
    .bind(&users)
    .bind(&orders)
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "parked_events"))
    .await?;
    Ok(())
}
