//! The event index (migrations/0011): every applied event's aggregate, position, version within
//! the aggregate, time and data. The projector writes it with the other read models; the query
//! service reads aggregates' histories, folds them as of a version or a time, and follows the
//! changes of live streams from it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eventline_events::{ConsistencyToken, DecodeError, Event, EventType, LogPosition};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

/// An aggregate whose events the index lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    User(Uuid),
    /// An order with its payment.
    Order(Uuid),
    /// A sku's stock.
    Inventory(String),
}

impl Aggregate {
    /// `aggregate_type` in the index: what `Event::aggregate_type` says.
    pub fn kind(&self) -> &'static str {
        match self {
            Aggregate::User(_) => "user",
            Aggregate::Order(_) => "order",
            Aggregate::Inventory(_) => "inventory",
        }
    }

    /// `aggregate_id` in the index: the event's message key.
    pub fn id(&self) -> String {
        match self {
            Aggregate::User(id) | Aggregate::Order(id) => id.to_string(),
            Aggregate::Inventory(sku) => sku.clone(),
        }
    }
}

/// One event of a history, as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEvent {
    /// `user`, `order` (an order and its payment) or `inventory` (a sku).
    #[schema(value_type = AggregateType)]
    pub aggregate_type: String,
    /// The user id, order id or sku: the event's message key.
    pub aggregate_id: String,
    /// The event's number within its aggregate: 1, 2, … in log order.
    pub version: i64,
    /// The partition of the event log the event is in.
    pub partition: i32,
    /// Its offset in that partition. `partition:offset` is the consistency token of the event.
    #[sqlx(rename = "log_offset")]
    pub offset: i64,
    pub event_id: Uuid,
    /// `UserCreated`, `OrderPlaced`, `PaymentSettled` or `InventoryAdjusted`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the command service decided the event.
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// When the broker appended it to the log, if the broker said.
    #[serde(serialize_with = "serialize_optional_rfc3339")]
    #[schema(nullable)]
    pub appended_at: Option<DateTime<Utc>>,
    /// The event's data at the current schema version (docs/events.md).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The aggregate kinds of the index, named for clients.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AggregateType {
    User,
    Order,
    Inventory,
}

fn serialize_optional_rfc3339<S: serde::Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => eventline_events::serialize_rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}

impl HistoryEvent {
    /// Where the event sits in the log.
    pub fn position(&self) -> LogPosition {
        LogPosition { partition: self.partition, offset: self.offset }
    }

    /// The event itself, for a fold. The projector indexed only events it decoded, so this fails
    /// only on an index written by a newer projector than this reader.
    pub fn event(&self) -> Result<Event, DecodeError> {
        let event_type: EventType = self.event_type.parse()?;
        Event::from_data(event_type, self.data.clone())
    }
}

const COLUMNS: &str = "aggregate_type, aggregate_id, version, partition, log_offset, event_id, event_type, occurred_at, appended_at, data";

/// Which way a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forwards,
    /// Newest first.
    Backwards,
}

impl Direction {
    /// How a keyset page compares with its cursor, and its sort order.
    pub(crate) fn sql(self) -> (&'static str, &'static str) {
        match self {
            Direction::Forwards => (">", "ASC"),
            Direction::Backwards => ("<", "DESC"),
        }
    }
}

/// A page of one order's or sku's events, by version: after `after` (forwards) or before it
/// (backwards), `limit` at most. Without `after`, from the first event or the latest.
pub async fn aggregate_page<'e>(
    db: impl PgExecutor<'e>,
    aggregate: &Aggregate,
    after: Option<i64>,
    direction: Direction,
    limit: i64,
) -> sqlx::Result<Vec<HistoryEvent>> {
    let (comparison, order) = direction.sql();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM event_index
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND ($3::bigint IS NULL OR version {comparison} $3)
         ORDER BY version {order} LIMIT $4"
    ))
    .bind(aggregate.kind())
    .bind(aggregate.id())
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The latest version of an aggregate; `None` when the index has no event of it.
pub async fn current_version<'e>(
    db: impl PgExecutor<'e>,
    aggregate: &Aggregate,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT max(version) FROM event_index WHERE aggregate_type = $1 AND aggregate_id = $2")
        .bind(aggregate.kind())
        .bind(aggregate.id())
        .fetch_one(db)
        .await
}

/// How far into an aggregate's history to read: up to a version, up to a time, or both (the
/// earlier bound wins). [`Until::ALL`] reads all of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Until {
    /// Up to and including this version.
    pub version: Option<i64>,
    /// Every event that occurred at or before this time.
    pub time: Option<DateTime<Utc>>,
}

impl Until {
    pub const ALL: Until = Until { version: None, time: None };

    pub fn version(version: i64) -> Until {
        Until { version: Some(version), time: None }
    }
}

/// An aggregate's events in order, up to `until`.
pub async fn up_to<'e>(
    db: impl PgExecutor<'e>,
    aggregate: &Aggregate,
    until: Until,
) -> sqlx::Result<Vec<HistoryEvent>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM event_index
         WHERE aggregate_type = $1 AND aggregate_id = $2
           AND ($3::bigint IS NULL OR version <= $3) AND ($4::timestamptz IS NULL OR occurred_at <= $4)
         ORDER BY version"
    ))
    .bind(aggregate.kind())
    .bind(aggregate.id())
    .bind(until.version)
    .bind(until.time)
    .fetch_all(db)
    .await
}

