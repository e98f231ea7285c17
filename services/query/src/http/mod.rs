//! The HTTP API of the query service: one module per resource, each with its `router()`, and
//! what they share — read-your-writes, ETags, problems.

mod extract;
mod history;
mod inventory;
mod links;
mod live;
pub mod openapi;
mod orders;
mod orders_by_status;
mod users;

use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use eventline_events::ConsistencyToken;
use eventline_runtime::auth::{self, Guard, Scope};
use eventline_runtime::cors::{ApiCors, CorsConfig};
use eventline_runtime::http::{Check, Readiness, api_service};
use eventline_runtime::problem::{Problem, ProblemMember, types};
use eventline_runtime::rate_limit::RateLimiter;

use crate::problems;
use eventline_read_models::documents::{self, Tagged};
use sqlx::PgPool;
use tracing::Instrument as _;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::consistency::{LiveReadModels, Unavailable};
use crate::log_watch::LogWatch;
use eventline_read_models::Projection;
use extract::ReadAfter;

/// The statement behind each read, for checking their plans.
pub mod statements {
    pub use super::PARKED_SQL;
    pub use super::inventory::STOCK_SQL;
    pub use super::users::{ORDERS_SQL, USER_EXISTS_SQL};
    pub use eventline_read_models::documents::{
        ORDERS_SQL as ORDER_DOCUMENTS_SQL, STORED_ORDER_SQL, STORED_USER_SQL, USERS_SQL as USER_DOCUMENTS_SQL,
    };
}

#[derive(Clone)]
pub struct AppState {
    /// A pool on the `public` schema (readiness).
    pub pool: PgPool,
    pub read_models: LiveReadModels,
    /// Whether the read models belong to the log the broker serves.
    pub log: LogWatch,
    /// Longest wait for a Consistency-Token.
    pub consistency_wait: Duration,
    pub live: Live,
    /// Who may read (the `read` scope), checked before any read.
    pub guard: Guard,
    /// Each client's read rate.
    pub reads: std::sync::Arc<RateLimiter>,
    /// Longest time a read may take to have its answer (a live stream answers at once).
    pub read_timeout: Duration,
    /// The event topic: the projector parks aggregate keys of it (a read of a parked one is refused).
    pub topic: std::sync::Arc<str>,
}

/// What the live streams share.
#[derive(Clone)]
pub struct Live {
    pub changes: crate::live::Changes,
    /// Cancelled when the service stops: every stream ends, so the graceful shutdown can finish.
    pub stopping: tokio_util::sync::CancellationToken,
    /// How often an idle stream gets a comment, so that proxies keep it open.
    pub heartbeat: Duration,
}

/// What the query API serves and reads, for CORS.
pub const CORS: ApiCors = ApiCors {
    methods: &[Method::GET, Method::HEAD],
    headers: &[
        "authorization",
        "consistency-token",
        "if-none-match",
        "last-event-id",
        "traceparent",
        "tracestate",
    ],
    exposed: &["etag", "retry-after", "traceresponse"],
};

pub fn router(state: AppState, cors: &CorsConfig) -> Router {
    let (pool, read_models, log) = (state.pool.clone(), state.read_models.clone(), state.log.clone());
    let readiness = Readiness::new(move || {
        let (pool, known, same_log) = (pool.clone(), read_models.known(), log.other_log().is_none());
        async move {
            vec![
                Check::new("postgres", eventline_runtime::db::ping(&pool).await),
                // Reads need the live version (a database not yet migrated has none).
                Check::new("live read models", known),
                // Read models of another log are never served as current.
                Check::new("read models of this log", same_log),
            ]
        }
    });
    let (api, document) = api_routes().split_for_parts();
    let document = finish(document);
    let (guard, reads, read_timeout) = (state.guard.clone(), state.reads.clone(), state.read_timeout);
    let api = api.with_state(state).layer(axum::middleware::from_fn_with_state(read_timeout, time_limited));
    let api = auth::guarded(api, guard, reads);
    api_service(api, &document, readiness, cors.layer(&CORS))
}

/// The query routes with their OpenAPI descriptions; the router serves them and the document
/// describes them, so the two cannot drift apart.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(users::router())
        .merge(orders::router())
        .merge(orders_by_status::router())
        .merge(inventory::router())
        .merge(history::router())
        .merge(live::router())
}

/// The OpenAPI document of the query API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    finish(api_routes().into_openapi())
}

/// Finishes the generated document with what the derives cannot say: the links between
/// operations and the problem members this API sends. The served and the committed document both
/// come through here.
fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    links::declare(&mut document);
    // Every read, history and live stream included, takes the `read` scope.
    auth::openapi::declare(&mut document, |_, _| Some(Scope::Read));
    ProblemMember::declare(&mut document, &[problems::CURRENT_VERSION]);
    document
}

