//! The HTTP API of the command service: the router here, one module per resource, each with its
//! `router()`, and around them:
//!
//! - `pipeline`: the one path every command takes (`execute`);
//! - `headers`: `Idempotency-Key` and `If-Match`;
//! - `answers`: what an accepted command answers; `refusals`: what a refused one does;
//! - `openapi` and `links`: the document, and the links from a command to the read that shows it.

mod answers;
mod batch;
mod headers;
mod inventory;
mod links;
pub mod openapi;
mod orders;
mod payments;
mod pipeline;
mod refusals;
mod users;

pub use answers::{Accepted, BatchAccepted, Position};
pub use headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use pipeline::{Decided, RequestTarget, execute};

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use eventline_runtime::auth::{self, Guard};
use eventline_runtime::cors::{ApiCors, CorsConfig};
use eventline_runtime::http::{Check, Readiness, api_service};
use eventline_runtime::problem::ProblemSlug;
use eventline_runtime::rate_limit::RateLimiter;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::idempotency::IdempotencyStore;
use crate::log::EventLog;
use crate::state::WriteModel;

/// Largest body of a single command.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Largest body of a batch.
pub const BATCH_BODY_LIMIT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub log: EventLog,
    /// The decision state every command is decided against.
    pub write_model: WriteModel,
    pub idempotency: Arc<IdempotencyStore>,
    /// Who may send commands (the `write` scope), checked before any command route.
    pub guard: Guard,
    /// Each client's command rate.
    pub commands: Arc<RateLimiter>,
    /// Whether the event topic still keeps its history (checked while running).
    pub topic: eventline_runtime::topic_guard::TopicGuard,
}

/// What the command API serves and reads, for CORS.
pub const CORS: ApiCors = ApiCors {
    methods: &[Method::POST],
    headers: &["authorization", "content-type", "idempotency-key", "if-match", "traceparent", "tracestate"],
    exposed: &["consistency-token", "idempotent-replayed", "retry-after", "traceresponse"],
};

pub fn router(state: AppState, cors: &CorsConfig) -> Router {
    let checks = state.clone();
    let readiness = Readiness::new(move || {
        let state = checks.clone();
        async move {
            // Redis is not a readiness condition: it only serves idempotency keys, and requests
            // without one work without it.
            vec![
                Check::new("kafka", state.log.is_reachable().await),
                Check::new("decision-state", state.write_model.is_ready()),
                state.topic.readiness(),
            ]
        }
    });
    let (api, document) = api_routes().split_for_parts();
    let document = openapi::finish(document);
    let (guard, commands) = (state.guard.clone(), state.commands.clone());
    let api =
        auth::guarded(api.with_state(state), guard, commands).layer(middleware::from_fn(count_rejections));
    api_service(api, &document, readiness, cors.layer(&CORS))
}

/// The command routes with their OpenAPI descriptions; the router serves them and the document
/// describes them, so the two cannot drift apart.
fn api_routes() -> OpenApiRouter<AppState> {
    let single = OpenApiRouter::new()
        .merge(users::router())
        .merge(orders::router())
        .merge(payments::router())
        .merge(inventory::router())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    let batch = batch::router().layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT_BYTES));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).merge(single).merge(batch)
}

/// The OpenAPI document of the command API.
pub fn openapi_document() -> serde_json::Value {
    openapi::finish(api_routes().into_openapi())
}

/// Counts every refused command by route and problem type (accepted ones are counted in
/// `execute`, by event type).
async fn count_rejections(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let response = next.run(request).await;
    if let Some(ProblemSlug(reason)) = response.extensions().get::<ProblemSlug>() {
        crate::metrics::rejected(route, reason, response.status().as_u16());
    }
    response
}
