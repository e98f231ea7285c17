//! The HTTP API of the command service: one module per resource, each with its `router()`.

mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventline_events::{ConsistencyToken, Envelope, LogPosition};
use eventline_runtime::http::{Check, Readiness, ops_router, with_problem_fallbacks};
use eventline_runtime::problem::Problem;
use tower_http::trace::TraceLayer;

use crate::log::{AppendError, EventLog};

/// Header carrying the log position(s) a later read must wait for (read-your-writes).
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("consistency-token");

/// Largest accepted body of a single command.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub log: EventLog,
}

pub fn router(state: AppState) -> Router {
    let log = state.log.clone();
    let readiness = Readiness::new(move || {
        let log = log.clone();
        async move {
            vec![Check {
                name: "kafka",
                ok: log.is_reachable().await,
            }]
        }
    });
    let api = Router::new()
        .merge(users::router())
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    with_problem_fallbacks(api.merge(ops_router(readiness))).layer(TraceLayer::new_for_http())
}

/// Appends one decided event and maps failures to problems; never reports success for an event
/// the broker did not acknowledge.
async fn append(log: &EventLog, envelope: &Envelope) -> Result<LogPosition, Problem> {
    let started = std::time::Instant::now();
    let result = log.append(envelope).await;
    metrics::histogram!("eventline_command_append_seconds").record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("eventline_commands_total", "type" => envelope.event_type().as_str(), "outcome" => outcome)
        .increment(1);
    result.map_err(|error| match error {
        AppendError::Unavailable(cause) => {
            tracing::warn!(error = %cause, event_id = %envelope.event_id, "Append failed: event log unavailable");
            Problem::unavailable(
                "log-unavailable",
                "Event log unavailable",
                "The event log did not acknowledge the event; nothing was recorded. Retry later.",
                1,
            )
        }
        AppendError::Refused(cause) => {
            tracing::error!(error = %cause, event_id = %envelope.event_id, "Append refused by the broker");
            Problem::internal()
        }
    })
}

/// `202 Accepted` with the body and the consistency token of the appended positions.
fn accepted(
    body: impl serde::Serialize,
    positions: impl IntoIterator<Item = LogPosition>,
) -> Response {
    let token: ConsistencyToken = positions.into_iter().collect();
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&token.to_string()) {
        response.headers_mut().insert(CONSISTENCY_TOKEN, value);
    }
    response
}