impl AppState {
    /// The pool to answer from: `projection`'s live read models, once they have applied the
    /// position the request must read after (at once without one). The position is checked
    /// against that projection's checkpoints only: a read never waits for a projection it does
    /// not read.
    pub(super) async fn read_models(
        &self,
        projection: Projection,
        after: &ReadAfter,
    ) -> Result<PgPool, Problem> {
        if let Some(other) = self.log.other_log() {
            tracing::warn!(%other, "Refusing a read: the read models belong to another log");
            return Err(Problem::new(
                problems::READ_MODELS_FROM_ANOTHER_LOG,
                "The read models were built from another event log than the one the broker serves now, so \
                 they cannot be served as current. An operator must reset or rebuild them.",
            )
            .retry_after(30));
        }
        let Some(token) = &after.0 else {
            let snapshot = self.read_models.current(projection, self.consistency_wait).await;
            return snapshot
                .map(|s| s.pool.clone())
                .map_err(|unavailable| unavailable_problem(projection, unavailable));
        };
        if let Some(problem) = impossible(token, self.log.partitions()) {
            return Err(problem);
        }
        self.reaching(projection, token).await
    }

    /// `projection`'s live read models once they have applied every position of `token`.
    async fn reaching(&self, projection: Projection, token: &ConsistencyToken) -> Result<PgPool, Problem> {
        let started = std::time::Instant::now();
        let wait = tracing::info_span!(
            "consistency wait",
            eventline.consistency.token = %token,
            eventline.consistency.outcome = tracing::field::Empty,
        );
        // While waiting, a token the read models have not reached is checked against the end of
        // the log: a position the log never issued is refused at once instead of after the wait.
        let reaching =
            self.read_models.reaching(projection, token, self.consistency_wait).instrument(wait.clone());
        let beyond_end = self.log.beyond_end(token, self.consistency_wait);
        let reached = tokio::select! {
            biased;
            reached = reaching => reached,
            Some((partition, offset, end)) = beyond_end => {
                wait.record("eventline.consistency.outcome", "beyond_end");
                return Err(impossible_token(format!(
                    "The token names offset {offset} of partition {partition}, but that partition of the event \
                     log ends before offset {end}"
                )));
            }
        };
        let outcome = match &reached {
            Ok(_) => "reached",
            Err(Unavailable::NotReady) => "not_ready",
            Err(Unavailable::CatchingUp) => "catching_up",
            Err(Unavailable::Behind) => "behind",
        };
        wait.record("eventline.consistency.outcome", outcome);
        crate::metrics::consistency_wait(outcome, started.elapsed().as_secs_f64());
        match reached {
            Ok(snapshot) => Ok(snapshot.pool.clone()),
            Err(Unavailable::Behind) => Err(Problem::new(
                problems::PROJECTION_BEHIND,
                format!(
                    "The read models have not yet applied position(s) {token} after {} ms; retry shortly.",
                    self.consistency_wait.as_millis()
                ),
            )
            .retry_after(1)),
            Err(unavailable) => Err(unavailable_problem(projection, unavailable)),
        }
    }
}

/// Why `projection` cannot answer now, as a problem.
fn unavailable_problem(projection: Projection, unavailable: Unavailable) -> Problem {
    match unavailable {
        Unavailable::CatchingUp => Problem::new(
            problems::PROJECTION_CATCHING_UP,
            format!(
                "The {projection} read model was added recently and is still catching up with the event log for \
                 the first time; it answers once it has. Retry later."
            ),
        )
        .retry_after(5),
        Unavailable::NotReady | Unavailable::Behind => not_ready(),
    }
}

/// Answers `503 read-timeout` when a read takes longer than `limit` (a lock held on a read model,
/// a database that stopped answering), so that it does not hold its client and connection for as
/// long as the database does. The limit ends when the handler has its answer, not when the body
/// is sent: a live stream answers at once and then lasts as long as its client, unbounded.
async fn time_limited(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_secs = limit.as_secs_f64(), "A read took longer than its limit");
            let detail = format!("The read took longer than {} s; retry shortly.", limit.as_secs_f64());
            Problem::new(problems::READ_TIMEOUT, detail).retry_after(1).into_response()
        }
    }
}

fn not_ready() -> Problem {
    Problem::new(
        types::DATABASE_UNAVAILABLE,
        "The live read models are not known yet (the database is unavailable or not migrated); retry shortly.",
    )
    .retry_after(1)
}

/// Whether key `$2` of topic `$1` is parked (behind an event the database refused), or, for user
/// `$3` (null for other aggregates), an event that would change its document.
pub const PARKED_SQL: &str = "SELECT EXISTS (SELECT 1 FROM parked_keys WHERE topic = $1 AND message_key = $2)
            OR EXISTS (SELECT 1 FROM parked_events WHERE topic = $1 AND user_id = $3)";

/// The aggregate a read is for, as the projector parks it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Aggregate<'a> {
    User(uuid::Uuid),
    Order(uuid::Uuid),
    Sku(&'a str),
}

