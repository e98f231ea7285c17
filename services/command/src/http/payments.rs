//! `POST /orders/{orderId}/payments`: settle a payment for an order.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use eventline_runtime::problem::{JsonBody, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Decided, RequestTarget, execute};
use crate::decide::{self, Errors, SettlePayment};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(settle_payment))
}

/// Settle a payment
///
/// Appends `PaymentSettled`, keyed by the order id so that it follows the order's events.
#[utoipa::path(
    post, path = "/orders/{orderId}/payments", tag = "orders", request_body = SettlePayment,
    params(("orderId" = uuid::Uuid, Path, description = "The order"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses(super::openapi::CommandAccepted, super::openapi::CommandProblems)
)]
pub async fn settle_payment(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    target: RequestTarget,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, &target, body, |body, ids| {
        let command: SettlePayment = body.parse()?;
        decide::settle_payment(&order_id, command, ids, Errors::default())
            .map(Decided::One)
            .map_err(Problem::validation)
    })
    .await
}
