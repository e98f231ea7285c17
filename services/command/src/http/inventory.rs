//! `POST /inventory/{sku}/adjustments`: adjust the stock of a sku.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use eventline_runtime::problem::{JsonBody, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Decided, RequestTarget, execute};
use crate::decide::{self, AdjustInventory, Errors};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(adjust_inventory))
}

/// Adjust the stock of a sku
///
/// Appends `InventoryAdjusted`, keyed by the sku: `add` and `remove` change the stock by `quantity` (> 0), `set` sets it (≥ 0).
#[utoipa::path(
    post, path = "/inventory/{sku}/adjustments", tag = "inventory", request_body = AdjustInventory,
    params(("sku" = String, Path, description = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses(super::openapi::CommandAccepted, super::openapi::CommandProblems)
)]
pub async fn adjust_inventory(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    target: RequestTarget,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, &target, body, |body, _ids| {
        let command: AdjustInventory = body.parse()?;
        decide::adjust_inventory(&sku, command, Errors::default())
            .map(Decided::One)
            .map_err(Problem::validation)
    })
    .await
}
