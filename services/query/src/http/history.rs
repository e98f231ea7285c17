//! Histories: `GET /users/{id}/history`, `GET /orders/{id}/history` and
//! `GET /inventory/{sku}/history`, an aggregate's events from the event index, paged either way;
//! and reads as of a version or a time (`?asOf=`, `?asOfTime=` on an order or a sku), the history
//! up to that point folded with the projection's rules (`eventline_read_models::fold`).

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use eventline_events::LogPosition;
use eventline_read_models::documents::{Order, Stock};
use eventline_read_models::fold::{OrderFold, StockFold};
use eventline_read_models::history::{self, Aggregate, Direction, HistoryEvent, Until, UserCursor};
use eventline_runtime::db;
use eventline_runtime::problem::{ApiQuery, Problem, types};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{self, IfNoneMatch, OrderId, ReadAfter, Sku, UserId};
use super::{AppState, database_problem, in_range, no_such};
use crate::problems;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(user_history))
        .routes(routes!(order_history))
        .routes(routes!(sku_history))
}

/// A page of a history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// In the page's direction: oldest first forwards, newest first backwards.
    pub events: Vec<HistoryEvent>,
    /// Pass as `cursor` (with the same `direction`) for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Which way a history page runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PageDirection {
    /// Oldest first (the default).
    #[default]
    Forwards,
    /// Newest first.
    Backwards,
}

