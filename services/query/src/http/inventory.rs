//! `GET /inventory/{sku}`: the stock of a sku.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use eventline_read_models::documents::Stock;
use eventline_runtime::db;
use eventline_runtime::problem::{ApiQuery, Problem};
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{self, IfNoneMatch, ReadAfter, Sku};
use super::history::{self, AsOfParams};
use super::{AppState, database_problem};
use eventline_read_models::Projection;

/// The stock of sku `$1` (primary key).
pub const STOCK_SQL: &str = "SELECT sku, quantity, version, updated_at FROM inventory WHERE sku = $1";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_stock))
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
    Sku(sku): Sku,
    ApiQuery(as_of): ApiQuery<AsOfParams>,
    RawQuery(raw_query): RawQuery,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    let until = as_of.until(raw_query.as_deref())?;
    let db = state.read_models(Projection::Main, &after).await?;
    if let Some(until) = until {
        let stock = history::stock_as_of(&db, sku, until).await?;
        return cached.answer(extract::by_version(&stock, stock.version));
    }
    super::refuse_parked(&state, &db, super::Aggregate::Sku(&sku)).await?;
    let stock: Option<Stock> = sqlx::query_as(STOCK_SQL)
        .bind(&sku)
        .fetch_optional(&db)
        .instrument(db::span("SELECT", "inventory"))
        .await
        .map_err(database_problem)?;
    let stock = stock.ok_or_else(|| Problem::not_found(format!("No stock recorded for sku {sku}.")))?;
    cached.answer(extract::by_version(&stock, stock.version))
}