impl Aggregate<'_> {
    fn kind(self) -> &'static str {
        match self {
            Aggregate::User(_) => "user",
            Aggregate::Order(_) => "order",
            Aggregate::Sku(_) => "sku",
        }
    }

    /// Its Kafka message key.
    fn key(self) -> String {
        match self {
            Aggregate::User(id) | Aggregate::Order(id) => id.to_string(),
            Aggregate::Sku(sku) => sku.to_owned(),
        }
    }

    /// The user whose document it is, whose orders' parked events count too.
    fn user(self) -> Option<uuid::Uuid> {
        match self {
            Aggregate::User(id) => Some(id),
            Aggregate::Order(_) | Aggregate::Sku(_) => None,
        }
    }
}

/// The document the projector stored for a user or an order (one primary-key read,
/// [`documents::STORED_USER_SQL`] or [`documents::STORED_ORDER_SQL`]), `None` when the row has none
/// yet (stored before documents were), `404` when there is no row, and `503 aggregate-parked` when
/// the aggregate is parked.
async fn stored_document(
    state: &AppState,
    db: &PgPool,
    aggregate: Aggregate<'_>,
) -> Result<Option<Tagged>, Problem> {
    let (sql, table, id) = match aggregate {
        Aggregate::User(id) => (documents::STORED_USER_SQL, "users", id),
        Aggregate::Order(id) => (documents::STORED_ORDER_SQL, "orders", id),
        // A sku's stock is read whole (`inventory::STOCK_SQL`): it has no stored document.
        Aggregate::Sku(_) => return Ok(None),
    };
    let stored: Option<documents::Stored> = sqlx::query_as(sql)
        .bind(id)
        .bind(&*state.topic)
        .bind(aggregate.key().as_bytes())
        .fetch_optional(db)
        .instrument(eventline_runtime::db::span("SELECT", table))
        .await
        .map_err(database_problem)?;
    match stored {
        Some(stored) if stored.parked => Err(parked(aggregate)),
        Some(stored) => Ok(stored.ready()),
        None => {
            refuse_parked(state, db, aggregate).await?;
            Err(no_such(aggregate.kind(), id))
        }
    }
}

/// `503 aggregate-parked` when the aggregate is parked: the read models hold it as of before the
/// refused event, which is not current (DESIGN.md rule 5). For a user, an order of theirs placed
/// or paid and parked counts too (its document lacks it).
pub(super) async fn refuse_parked(
    state: &AppState,
    db: &PgPool,
    aggregate: Aggregate<'_>,
) -> Result<(), Problem> {
    let is_parked: bool = sqlx::query_scalar(PARKED_SQL)
        .bind(&*state.topic)
        .bind(aggregate.key().as_bytes())
        .bind(aggregate.user())
        .fetch_one(db)
        .instrument(eventline_runtime::db::span("SELECT", "parked_keys"))
        .await
        .map_err(database_problem)?;
    if is_parked { Err(parked(aggregate)) } else { Ok(()) }
}

fn parked(aggregate: Aggregate<'_>) -> Problem {
    let (kind, key) = (aggregate.kind(), aggregate.key());
    Problem::new(
        crate::problems::AGGREGATE_PARKED,
        format!(
            "The read models refused an event of {kind} {key} (or, for a user, of one of their orders); it and \
             the events after it wait for an operator (eventline-projector parked redrive). What they hold of \
             this {kind} is not current."
        ),
    )
    .retry_after(60)
}

/// The 404 of a user or order that is not in the read models: `No user <id>.`
fn no_such(what: &str, id: uuid::Uuid) -> Problem {
    Problem::not_found(format!("No {what} {id}."))
}

/// A database failure, logged here and reported to the client without internals.
fn database_problem(error: sqlx::Error) -> Problem {
    tracing::warn!(%error, "Read model query failed");
    Problem::new(types::DATABASE_UNAVAILABLE, "The read model cannot be queried now. Retry later.")
        .retry_after(1)
}

/// `[lo, hi]` or a 400 naming the parameter.
fn in_range(value: Option<i64>, default: i64, lo: i64, hi: i64, name: &str) -> Result<i64, Problem> {
    let value = value.unwrap_or(default);
    if (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(Problem::new(types::INVALID_QUERY, format!("{name} must be {lo} to {hi}")))
    }
}

/// A token naming a partition beyond the topic's `partitions` was not issued by this log: waiting
/// for it would never end, so it is refused at once.
fn impossible(token: &ConsistencyToken, partitions: Option<u32>) -> Option<Problem> {
    let partitions = partitions?;
    let beyond = token.positions().find(|p| u32::try_from(p.partition).is_ok_and(|p| p >= partitions))?;
    Some(impossible_token(format!(
        "The token names partition {}, but the event log has {partitions} partitions",
        beyond.partition
    )))
}

/// `409 impossible-consistency-token`: `why` the log cannot have issued the token.
fn impossible_token(why: String) -> Problem {
    Problem::new(
        problems::IMPOSSIBLE_CONSISTENCY_TOKEN,
        format!(
            "{why}: it was not issued by this deployment's command API. Read without it, or with a token \
             the command API returned."
        ),
    )
}
