//! `GET /orders?status=…[&userId=…]`: orders by status, oldest placed first, a page at a time.
//! Read from the `orders_by_status` projection, and only from it: a consistency token waits for
//! that projection's checkpoints, and while it has never been live (catching up with the log for
//! the first time after a deploy) the route answers `503 projection-catching-up`.

use axum::extract::State;
use axum::response::Response;
use eventline_read_models::Projection;
use eventline_read_models::orders_by_status::{self, Cursor, OrderSummary};
use eventline_runtime::db;
use eventline_runtime::problem::{ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{self, IfNoneMatch, ReadAfter, parse_id};
use super::history::{self, PageDirection};
use super::{AppState, database_problem, in_range};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_orders_by_status))
}

/// A status orders are listed by.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListedStatus {
    /// Placed and not paid yet.
    AwaitingPayment,
    Paid,
}

impl ListedStatus {
    fn as_str(self) -> &'static str {
        match self {
            ListedStatus::AwaitingPayment => "awaiting_payment",
            ListedStatus::Paid => "paid",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderListParams {
    /// The status to list: `awaiting_payment` or `paid`.
    #[param(inline)]
    status: ListedStatus,
    /// Only this user's orders.
    #[param(value_type = Option<uuid::Uuid>)]
    user_id: Option<String>,
    /// `forwards` (oldest placed first, the default) or `backwards` (newest first).
    #[param(inline)]
    direction: Option<PageDirection>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page; empty is the same as none.
    #[param(pattern = r"^$|^[0-9]{1,16}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    cursor: Option<String>,
}

/// A page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    /// In the page's direction: oldest placed first forwards, newest first backwards.
    pub orders: Vec<OrderSummary>,
    /// Pass as `cursor` (with the same `status`, `userId` and `direction`) for the next page;
    /// absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List orders by status (e.g. those still awaiting a payment), optionally of one user
#[utoipa::path(
    get, path = "/orders", tag = "orders",
    params(OrderListParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "A page of the orders in that status, by when they were placed", body = OrderPage,
         headers(("ETag" = String, description = "Entity tag of the body"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn list_orders_by_status(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<OrderListParams>,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    let user = params.user_id.as_deref().map(|id| parse_id(id, "user")).transpose()?;
    let limit = in_range(params.limit, 20, 1, 100, "limit")?;
    let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => Some(Cursor::parse(cursor).ok_or_else(history::invalid_cursor)?),
        None => None,
    };
    let direction = params.direction.unwrap_or_default().into();
    let db = state.read_models(Projection::OrdersByStatus, &after).await?;
    let mut orders = orders_by_status::page(&db, params.status.as_str(), user, cursor, direction, limit + 1)
        .instrument(db::span("SELECT", "orders_by_status"))
        .await
        .map_err(database_problem)?;
    let next_cursor = history::more(&mut orders, limit).map(|last| Cursor::after(last).to_string());
    cached.answer(extract::by_digest(&OrderPage { orders, next_cursor }))
}
