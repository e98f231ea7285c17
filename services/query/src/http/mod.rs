//! The HTTP API of the query service: one module per resource, each with its `router()`.

mod users;

use axum::Router;
use eventline_runtime::http::{Check, Readiness, ops_router, with_problem_fallbacks};
use eventline_runtime::problem::Problem;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
}

pub fn router(state: AppState) -> Router {
    let pool = state.pool.clone();
    let readiness = Readiness::new(move || {
        let pool = pool.clone();
        async move { vec![Check { name: "postgres", ok: eventline_runtime::db::ping(&pool).await }] }
    });
    let api = Router::new().merge(users::router()).with_state(state);
    with_problem_fallbacks(api.merge(ops_router(readiness))).layer(TraceLayer::new_for_http())
}

/// A database failure, logged here and reported to the client without internals.
fn database_problem(error: sqlx::Error) -> Problem {
    tracing::warn!(%error, "Read model query failed");
    Problem::unavailable(
        "database-unavailable",
        "Read model unavailable",
        "The read model cannot be queried now. Retry later.",
        1,
    )
}

/// Parses a UUID path segment, or says clearly why not.
fn parse_id(raw: &str, what: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::try_parse(raw).map_err(|_| {
        Problem::bad_request(
            "invalid-id",
            "Invalid id",
            format!("{what} id {:?} is not a UUID", raw.chars().take(64).collect::<String>()),
        )
    })
}
