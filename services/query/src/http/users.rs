//! `GET /users/{id}` (a user with their most recent orders) and `GET /users/{id}/orders` (the
//! whole history, keyset-paginated).

use eventline_runtime::db;
use tracing::Instrument as _;

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use eventline_read_models::documents::{self, OrderSummary, STORED_ORDERS_LIMIT, User};
use eventline_runtime::problem::{ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::extract::{self, IfNoneMatch, ReadAfter, UserId};
use super::{Aggregate, AppState, database_problem, in_range, no_such, stored_document};
use eventline_read_models::Projection;

pub const USER_EXISTS_SQL: &str = "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)";

/// User `$1`'s orders newest first, `$2` at most, after (`$3`, `$4`) when given (`orders_by_user`).
pub const ORDERS_SQL: &str =
    "SELECT order_id, total_amount::text AS total_amount, currency, status, placed_at
         FROM orders
         WHERE user_id = $1 AND ($3::timestamptz IS NULL OR (placed_at, order_id) < ($3, $4))
         ORDER BY placed_at DESC, order_id DESC
         LIMIT $2";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_user)).routes(routes!(list_orders))
}

/// A page of a user's orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrdersPage {
    pub orders: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserParams {
    /// How many of the most recent orders to include (default 5).
    #[param(minimum = 0, maximum = 100)]
    orders_limit: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrdersParams {
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page; empty is the same as none.
    #[param(
        pattern = r"^$|^[0-9]{1,16}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    cursor: Option<String>,
}

/// Get a user with their most recent orders
#[utoipa::path(
    get, path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user id"), UserParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "The user", body = User, headers(("ETag" = String, description = "Entity tag of the body"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    UserId(user_id): UserId,
    ApiQuery(params): ApiQuery<UserParams>,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    let orders_limit = in_range(params.orders_limit, STORED_ORDERS_LIMIT, 0, 100, "ordersLimit")?;
    let db = state.read_models(Projection::Main, &after).await?;
    if orders_limit == STORED_ORDERS_LIMIT
        && let Some(ready) = stored_document(&state, &db, Aggregate::User(user_id)).await?
    {
        return cached.answer(Ok(ready));
    }
    // Another number of orders, or a row stored before documents were: assembled here.
    super::refuse_parked(&state, &db, Aggregate::User(user_id)).await?;
    let assembled = documents::assemble_users(&db, &[user_id], orders_limit)
        .instrument(db::span("SELECT", "users"))
        .await
        .map_err(database_problem)?;
    let user = assembled.into_iter().next().ok_or_else(|| no_such("user", user_id))?;
    cached.answer(extract::assembled(user.tagged()))
}

/// List a user's orders, most recent first
#[utoipa::path(
    get, path = "/users/{id}/orders", tag = "users",
    params(("id" = Uuid, Path, description = "The user id"), OrdersParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "A page of orders", body = OrdersPage, headers(("ETag" = String, description = "Entity tag of the body"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    UserId(user_id): UserId,
    ApiQuery(params): ApiQuery<OrdersParams>,
    read_after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    let limit = in_range(params.limit, 20, 1, 100, "limit")?;
    let after = params.cursor.as_deref().map(Cursor::parse).transpose()?;
    let db = state.read_models(Projection::Main, &read_after).await?;
    let exists: bool = sqlx::query_scalar(USER_EXISTS_SQL)
        .bind(user_id)
        .fetch_one(&db)
        .instrument(db::span("SELECT", "users"))
        .await
        .map_err(database_problem)?;
    if !exists {
        return Err(no_such("user", user_id));
    }
    let mut orders = recent_orders(&db, user_id, limit + 1, after).await?;
    let next_cursor = if orders.len() as i64 > limit {
        orders.truncate(limit as usize);
        orders.last().map(|o| Cursor { placed_at: o.placed_at, order_id: o.order_id }.encode())
    } else {
        None
    };
    cached.answer(extract::by_digest(&OrdersPage { orders, next_cursor }))
}

/// A user's orders, newest first, after `after` when given (index `orders_by_user`).
async fn recent_orders(
    db: &PgPool,
    user_id: Uuid,
    limit: i64,
    after: Option<Cursor>,
) -> Result<Vec<OrderSummary>, Problem> {
    let (placed_at, order_id) = after.map_or((None, None), |c| (Some(c.placed_at), Some(c.order_id)));
    sqlx::query_as(ORDERS_SQL)
        .bind(user_id)
        .bind(limit)
        .bind(placed_at)
        .bind(order_id)
        .fetch_all(db)
        .instrument(db::span("SELECT", "orders"))
        .await
        .map_err(database_problem)
}

/// Where a page ended: the last order's time (microseconds since 1970) and id,
/// `<micros>.<order id>`; the document states the pattern (`cursor` above), so every string a
/// client can send that matches it is a cursor.
struct Cursor {
    placed_at: DateTime<Utc>,
    order_id: Uuid,
}

impl Cursor {
    fn encode(&self) -> String {
        format!("{}.{}", self.placed_at.timestamp_micros(), self.order_id.as_hyphenated())
    }

    /// Exactly the strings `CURSOR_PATTERN` matches.
    fn parse(text: &str) -> Result<Cursor, Problem> {
        let invalid = || {
            Problem::new(crate::problems::INVALID_CURSOR, "Pass `nextCursor` of a previous page as it was.")
        };
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let digits = (1..=16).contains(&micros.len()) && micros.bytes().all(|b| b.is_ascii_digit());
        if !digits || id.len() != 36 {
            return Err(invalid());
        }
        let placed_at = micros.parse().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(invalid)?;
        let order_id = Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Cursor { placed_at, order_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURSOR_PATTERN: &str =
        r"^$|^[0-9]{1,16}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

    #[test]
    fn the_document_states_the_cursor_pattern_and_cursors_follow_it() {
        let document = serde_json::to_value(crate::http::openapi_document()).unwrap();
        let parameters = document["paths"]["/users/{id}/orders"]["get"]["parameters"].as_array().unwrap();
        let cursor = parameters.iter().find(|p| p["name"] == "cursor").unwrap();
        assert_eq!(cursor["schema"]["pattern"], CURSOR_PATTERN);

        let written = Cursor { placed_at: Utc::now(), order_id: Uuid::now_v7() }.encode();
        let read = Cursor::parse(&written).unwrap();
        assert_eq!(read.encode(), written);
        for ok in [
            "0.01a22ebe-7d81-73a0-9413-02dd468f8e4f",
            "9999999999999999.01A22EBE-7D81-73A0-9413-02DD468F8E4F",
        ] {
            assert!(Cursor::parse(ok).is_ok(), "{ok}");
        }
        let bad = [
            "",
            "1.",
            ".01a22ebe-7d81-73a0-9413-02dd468f8e4f",
            "-1.01a22ebe-7d81-73a0-9413-02dd468f8e4f",
            "10000000000000000.01a22ebe-7d81-73a0-9413-02dd468f8e4f",
            "1.01a22ebe7d8173a0941302dd468f8e4f",
            "1.{01a22ebe-7d81-73a0-9413-02dd468f8e4f}",
        ];
        for bad in bad {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
