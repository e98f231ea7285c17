//! `GET /inventory/{sku}`: the stock of a sku.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use eventline_runtime::db;
use eventline_runtime::problem::Problem;
use serde::Serialize;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, database_problem, read_your_writes, with_version_etag};

/// The stock of sku `$1` (primary key).
pub const STOCK_SQL: &str = "SELECT sku, quantity, version, updated_at FROM inventory WHERE sku = $1";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_stock))
}

/// The stock of a sku after every adjustment so far.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub sku: String,
    pub quantity: i64,
    /// The number of adjustments so far; also the ETag, for `If-Match` on the next adjustment.
    pub version: i64,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// Get the stock of a sku
#[utoipa::path(
    get, path = "/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "The stock", body = Stock, headers(("ETag" = String, description = "The sku's version in double quotes (e.g. \"3\"): send it as If-Match to adjust only if nothing changed since"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn get_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if !eventline_events::is_valid_sku(&sku) {
        return Err(Problem::new(
            crate::problems::INVALID_ID,
            format!("A sku is {}.", eventline_events::SKU_RULE),
        ));
    }
    let db = read_your_writes(&state, &headers).await?;
    let stock: Option<Stock> = sqlx::query_as(STOCK_SQL)
        .bind(&sku)
        .fetch_optional(&db)
        .instrument(db::span("SELECT", "inventory"))
        .await
        .map_err(database_problem)?;
    let stock = stock.ok_or_else(|| Problem::not_found(format!("No stock recorded for sku {sku}.")))?;
    let version = stock.version;
    with_version_etag(&headers, &stock, version)
}
