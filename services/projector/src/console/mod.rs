//! The operator console, served by the projector on its admin port (`/console`): one page with
//! no external assets, live over Server-Sent Events, on JSON endpoints that are documented
//! (`/console/api/openapi.json`) and usable without the page.
//!
//! - `access`: tokens, roles, sessions and CSRF, read-only mode — checked on every endpoint;
//! - `projection`: partitions, lag in events and time, owners, stalls, ETA and the hour's trend,
//!   fed by the observer's rounds;
//! - `dead_letters`: grouped, opened, redriven or discarded behind a dry run and a confirmation;
//! - `parked`: keys parked behind an event the database refused, the same way;
//! - `operations`: rebuild, rollback and verify run as a job, watched while they run;
//! - `find`: where a user, order or sku lives, its row and its events;
//! - `audit`: every action, in PostgreSQL;
//! - `page.html`: the page.

pub mod access;
pub mod audit;
mod dead_letters;
mod find;
pub mod operations;
mod parked;
pub mod projection;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use eventline_runtime::config::KafkaConfig;
use eventline_runtime::problem::{Problem, types};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::access::{Access, Caller, Role};
use self::projection::{Overview, Projection, TrendPoint};
use crate::live::runner::RunnerStatus;
use crate::live::target::Writing;
use eventline_runtime::auth::Scope;

const PAGE: &str = include_str!("page.html");

/// The problem types the console answers with beyond the shared ones; docs/problems.md lists the
/// same (tests/problems.rs checks).
pub fn problems() -> impl Iterator<Item = eventline_runtime::problem::ProblemType> {
    [
        access::UNAUTHORIZED,
        access::FORBIDDEN,
        eventline_runtime::auth::AUTHENTICATION_UNAVAILABLE,
        dead_letters::CONFIRMATION_REQUIRED,
        operations::JOB_RUNNING,
    ]
    .into_iter()
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub access: Arc<Access>,
    pub projection: Arc<Projection>,
    pub writing: Arc<Writing>,
    /// The `public` schema (the audit).
    pub public: PgPool,
    pub kafka: KafkaConfig,
    pub status: Arc<RunnerStatus>,
    pub jaeger_url: String,
    /// What a rebuild, rollback or verify started here needs (the CLI's configuration).
    pub config: Arc<crate::Config>,
    pub jobs: Arc<operations::Jobs>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventline operator console API",
        description = "What the projector's console shows and does, for programs too: the projection \
            (per partition lag in events and time, owners, stalls, ETA, an hour's trend), dead letters \
            (grouped, opened, redriven or discarded behind a dry run and a typed confirmation), the \
            read-model versions with rebuild, rollback and verify, finding an aggregate by key, and \
            the audit of every action.\n\nSend `Authorization: Bearer <token>` (EVENTLINE_CONSOLE_TOKENS); \
            or a JWT from the identity provider; the page signs in once and uses a session cookie, with \
            `X-CSRF-Token` on every action. Looking takes the `view` scope, acting the `operate` scope, \
            and a read-only console refuses every action.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        version = env!("CARGO_PKG_VERSION"),
    ),
    servers((url = "http://127.0.0.1:8083", description = "Local stack (`make up`)")),
    tags(
        (name = "session", description = "Signing in and out"),
        (name = "projection", description = "How far the projection is"),
        (name = "dead letters", description = "Messages the projector could not apply"),
        (name = "parked keys", description = "Keys waiting behind an event the database refused"),
        (name = "versions", description = "Read-model versions: rebuild, rollback, verify"),
        (name = "find", description = "Where a user, order or sku lives"),
        (name = "audit", description = "Every action taken"),
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

fn api_routes() -> OpenApiRouter<ConsoleState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session, login, logout))
        .routes(routes!(overview))
        .routes(routes!(trend))
        .routes(routes!(stream))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::show))
        .routes(routes!(dead_letters::redrive))
        .routes(routes!(dead_letters::discard))
        .routes(routes!(parked::list))
        .routes(routes!(parked::show))
        .routes(routes!(parked::redrive))
        .routes(routes!(parked::discard))
        .routes(routes!(audit_log))
        .routes(routes!(operations::versions))
        .routes(routes!(operations::start_rebuild))
        .routes(routes!(operations::start_rollback))
        .routes(routes!(operations::start_verify))
        .routes(routes!(find::find))
}

/// The console's OpenAPI document.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    finish(api_routes().into_openapi())
}

/// Declares the scope each operation takes: looking takes `view`, acting `operate`; the session
/// endpoints are open (signing in is how a page gets a session).
fn finish(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    eventline_runtime::auth::openapi::declare(&mut document, |path, method| match (path, method) {
        ("/console/api/session", _) => None,
        (_, "GET") => Some(Scope::View),
        _ => Some(Scope::Operate),
    });
    document
}

