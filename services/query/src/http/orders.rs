//! `GET /orders/{id}`: an order with its items and payment.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use eventline_runtime::db;
use eventline_runtime::problem::Problem;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, database_problem, parse_id, read_your_writes, with_version_etag};

/// Order `$1` with its items and latest payment (primary keys, `payments_by_order`).
pub const ORDER_SQL: &str =
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
         WHERE o.order_id = $1";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_order))
}

/// An order with its items and payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    /// Decimal string, computed by the command service from the items.
    pub total_amount: String,
    #[schema(value_type = super::openapi::OrderStatus)]
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
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub sku: String,
    pub quantity: i32,
    /// Unit price, decimal string.
    pub price: String,
}

/// A settled payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: Uuid,
    /// Decimal string.
    pub amount: String,
    pub currency: String,
    pub payment_method: String,
    #[schema(value_type = super::openapi::PaymentStatus)]
    pub status: String,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub settled_at: DateTime<Utc>,
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

/// Get an order with its items and payment
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "The order id"), super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "The order", body = Order, headers(("ETag" = String, description = "The order's version in double quotes (e.g. \"1\"): send it as If-Match to pay only if nothing changed since"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let order_id = parse_id(&id, "order")?;
    let db = read_your_writes(&state, &headers).await?;
    let row: Option<OrderRow> = sqlx::query_as(ORDER_SQL)
        .bind(order_id)
        .fetch_optional(&db)
        .instrument(db::span("SELECT", "orders"))
        .await
        .map_err(database_problem)?;
    let row = row.ok_or_else(|| Problem::not_found(format!("No order {order_id}.")))?;
    let payment = match (
        row.payment_id,
        row.payment_amount,
        row.payment_currency,
        row.payment_method,
        row.payment_status,
        row.settled_at,
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
    let order = Order {
        order_id: row.order_id,
        user_id: row.user_id,
        currency: row.currency,
        total_amount: row.total_amount,
        status: row.status,
        items: row.items.0,
        placed_at: row.placed_at,
        updated_at: row.updated_at,
        version: 1 + i64::from(payment.is_some()),
        payment,
    };
    let version = order.version;
    with_version_etag(&headers, &order, version)
}
