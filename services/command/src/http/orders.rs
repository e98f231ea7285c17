//! `POST /orders`: place an order.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use eventline_runtime::problem::{JsonBody, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Decided, RequestTarget, execute};
use crate::decide::{self, Errors, PlaceOrder};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(place_order))
}

/// Place an order
///
/// Appends `OrderPlaced`, keyed by the order id. The total is computed by the server from the items; prices may have no more fraction digits than the currency allows.
#[utoipa::path(
    post, path = "/orders", tag = "orders", request_body = PlaceOrder,
    params(super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses(super::openapi::CommandAccepted, super::openapi::CommandProblems)
)]
pub async fn place_order(
    State(state): State<AppState>,
    target: RequestTarget,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, &target, body, |body, ids| {
        let command: PlaceOrder = body.parse()?;
        decide::place_order(command, ids, Errors::default()).map(Decided::One).map_err(Problem::validation)
    })
    .await
}
