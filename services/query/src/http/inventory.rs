//! `GET /inventory/{sku}`: the stock of a sku.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use eventline_read_models::documents::Stock;
use eventline_runtime::db;
use eventline_runtime::problem::{ApiQuery, Problem};
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::history::{self, AsOfParams};
use super::{AppState, database_problem, read_your_writes, with_version_etag};

/// The stock of sku `$1` (primary key).
pub const STOCK_SQL: &str = "SELECT sku, quantity, version, updated_at FROM inventory WHERE sku = $1";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_stock))
}

/// The sku of a path, or a 400 that says what a sku is.
pub(super) fn valid_sku(sku: String) -> Result<String, Problem> {
    if eventline_events::is_valid_sku(&sku) {
        return Ok(sku);
    }
    Err(Problem::new(crate::problems::INVALID_ID, format!("A sku is {}.", eventline_events::SKU_RULE)))
}

/// Get the stock of a sku (now, or as of a version or a time)
#[utoipa::path(
    get, path = "/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
           AsOfParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "The stock", body = Stock, headers(("ETag" = String, description = "The sku's version in double quotes (e.g. \"3\"): send it as If-Match to adjust only if nothing changed since"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn get_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    ApiQuery(as_of): ApiQuery<AsOfParams>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let sku = valid_sku(sku)?;
    let until = as_of.until(raw_query.as_deref())?;
    let db = read_your_writes(&state, &headers).await?;
    if let Some(until) = until {
        let stock = history::stock_as_of(&db, sku, until).await?;
        let version = stock.version;
        return with_version_etag(&headers, &stock, version);
    }
    super::refuse_parked(&state, &db, super::Aggregate::Sku(&sku)).await?;
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
