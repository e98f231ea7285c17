//! `POST /inventory/{sku}/adjustments`: adjust the stock of a sku.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use eventline_runtime::problem::{JsonBody, Problem};

use super::{AppState, Decided, execute};
use crate::decide::{self, AdjustInventory, Errors};

pub fn router() -> Router<AppState> {
    Router::new().route("/inventory/{sku}/adjustments", post(adjust_inventory))
}

/// Adjust inventory: appends `InventoryAdjusted`, keyed by the sku.
pub async fn adjust_inventory(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    let request = format!("POST /inventory/{sku}/adjustments");
    execute(&state, &headers, &request, body, |body, _ids| {
        let command: AdjustInventory = body.parse()?;
        decide::adjust_inventory(&sku, command, Errors::default())
            .map(Decided::One)
            .map_err(Problem::validation)
    })
    .await
}
