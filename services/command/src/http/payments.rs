//! `POST /orders/{orderId}/payments`: settle a payment for an order.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use eventline_runtime::problem::{JsonBody, Problem};

use super::{AppState, Decided, execute};
use crate::decide::{self, Errors, SettlePayment};

pub fn router() -> Router<AppState> {
    Router::new().route("/orders/{order_id}/payments", post(settle_payment))
}

/// Settle a payment: appends `PaymentSettled`, keyed by the order id so it follows the order.
pub async fn settle_payment(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    let request = format!("POST /orders/{order_id}/payments");
    execute(&state, &headers, &request, body, |body, ids| {
        let command: SettlePayment = body.parse()?;
        decide::settle_payment(&order_id, command, ids, Errors::default())
            .map(Decided::One)
            .map_err(Problem::validation)
    })
    .await
}
