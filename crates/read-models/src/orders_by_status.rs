//! Orders by status, the read model of the `orders_by_status` projection: every placed order with
//! its status, listed by when it was placed (`GET /orders?status=awaiting_payment[&userId=]`).
//!
//! A table of its own, with its own checkpoints, rather than an index on the main projection's
//! `orders`: it is added, caught up, rebuilt and verified without touching the others.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::history::Direction;

/// One order as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    pub order_id: Uuid,
    pub user_id: Uuid,
    #[schema(value_type = crate::documents::OrderStatus)]
    pub status: String,
    /// Decimal string, as the order has it.
    pub total_amount: String,
    pub currency: String,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub placed_at: DateTime<Utc>,
    /// When its payment was settled; absent while it awaits one.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_paid_at")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<DateTime<Utc>>,
}

fn serialize_paid_at<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => eventline_events::serialize_rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// Where a page starts: the last order of the page before (`<placedAt in µs>.<orderId>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub placed_at: DateTime<Utc>,
    pub order_id: Uuid,
}

impl Cursor {
    /// The cursor after `order`.
    pub fn after(order: &OrderSummary) -> Cursor {
        Cursor { placed_at: order.placed_at, order_id: order.order_id }
    }

    /// Reads a cursor written by `Display`; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (micros, order_id) = text.split_once('.')?;
        let micros: i64 = micros.parse().ok().filter(|m| *m >= 0)?;
        let order_id = Uuid::parse_str(order_id).ok().filter(|_| order_id.len() == 36)?;
        Some(Cursor { placed_at: DateTime::from_timestamp_micros(micros)?, order_id })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.placed_at.timestamp_micros(), self.order_id)
    }
}

const COLUMNS: &str =
    "order_id, user_id, status, total_amount::text AS total_amount, currency, placed_at, paid_at";

/// A page of the orders in `status` (of `user`, if given), by when they were placed, then id:
/// after `after` in `direction`, `limit` at most. One index range scan.
pub async fn page<'e>(
    db: impl PgExecutor<'e>,
    status: &str,
    user: Option<Uuid>,
    after: Option<Cursor>,
    direction: Direction,
    limit: i64,
) -> sqlx::Result<Vec<OrderSummary>> {
    let (comparison, order) = direction.sql();
    let of_user = if user.is_some() { "AND user_id = $5" } else { "AND $5::uuid IS NULL" };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders_by_status
         WHERE status = $1 AND placed_at IS NOT NULL {of_user}
           AND ($2::timestamptz IS NULL OR (placed_at, order_id) {comparison} ($2, $3))
         ORDER BY placed_at {order}, order_id {order} LIMIT $4"
    ))
    .bind(status)
    .bind(after.map(|c| c.placed_at))
    .bind(after.map(|c| c.order_id))
    .bind(limit)
    .bind(user)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back() {
        let cursor = Cursor {
            placed_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("a time"),
            order_id: Uuid::from_u128(7),
        };
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        for bad in [
            "",
            "1",
            "x.00000000-0000-0000-0000-000000000007",
            "-1.00000000-0000-0000-0000-000000000007",
            "1.7",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
