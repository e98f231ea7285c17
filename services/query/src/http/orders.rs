//! `GET /orders/{id}`: an order with its items and payment.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use eventline_read_models::documents::{self, Order};
use eventline_runtime::db;
use eventline_runtime::problem::{ApiQuery, Problem};
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{self, IfNoneMatch, OrderId, ReadAfter};
use super::history::{self, AsOfParams};
use super::{Aggregate, AppState, database_problem, no_such, stored_document};
use eventline_read_models::Projection;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_order))
}

/// Get an order with its items and payment (now, or as of a version or a time)
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "The order id"), AsOfParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "The order", body = Order, headers(("ETag" = String, description = "The order's version in double quotes (e.g. \"1\"): send it as If-Match to pay only if nothing changed since"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    ApiQuery(as_of): ApiQuery<AsOfParams>,
    RawQuery(raw_query): RawQuery,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    let until = as_of.until(raw_query.as_deref())?;
    let db = state.read_models(Projection::Main, &after).await?;
    if let Some(until) = until {
        return cached.answer(extract::assembled(history::order_as_of(&db, order_id, until).await?.tagged()));
    }
    if let Some(ready) = stored_document(&state, &db, Aggregate::Order(order_id)).await? {
        return cached.answer(Ok(ready));
    }
    // A row stored before documents were: assembled here.
    let assembled = documents::assemble_orders(&db, &[order_id])
        .instrument(db::span("SELECT", "orders"))
        .await
        .map_err(database_problem)?;
    let order = assembled.into_iter().next().ok_or_else(|| no_such("order", order_id))?;
    cached.answer(extract::assembled(order.tagged()))
}
