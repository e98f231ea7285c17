//! The documents the query API serves — a user with figures and most recent orders, an order with
//! its items and payment — defined once: their shape (and OpenAPI schema), how they are assembled
//! from the read-model tables, and their entity tags.
//!
//! The projector assembles the document of every user and order a batch changed, in the batch's
//! transaction, and stores it ready to serve (`users.document`, `orders.document`, with its ETag):
//! a GET is then one primary-key read and no aggregation. The query service assembles one itself
//! only for a shape that is not stored (an `ordersLimit` other than [`STORED_ORDERS_LIMIT`]) or
//! for a row written before documents were stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

/// How many of a user's most recent orders the stored user document lists (the API's default).
pub const STORED_ORDERS_LIMIT: i64 = 5;

/// Users `$1` (an array) with their figures (order count, paid total per currency, from their
/// orders as they stand) and their `$2` most recent orders (primary key, `orders_by_user`), in one
/// round trip. Computing the figures rather than adding to them keeps them exact whatever order
/// events arrive in (an order before its user, a payment before its order) and however often one
/// is replayed.
///
/// Users are reached through `user_id = ANY(<array>)`, an index scan whatever the planner
/// estimates: as a join with the ids, a generic plan turned into a sequential scan of all users
/// once the table grew (30 ms per batch at 150k users).
pub const USERS_SQL: &str = "SELECT u.user_id, u.email, u.first_name, u.last_name, u.created_at, u.updated_at,
                (SELECT count(*) FROM orders o WHERE o.user_id = u.user_id) AS order_count,
                (SELECT COALESCE(jsonb_object_agg(s.currency, s.total::text), '{}'::jsonb)
                   FROM (SELECT currency, sum(total_amount) AS total FROM orders o
                          WHERE o.user_id = u.user_id AND o.status = 'paid' GROUP BY currency) s) AS total_spent,
                COALESCE((SELECT jsonb_agg(jsonb_build_object('orderId', o.order_id,
                                                              'totalAmount', o.total_amount::text,
                                                              'currency', o.currency, 'status', o.status,
                                                              'placedAt', o.placed_at)
                                           ORDER BY o.placed_at DESC, o.order_id DESC)
                            FROM (SELECT * FROM orders WHERE user_id = u.user_id
                                   ORDER BY placed_at DESC, order_id DESC LIMIT $2) o), '[]'::jsonb) AS orders
         FROM users u WHERE u.user_id = ANY($1::uuid[])";

/// Stores users' documents with the figures in them, each user once (`$1` ids, `$2` documents,
/// `$3` ETags, `$4` order counts, `$5` paid totals), in place: one new row version per user and
/// batch, kept on its page (the tables' fill factor leaves room: migration 0009).
pub const STORE_USERS_SQL: &str = "UPDATE users u
         SET document = d.document, document_etag = d.etag, order_count = d.order_count, total_spent = d.total_spent
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[])
              AS d(id, document, etag, order_count, total_spent)
         WHERE u.user_id = ANY($1::uuid[]) AND u.user_id = d.id
           AND (u.document, u.document_etag) IS DISTINCT FROM (d.document, d.etag)";

/// Stores orders' documents (`$1` ids, `$2` documents, `$3` ETags), as [`STORE_USERS_SQL`].
pub const STORE_ORDERS_SQL: &str = "UPDATE orders o SET document = d.document, document_etag = d.etag
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(id, document, etag)
         WHERE o.order_id = ANY($1::uuid[]) AND o.order_id = d.id
           AND (o.document, o.document_etag) IS DISTINCT FROM (d.document, d.etag)";