impl From<PageDirection> for Direction {
    fn from(direction: PageDirection) -> Direction {
        match direction {
            PageDirection::Forwards => Direction::Forwards,
            PageDirection::Backwards => Direction::Backwards,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AggregateHistoryParams {
    /// `forwards` (oldest first, the default) or `backwards` (newest first).
    #[param(inline)]
    direction: Option<PageDirection>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page (a version); empty is the same as none.
    #[param(pattern = r"^$|^[0-9]{1,18}$")]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserHistoryParams {
    /// `forwards` (oldest first, the default) or `backwards` (newest first).
    #[param(inline)]
    direction: Option<PageDirection>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page; empty is the same as none.
    #[param(pattern = r"^$|^[0-9]{1,16}\.[0-9]{1,9}\.[0-9]{1,18}$")]
    cursor: Option<String>,
}

/// A user's history: their creation, the orders they placed and those orders' payments
#[utoipa::path(
    get, path = "/users/{id}/history", tag = "users",
    params(("id" = Uuid, Path, description = "The user id"), UserHistoryParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "A page of the user's events, by the time they occurred", body = HistoryPage,
         headers(("ETag" = String, description = "Entity tag of the body"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn user_history(
    State(state): State<AppState>,
    UserId(user_id): UserId,
    ApiQuery(params): ApiQuery<UserHistoryParams>,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    let limit = in_range(params.limit, 20, 1, 100, "limit")?;
    let cursor = params.cursor.as_deref().map(parse_user_cursor).transpose()?;
    let direction = params.direction.unwrap_or_default().into();
    let db = state.read_models(eventline_read_models::Projection::Main, &after).await?;
    let mut events = history::user_page(&db, user_id, cursor, direction, limit + 1)
        .instrument(db::span("SELECT", "event_index"))
        .await
        .map_err(database_problem)?;
    if events.is_empty() && cursor.is_none() {
        return Err(no_such("user", user_id));
    }
    let next_cursor = more(&mut events, limit)
        .map(|last| format!("{}.{}.{}", last.occurred_at.timestamp_micros(), last.partition, last.offset));
    cached.answer(extract::by_digest(&HistoryPage { events, next_cursor }))
}

/// An order's history: its placement and its payment
#[utoipa::path(
    get, path = "/orders/{id}/history", tag = "orders",
    params(("id" = Uuid, Path, description = "The order id"), AggregateHistoryParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "A page of the order's events, by version", body = HistoryPage,
         headers(("ETag" = String, description = "Entity tag of the body"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn order_history(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    ApiQuery(params): ApiQuery<AggregateHistoryParams>,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    aggregate_history(&state, Aggregate::Order(order_id), params, &after, &cached).await
}

/// A sku's history: every adjustment of its stock
#[utoipa::path(
    get, path = "/inventory/{sku}/history", tag = "inventory",
    params(("sku" = String, Path, description = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
           AggregateHistoryParams, super::openapi::ConsistencyTokenHeader),
    responses(
        (status = 200, description = "A page of the sku's adjustments, by version", body = HistoryPage,
         headers(("ETag" = String, description = "Entity tag of the body"))),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        super::openapi::ReadProblems,
    )
)]
pub async fn sku_history(
    State(state): State<AppState>,
    Sku(sku): Sku,
    ApiQuery(params): ApiQuery<AggregateHistoryParams>,
    after: ReadAfter,
    cached: IfNoneMatch,
) -> Result<Response, Problem> {
    aggregate_history(&state, Aggregate::Inventory(sku), params, &after, &cached).await
}

async fn aggregate_history(
    state: &AppState,
    aggregate: Aggregate,
    params: AggregateHistoryParams,
    after: &ReadAfter,
    cached: &IfNoneMatch,
) -> Result<Response, Problem> {
    let limit = in_range(params.limit, 20, 1, 100, "limit")?;
    let cursor = match params.cursor.as_deref() {
        Some(cursor) => Some(cursor.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(invalid_cursor)?),
        None => None,
    };
    let direction = params.direction.unwrap_or_default().into();
    let db = state.read_models(eventline_read_models::Projection::Main, after).await?;
    let mut events = history::aggregate_page(&db, &aggregate, cursor, direction, limit + 1)
        .instrument(db::span("SELECT", "event_index"))
        .await
        .map_err(database_problem)?;
    if events.is_empty() && cursor.is_none() {
        return Err(no_aggregate(&aggregate));
    }
    let next_cursor = more(&mut events, limit).map(|last| last.version.to_string());
    cached.answer(extract::by_digest(&HistoryPage { events, next_cursor }))
}

/// Trims a page read with one event too many to `limit`, and returns its last event when there
/// was more (the next page's cursor).
pub(super) fn more<T>(items: &mut Vec<T>, limit: i64) -> Option<&T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last()
}

fn parse_user_cursor(cursor: &str) -> Result<UserCursor, Problem> {
    let mut parts = cursor.split('.');
    let parsed = (|| {
        let micros: i64 = parts.next()?.parse().ok()?;
        let partition: i32 = parts.next()?.parse().ok()?;
        let offset: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        let occurred_at = DateTime::from_timestamp_micros(micros)?;
        Some(UserCursor { occurred_at, position: LogPosition { partition, offset } })
    })();
    parsed.ok_or_else(invalid_cursor)
}

pub(super) fn invalid_cursor() -> Problem {
    Problem::new(problems::INVALID_CURSOR, "Pass the nextCursor of the previous page unchanged.")
}

/// The 404 of an aggregate with no event.
pub(super) fn no_aggregate(aggregate: &Aggregate) -> Problem {
    match aggregate {
        Aggregate::User(id) => no_such("user", *id),
        Aggregate::Order(id) => no_such("order", *id),
        Aggregate::Inventory(sku) => Problem::not_found(format!("No stock recorded for sku {sku}.")),
    }
}

/// `?asOf=` or `?asOfTime=`: read an aggregate as it was.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOfParams {
    /// The state after this many events of the aggregate (its version then); beyond the current
    /// version is a `404` naming the current one.
    #[param(minimum = 1)]
    as_of: Option<i64>,
    /// The state after every event that occurred at or before this time (RFC 3339). With `asOf`
    /// too, the earlier of the two bounds.
    #[param(value_type = Option<String>, format = DateTime)]
    as_of_time: Option<DateTime<Utc>>,
}

impl AsOfParams {
    /// What to fold up to, if the request asks for a past state (with both, the earlier bound
    /// wins). `raw_query` is the request's query string: an empty `asOfTime=` is not a time (the
    /// document says `date-time`), unlike other parameters, where empty reads as absent.
    pub(super) fn until(&self, raw_query: Option<&str>) -> Result<Option<Until>, Problem> {
        if raw_query.unwrap_or_default().split('&').any(|pair| pair == "asOfTime=") {
            return Err(Problem::new(types::INVALID_QUERY, "asOfTime is empty: give an RFC 3339 time."));
        }
        if self.as_of.is_some_and(|version| version < 1) {
            return Err(Problem::new(types::INVALID_QUERY, "asOf is a version: 1 or more."));
        }
        let until = Until { version: self.as_of, time: self.as_of_time };
        Ok((until != Until::ALL).then_some(until))
    }
}

/// An order as of `until`, folded from its history.
pub(super) async fn order_as_of(db: &PgPool, order_id: uuid::Uuid, until: Until) -> Result<Order, Problem> {
    let aggregate = Aggregate::Order(order_id);
    let events = past(db, &aggregate, until).await?;
    let mut fold = OrderFold::default();
    for event in &events {
        fold.apply(&event.event().map_err(unreadable)?, event.occurred_at);
    }
    fold.state().cloned().ok_or_else(|| not_yet(&aggregate, until))
}

/// A sku's stock as of `until`, folded from its history.
pub(super) async fn stock_as_of(db: &PgPool, sku: String, until: Until) -> Result<Stock, Problem> {
    let aggregate = Aggregate::Inventory(sku);
    let events = past(db, &aggregate, until).await?;
    let mut fold = StockFold::default();
    for event in &events {
        fold.apply(&event.event().map_err(unreadable)?, event.occurred_at);
    }
    fold.state().cloned().ok_or_else(|| not_yet(&aggregate, until))
}

/// The aggregate's events up to `until`; a version beyond the current one is a 404 that says
/// the current version.
async fn past(db: &PgPool, aggregate: &Aggregate, until: Until) -> Result<Vec<HistoryEvent>, Problem> {
    let events = history::up_to(db, aggregate, until)
        .instrument(db::span("SELECT", "event_index"))
        .await
        .map_err(database_problem)?;
    if let Some(version) = until.version
        && events.last().is_none_or(|e| e.version < version)
    {
        let current = history::current_version(db, aggregate)
            .instrument(db::span("SELECT", "event_index"))
            .await
            .map_err(database_problem)?;
        match current {
            None => return Err(no_aggregate(aggregate)),
            Some(current) if current < version => {
                let detail = format!(
                    "The {} {} is at version {current}; version {version} does not exist yet.",
                    kind_name(aggregate),
                    aggregate.id()
                );
                return Err(Problem::not_found(detail).with(problems::CURRENT_VERSION, current));
            }
            // The version exists, but the time bound ends before it.
            Some(_) => {}
        }
    }
    Ok(events)
}

/// The 404 of an aggregate that did not exist yet at `until`.
fn not_yet(aggregate: &Aggregate, until: Until) -> Problem {
    let at = match (until.version, until.time) {
        (_, Some(time)) => time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        (Some(version), None) => format!("version {version}"),
        (None, None) => "any point".to_owned(),
    };
    Problem::not_found(format!("The {} {} did not exist at {at}.", kind_name(aggregate), aggregate.id()))
}

fn kind_name(aggregate: &Aggregate) -> &'static str {
    match aggregate {
        Aggregate::User(_) => "user",
        Aggregate::Order(_) => "order",
        Aggregate::Inventory(_) => "sku",
    }
}

/// An indexed event this service cannot read back (written by a newer projector).
fn unreadable(error: eventline_events::DecodeError) -> Problem {
    tracing::error!(%error, "An indexed event cannot be read back");
    Problem::internal()
}