/// The event indexed at a position, if any.
pub async fn at_position<'e>(
    db: impl PgExecutor<'e>,
    position: LogPosition,
) -> sqlx::Result<Option<HistoryEvent>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM event_index WHERE partition = $1 AND log_offset = $2"))
        .bind(position.partition)
        .bind(position.offset)
        .fetch_optional(db)
        .await
}

/// Where a page of a user's history starts: the last event of the page before, by the time it
/// occurred and its position (a user's events span partitions, so no offset orders them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    pub occurred_at: DateTime<Utc>,
    pub position: LogPosition,
}

/// The events of a user's own aggregate and of the orders they placed (with their payments):
/// `$1` the user id.
const USER_EVENTS: &str = "(aggregate_type = 'user' AND aggregate_id = $1::text)
     OR (aggregate_type = 'order' AND aggregate_id IN (SELECT order_id::text FROM orders WHERE user_id = $1))";

/// A page of a user's history (their creation, their orders and the orders' payments), by the
/// time each event occurred, then position.
pub async fn user_page<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
    after: Option<UserCursor>,
    direction: Direction,
    limit: i64,
) -> sqlx::Result<Vec<HistoryEvent>> {
    let (comparison, order) = direction.sql();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM event_index WHERE ({USER_EVENTS})
           AND ($2::timestamptz IS NULL OR (occurred_at, partition, log_offset) {comparison} ($2, $3, $4))
         ORDER BY occurred_at {order}, partition {order}, log_offset {order} LIMIT $5"
    ))
    .bind(user_id)
    .bind(after.map(|c| c.occurred_at))
    .bind(after.map(|c| c.position.partition))
    .bind(after.map(|c| c.position.offset))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Per partition, the newest position of the events of a live stream's subject (an aggregate,
/// or a user with their orders): the consistency token of its current state.
pub async fn token_of<'e>(db: impl PgExecutor<'e>, aggregate: &Aggregate) -> sqlx::Result<ConsistencyToken> {
    let rows: Vec<(i32, i64)> =
        match aggregate {
            Aggregate::User(user_id) => sqlx::query_as(&format!(
                "SELECT partition, max(log_offset) FROM event_index WHERE {USER_EVENTS} GROUP BY partition"
            ))
            .bind(user_id)
            .fetch_all(db)
            .await?,
            _ => {
                sqlx::query_as(
                    "SELECT partition, max(log_offset) FROM event_index
                 WHERE aggregate_type = $1 AND aggregate_id = $2 GROUP BY partition",
                )
                .bind(aggregate.kind())
                .bind(aggregate.id())
                .fetch_all(db)
                .await?
            }
        };
    Ok(rows.into_iter().map(|(partition, offset)| LogPosition { partition, offset }).collect())
}

/// The events of a live stream's subject that `token` does not cover (a position beyond the
/// token's offset for its partition, or in a partition the token does not name), in log order per
/// partition: what a client resuming from `token` has not seen.
pub async fn after_token<'e>(
    db: impl PgExecutor<'e>,
    aggregate: &Aggregate,
    token: &ConsistencyToken,
) -> sqlx::Result<Vec<HistoryEvent>> {
    let seen: BTreeMap<i32, i64> = token.positions().map(|p| (p.partition, p.offset)).collect();
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = seen.into_iter().unzip();
    let unseen = "NOT EXISTS (SELECT 1 FROM UNNEST($2::int[], $3::bigint[]) AS t(p, o)
                              WHERE t.p = event_index.partition AND t.o >= event_index.log_offset)";
    match aggregate {
        Aggregate::User(user_id) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM event_index WHERE ({USER_EVENTS}) AND {unseen}
                 ORDER BY occurred_at, partition, log_offset"
            ))
            .bind(user_id)
            .bind(partitions)
            .bind(offsets)
            .fetch_all(db)
            .await
        }
        _ => {
            sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM event_index WHERE aggregate_type = $4 AND aggregate_id = $1 AND {unseen}
                 ORDER BY version"
        ))
            .bind(aggregate.id())
            .bind(partitions)
            .bind(offsets)
            .bind(aggregate.kind())
            .fetch_all(db)
            .await
        }
    }
}

/// An event applied in a stretch of the log, with the user whose document it changes (the user
/// created, or the owner of the order placed or paid, when that order is known).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Change {
    #[sqlx(flatten)]
    pub event: HistoryEvent,
    pub user_id: Option<Uuid>,
}

/// The events indexed from offsets `from..to` of `partition`, in log order, with their users.
pub async fn changes<'e>(
    db: impl PgExecutor<'e>,
    partition: i32,
    from: i64,
    to: i64,
) -> sqlx::Result<Vec<Change>> {
    let columns = COLUMNS.split(", ").map(|c| format!("i.{c}")).collect::<Vec<_>>().join(", ");
    sqlx::query_as(&format!(
        "SELECT {columns},
                CASE WHEN i.aggregate_type = 'user' THEN i.aggregate_id::uuid ELSE o.user_id END AS user_id
         FROM event_index i
         LEFT JOIN orders o ON o.order_id = (CASE WHEN i.aggregate_type = 'order' THEN i.aggregate_id::uuid END)
         WHERE i.partition = $1 AND i.log_offset >= $2 AND i.log_offset < $3
         ORDER BY i.log_offset"
    ))
    .bind(partition)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}