/// Orders `$1` (an array) with their items and latest payment (primary keys, `payments_by_order`).
pub const ORDERS_SQL: &str =
    "SELECT o.order_id, o.user_id, o.currency, o.total_amount::text AS total_amount, o.status,
                o.placed_at, o.updated_at,
                COALESCE((SELECT jsonb_agg(jsonb_build_object('sku', i.sku, 'quantity', i.quantity,
                                                              'price', i.price::text) ORDER BY i.line_no)
                            FROM order_items i WHERE i.order_id = o.order_id), '[]'::jsonb) AS items,
                p.payment_id, p.amount::text AS payment_amount, p.currency AS payment_currency,
                p.payment_method, p.status AS payment_status, p.settled_at
         FROM orders o
         LEFT JOIN LATERAL (SELECT * FROM payments p WHERE p.order_id = o.order_id
                            ORDER BY p.settled_at DESC, p.payment_id DESC LIMIT 1) p ON true
         WHERE o.order_id = ANY($1::uuid[])";

/// The stored document of user `$1` and its ETag (`document` is null for a row stored before
/// documents were), and whether the user is parked: its key (`$3`, of topic `$2`), or an event
/// that would change its document (an order of the user, placed or paid). One primary-key read,
/// and index reads of the (nearly always empty) parking tables.
pub const STORED_USER_SQL: &str = "SELECT document, document_etag,
            EXISTS (SELECT 1 FROM parked_keys WHERE topic = $2 AND message_key = $3)
            OR EXISTS (SELECT 1 FROM parked_events WHERE topic = $2 AND user_id = $1) AS parked
     FROM users WHERE user_id = $1";

/// The stored document of order `$1` and its ETag, and whether its key is parked (as
/// [`STORED_USER_SQL`]).
pub const STORED_ORDER_SQL: &str = "SELECT document, document_etag,
            EXISTS (SELECT 1 FROM parked_keys WHERE topic = $2 AND message_key = $3) AS parked
     FROM orders WHERE order_id = $1";

/// A user, with order statistics and their most recent orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// All the user's orders, paid or not.
    pub order_count: i64,
    /// Sum of the user's paid orders per currency, as decimal strings (`{"USD": "320.99"}`).
    pub total_spent: BTreeMap<String, String>,
    /// The most recent orders first (`ordersLimit`, default 5).
    pub orders: Vec<OrderSummary>,
    /// The number of the user's own events (a user is created once, so 1). The ETag here tags the
    /// whole body, orders included, and is not a version.
    pub version: i64,
}

/// An order in a user's list.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    pub order_id: Uuid,
    /// Decimal string.
    pub total_amount: String,
    pub currency: String,
    #[schema(value_type = OrderStatus)]
    pub status: String,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub placed_at: DateTime<Utc>,
}

/// An order with its items and payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    /// Decimal string, computed by the command service from the items.
    pub total_amount: String,
    #[schema(value_type = OrderStatus)]
    pub status: String,
    pub items: Vec<Item>,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub placed_at: DateTime<Utc>,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// The latest settled payment, or null while awaiting payment.
    pub payment: Option<Payment>,
    /// The number of the order's events (placed, then paid); also the ETag, for `If-Match` on a
    /// payment.
    pub version: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub sku: String,
    pub quantity: i32,
    /// Unit price, decimal string.
    pub price: String,
}

/// A settled payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: Uuid,
    /// Decimal string.
    pub amount: String,
    pub currency: String,
    pub payment_method: String,
    #[schema(value_type = PaymentStatus)]
    pub status: String,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub settled_at: DateTime<Utc>,
}

/// The stock of a sku after every adjustment so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub sku: String,
    pub quantity: i64,
    /// The number of adjustments so far; also the ETag, for `If-Match` on the next adjustment.
    pub version: i64,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// Where an order is: `awaiting_payment` until a payment for it is settled, then `paid`. Rows hold
/// the text (the read model's CHECK constraint keeps it to these values); this names them for clients.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OrderStatus {
    AwaitingPayment,
    Paid,
}

/// The state of a settled payment; `completed` is the only one the event log records today.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PaymentStatus {
    Completed,
}

/// A document as served: its JSON bytes and its strong ETag (quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub body: String,
    pub etag: String,
}

