//! Find by key: where a user, an order or a sku lives — its partition, its read-model row, and
//! its events, from the event index (every event of the aggregate, at its position).
//!
//! The partition is the producer's: librdkafka's default partitioner (`consistent_random`) puts
//! a keyed message in CRC-32(key) mod the partition count, and every event's key is its
//! aggregate's id; it is shown even for a key with no event yet, as where its first would go.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use eventline_runtime::problem::{Problem, types};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ConsoleState;
use super::access::{Caller, Role};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Key {
    /// A user id, an order id or a sku.
    key: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    pub key: String,
    /// `user`, `order` or `sku`, from the read model that has a row for it; absent when none has.
    pub kind: Option<String>,
    /// The partition holding the key's events.
    pub partition: i32,
    /// The read-model row (without the stored document).
    #[schema(value_type = Option<Object>)]
    pub row: Option<serde_json::Value>,
    /// The key's events, in log order.
    pub events: Vec<FoundEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FoundEvent {
    /// The event's number within its aggregate.
    pub version: i64,
    pub partition: i32,
    pub offset: i64,
    pub event_type: String,
    pub event_id: uuid::Uuid,
    pub appended_at: Option<DateTime<Utc>>,
    /// The event's data; absent for the viewer role.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// The partition librdkafka's default partitioner gives a message keyed `key`.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let hash = crc32fast::hash(key.as_bytes());
    i32::try_from(hash % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Find a user, order or sku: partition, row and events
#[utoipa::path(get, path = "/console/api/find", tag = "find", params(Key),
    responses((status = 200, body = Found), (status = 400, description = "No key")))]
pub async fn find(
    caller: Caller,
    State(state): State<ConsoleState>,
    Query(Key { key }): Query<Key>,
) -> Result<Json<Found>, Problem> {
    let key = key.trim().to_owned();
    if key.is_empty() || key.len() > 200 {
        return Err(Problem::new(
            types::BAD_REQUEST,
            "Give a user id, an order id or a sku (1 to 200 characters).",
        ));
    }
    let pool = state.writing.current().pool.clone();
    let (kind, row) = row(&pool, &key).await.map_err(|e| super::cannot_read("The read models", e))?;
    let ends = crate::live::status::high_watermarks(&state.kafka).await.unwrap_or_default();
    let partitions = i32::try_from(ends.len()).unwrap_or(0);
    if partitions == 0 {
        return Err(Problem::new(
            types::DATABASE_UNAVAILABLE,
            "The broker does not answer for the topic now.",
        )
        .retry_after(1));
    }
    let partition = partition_of(&key, partitions);
    let indexed = events(&pool, &key).await.map_err(|e| super::cannot_read("The event index", e))?;
    let operator = caller.principal.role == Role::Operator;
    let events = indexed
        .into_iter()
        .map(|e| FoundEvent {
            version: e.version,
            partition: e.partition,
            offset: e.offset,
            event_type: e.event_type,
            event_id: e.event_id,
            appended_at: e.appended_at,
            data: operator.then_some(e.data),
        })
        .collect();
    Ok(Json(Found { key, kind, partition, row, events }))
}

/// The indexed events of every aggregate whose id is `key` (a user, an order or a sku).
async fn events(
    pool: &sqlx::PgPool,
    key: &str,
) -> sqlx::Result<Vec<eventline_read_models::history::HistoryEvent>> {
    use eventline_read_models::history::Aggregate;
    let mut found = Vec::new();
    let aggregates = match uuid::Uuid::try_parse(key) {
        Ok(id) => vec![Aggregate::User(id), Aggregate::Order(id)],
        Err(_) => vec![Aggregate::Inventory(key.to_owned())],
    };
    for aggregate in aggregates {
        found.extend(
            eventline_read_models::history::up_to(
                pool,
                &aggregate,
                eventline_read_models::history::Until::ALL,
            )
            .await?,
        );
    }
    Ok(found)
}

/// The read-model row of `key`, and which kind of aggregate it is.
async fn row(pool: &sqlx::PgPool, key: &str) -> sqlx::Result<(Option<String>, Option<serde_json::Value>)> {
    let by_id = [
        (
            "user",
            "SELECT to_jsonb(t) - 'document' - 'document_etag' FROM users t WHERE user_id = $1::text::uuid",
        ),
        (
            "order",
            "SELECT to_jsonb(t) - 'document' - 'document_etag' FROM orders t WHERE order_id = $1::text::uuid",
        ),
    ];
    if uuid::Uuid::try_parse(key).is_ok() {
        for (kind, sql) in by_id {
            if let Some(row) =
                sqlx::query_scalar::<_, serde_json::Value>(sql).bind(key).fetch_optional(pool).await?
            {
                return Ok((Some(kind.to_owned()), Some(row)));
            }
        }
        return Ok((None, None));
    }
    let row: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(t) FROM inventory t WHERE sku = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?;
    Ok((row.as_ref().map(|_| "sku".to_owned()), row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_crc32_of_the_key_modulo_the_partitions() {
        // CRC-32 (IEEE) of "123456789" is 0xCBF43926, the standard check value.
        assert_eq!(partition_of("123456789", 7), (0xCBF4_3926_u32 % 7) as i32);
        assert_eq!(partition_of("anything", 1), 0);
    }
}
