//! `POST /orders`: place an order.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use eventline_runtime::problem::{JsonBody, Problem};

use super::{AppState, Decided, execute};
use crate::decide::{self, Errors, PlaceOrder};

pub fn router() -> Router<AppState> {
    Router::new().route("/orders", post(place_order))
}

/// Place an order: appends `OrderPlaced`, keyed by the order id, with the total computed here.
pub async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, "POST /orders", body, |body, ids| {
        let command: PlaceOrder = body.parse()?;
        decide::place_order(command, ids, Errors::default()).map(Decided::One).map_err(Problem::validation)
    })
    .await
}