/// A strong ETag for a body that has no version: a digest of its bytes.
pub fn digest_etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", digest[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl User {
    /// The body, tagged by a digest of itself (the body lists orders, so no version fits).
    pub fn tagged(&self) -> serde_json::Result<Tagged> {
        let body = serde_json::to_string(self)?;
        let etag = digest_etag(body.as_bytes());
        Ok(Tagged { body, etag })
    }
}

impl Order {
    /// The body, tagged by the order's version, which a payment may send back as `If-Match`.
    pub fn tagged(&self) -> serde_json::Result<Tagged> {
        Ok(Tagged { body: serde_json::to_string(self)?, etag: format!("\"{}\"", self.version) })
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    order_count: i64,
    total_spent: sqlx::types::Json<BTreeMap<String, String>>,
    orders: sqlx::types::Json<Vec<OrderSummary>>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    user_id: Uuid,
    currency: String,
    total_amount: String,
    status: String,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    items: sqlx::types::Json<Vec<Item>>,
    payment_id: Option<Uuid>,
    payment_amount: Option<String>,
    payment_currency: Option<String>,
    payment_method: Option<String>,
    payment_status: Option<String>,
    settled_at: Option<DateTime<Utc>>,
}

/// Assembles the documents of the users among `ids`, each with its `orders_limit` most recent
/// orders.
pub async fn assemble_users<'e>(
    db: impl PgExecutor<'e>,
    ids: &[Uuid],
    orders_limit: i64,
) -> sqlx::Result<Vec<User>> {
    let rows: Vec<UserRow> = sqlx::query_as(USERS_SQL).bind(ids).bind(orders_limit).fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| User {
            user_id: row.user_id,
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            created_at: row.created_at,
            updated_at: row.updated_at,
            order_count: row.order_count,
            total_spent: row.total_spent.0,
            orders: row.orders.0,
            version: 1,
        })
        .collect())
}

/// Assembles the documents of the orders among `ids`.
pub async fn assemble_orders<'e>(db: impl PgExecutor<'e>, ids: &[Uuid]) -> sqlx::Result<Vec<Order>> {
    let rows: Vec<OrderRow> = sqlx::query_as(ORDERS_SQL).bind(ids).fetch_all(db).await?;
    Ok(rows.into_iter().map(OrderRow::into_order).collect())
}

impl OrderRow {
    fn into_order(self) -> Order {
        let payment = match (
            self.payment_id,
            self.payment_amount,
            self.payment_currency,
            self.payment_method,
            self.payment_status,
            self.settled_at,
        ) {
            (
                Some(payment_id),
                Some(amount),
                Some(currency),
                Some(payment_method),
                Some(status),
                Some(settled_at),
            ) => Some(Payment { payment_id, amount, currency, payment_method, status, settled_at }),
            _ => None,
        };
        Order {
            order_id: self.order_id,
            user_id: self.user_id,
            currency: self.currency,
            total_amount: self.total_amount,
            status: self.status,
            items: self.items.0,
            placed_at: self.placed_at,
            updated_at: self.updated_at,
            version: 1 + i64::from(payment.is_some()),
            payment,
        }
    }
}

/// A stored document, as [`STORED_USER_SQL`] and [`STORED_ORDER_SQL`] read it.
#[derive(sqlx::FromRow)]
pub struct Stored {
    pub document: Option<String>,
    pub document_etag: Option<String>,
    /// The aggregate is parked: what the row holds is behind the log.
    pub parked: bool,
}

impl Stored {
    /// The document ready to serve, if one was stored.
    pub fn ready(self) -> Option<Tagged> {
        Some(Tagged { body: self.document?, etag: self.document_etag? })
    }
}