/// The console's routes, to merge into the admin API.
pub fn router(state: ConsoleState) -> Router {
    let (api, document) = api_routes().split_for_parts();
    let document = finish(document);
    api.route("/console/api/openapi.json", eventline_runtime::http::json_document(&document))
        .route("/console", axum::routing::get(page))
        .layer(axum::middleware::from_fn(no_store))
        .with_state(state)
}

async fn page() -> Response {
    // The page loads nothing from elsewhere, and nothing may frame it.
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (headers, Html(PAGE)).into_response()
}

/// Who is signed in.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Whoami {
    name: String,
    role: Role,
    /// Send as `X-CSRF-Token` with every action made with the session cookie.
    csrf_token: Option<String>,
    /// Whether the console refuses every action.
    read_only: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// Sign in with a token: sets the session cookie
#[utoipa::path(post, path = "/console/api/session", tag = "session", request_body = Login,
    responses((status = 200, body = Whoami), (status = 401, description = "Unknown token")))]
async fn login(State(state): State<ConsoleState>, Json(login): Json<Login>) -> Result<Response, Problem> {
    let session = state.access.login(login.token.trim()).await?;
    tracing::info!(name = %session.principal.name, "Console sign-in");
    let whoami = Whoami {
        name: session.principal.name,
        role: session.principal.role,
        csrf_token: Some(session.csrf),
        read_only: state.access.read_only,
    };
    Ok(([(header::SET_COOKIE, access::set_cookie(Some(&session.id)))], Json(whoami)).into_response())
}

/// Who is signed in (and the session's CSRF token)
#[utoipa::path(get, path = "/console/api/session", tag = "session",
    responses((status = 200, body = Whoami), (status = 401, description = "Not signed in")))]
async fn session(State(state): State<ConsoleState>, headers: HeaderMap) -> Result<Json<Whoami>, Problem> {
    let caller = state.access.caller(&headers).await?;
    Ok(Json(Whoami {
        name: caller.principal.name.clone(),
        role: caller.principal.role,
        csrf_token: caller.csrf().map(str::to_owned),
        read_only: state.access.read_only,
    }))
}

/// Sign out
#[utoipa::path(delete, path = "/console/api/session", tag = "session",
    responses((status = 204, description = "Signed out; the cookie is cleared")))]
async fn logout(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    state.access.logout(&headers);
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, access::set_cookie(None))]).into_response()
}

/// The projection now: partitions, lag, owners, alerts, ETA
#[utoipa::path(get, path = "/console/api/projection", tag = "projection",
    responses((status = 200, body = Overview), (status = 503, description = "Not observed yet")))]
async fn overview(_caller: Caller, State(state): State<ConsoleState>) -> Result<Json<Overview>, Problem> {
    let latest = state.projection.latest().ok_or_else(not_observed_yet)?;
    Ok(Json(latest.as_ref().clone()))
}

/// The last hour of lag and throughput
#[utoipa::path(get, path = "/console/api/projection/trend", tag = "projection",
    responses((status = 200, body = Vec<TrendPoint>)))]
async fn trend(_caller: Caller, State(state): State<ConsoleState>) -> Json<Vec<TrendPoint>> {
    Json(state.projection.trend())
}

/// Live: a `projection` event (an Overview) after every observation
#[utoipa::path(get, path = "/console/api/stream", tag = "projection",
    responses((status = 200, body = String, content_type = "text/event-stream",
        description = "`projection` events, each an Overview in JSON; comments every 15 s keep proxies from closing it")))]
async fn stream(
    _caller: Caller,
    State(state): State<ConsoleState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = state.projection.subscribe();
    let events = futures::stream::unfold((updates, true), |(mut updates, first)| async move {
        // The current overview at once, then one per change.
        if !first && updates.changed().await.is_err() {
            return None;
        }
        let overview = updates.borrow_and_update().clone();
        let event = match overview {
            Some(overview) => {
                Event::default().event("projection").json_data(overview.as_ref()).unwrap_or_default()
            }
            None => Event::default().comment("not observed yet"),
        };
        Some((Ok(event), (updates, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The newest actions taken through the console
#[utoipa::path(get, path = "/console/api/audit", tag = "audit",
    responses((status = 200, body = Vec<audit::AuditEntry>)))]
async fn audit_log(
    _caller: Caller,
    State(state): State<ConsoleState>,
) -> Result<Json<Vec<audit::AuditEntry>>, Problem> {
    let entries = audit::recent(&state.public, 200).await.map_err(|e| cannot_read("The audit", e))?;
    Ok(Json(entries))
}

/// `what` (e.g. "The dead letters") cannot be read now: the cause logged here, a 503 with
/// `Retry-After` for the caller.
fn cannot_read(what: &str, error: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %error, "{what} cannot be read");
    Problem::new(types::DATABASE_UNAVAILABLE, format!("{what} cannot be read now.")).retry_after(1)
}

fn not_observed_yet() -> Problem {
    Problem::new(types::DATABASE_UNAVAILABLE, "The projection has not been observed yet; retry in a second.")
        .retry_after(1)
}

/// Never cached: every console answer.
async fn no_store(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