/// Assembles and stores the documents of the orders among `orders` and of the users among
/// `users` or owning one of those orders (their figures with them): for the projector, last in a
/// batch's transaction, so that the documents are those of the rows the batch left. Rows that do
/// not exist (an order whose user has not arrived, a payment before its order) are skipped; their
/// documents are assembled when they arrive.
pub async fn refresh(conn: &mut sqlx::PgConnection, users: &[Uuid], orders: &[Uuid]) -> sqlx::Result<()> {
    let mut users: std::collections::BTreeSet<Uuid> = users.iter().copied().collect();
    if !orders.is_empty() {
        let assembled = assemble_orders(&mut *conn, orders).await?;
        users.extend(assembled.iter().map(|order| order.user_id));
        let tagged = assembled.iter().map(Order::tagged).collect::<serde_json::Result<Vec<_>>>();
        let tagged = tagged.map_err(unencodable)?;
        if !assembled.is_empty() {
            sqlx::query(STORE_ORDERS_SQL)
                .bind(assembled.iter().map(|order| order.order_id).collect::<Vec<Uuid>>())
                .bind(tagged.iter().map(|t| t.body.as_str()).collect::<Vec<&str>>())
                .bind(tagged.iter().map(|t| t.etag.as_str()).collect::<Vec<&str>>())
                .execute(&mut *conn)
                .await?;
        }
    }
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = users.into_iter().collect();
    let assembled = assemble_users(&mut *conn, &ids, STORED_ORDERS_LIMIT).await?;
    if assembled.is_empty() {
        return Ok(());
    }
    let tagged = assembled.iter().map(User::tagged).collect::<serde_json::Result<Vec<_>>>();
    let tagged = tagged.map_err(unencodable)?;
    let totals: Vec<sqlx::types::Json<&BTreeMap<String, String>>> =
        assembled.iter().map(|user| sqlx::types::Json(&user.total_spent)).collect();
    sqlx::query(STORE_USERS_SQL)
        .bind(assembled.iter().map(|user| user.user_id).collect::<Vec<Uuid>>())
        .bind(tagged.iter().map(|t| t.body.as_str()).collect::<Vec<&str>>())
        .bind(tagged.iter().map(|t| t.etag.as_str()).collect::<Vec<&str>>())
        .bind(assembled.iter().map(|user| user.order_count).collect::<Vec<i64>>())
        .bind(totals)
        .execute(conn)
        .await
        .map(|_| ())
}

fn unencodable(error: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(payment: bool) -> Order {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z").map(|t| t.to_utc()).unwrap();
        Order {
            order_id: Uuid::nil(),
            user_id: Uuid::nil(),
            currency: "USD".into(),
            total_amount: "10.00".into(),
            status: if payment { "paid" } else { "awaiting_payment" }.into(),
            items: vec![Item { sku: "A".into(), quantity: 1, price: "10.00".into() }],
            placed_at: at,
            updated_at: at,
            payment: payment.then(|| Payment {
                payment_id: Uuid::nil(),
                amount: "10.00".into(),
                currency: "USD".into(),
                payment_method: "card".into(),
                status: "completed".into(),
                settled_at: at,
            }),
            version: 1 + i64::from(payment),
        }
    }

    #[test]
    fn an_order_is_tagged_by_its_version_and_serialized_compactly() {
        let tagged = order(true).tagged().unwrap();
        assert_eq!(tagged.etag, "\"2\"");
        let body = tagged.body;
        assert!(body.starts_with(r#"{"orderId":"00000000-0000-0000-0000-000000000000","#), "{body}");
        assert!(body.contains(r#""placedAt":"2026-01-02T03:04:05.500Z""#), "{body}");
        assert_eq!(order(false).tagged().unwrap().etag, "\"1\"");
    }

    #[test]
    fn a_stored_document_is_ready_only_with_its_etag() {
        let stored = |document: Option<&str>, etag: Option<&str>| Stored {
            document: document.map(str::to_owned),
            document_etag: etag.map(str::to_owned),
            parked: false,
        };
        assert_eq!(
            stored(Some("{}"), Some("\"1\"")).ready(),
            Some(Tagged { body: "{}".into(), etag: "\"1\"".into() })
        );
        assert_eq!(stored(None, None).ready(), None);
        assert_eq!(stored(Some("{}"), None).ready(), None);
    }
}
