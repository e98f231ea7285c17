//! The projector's admin API: `/healthz`, `/readyz`, `/metrics`, `/status` (checkpoints and
//! assignment) and the operator console (`/console`), on 127.0.0.1:8083 by default.

use eventline_runtime::config::KafkaConfig;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use eventline_runtime::http::{Check, Readiness, ops_router, traced, with_problem_fallbacks};
use eventline_runtime::problem::{Problem, types};
use serde::Serialize;

use crate::live::consumer::LogConsumer;
use crate::live::coverage::Coverage;
use crate::live::dedup::FastPath;
use crate::live::runner::RunnerStatus;
use crate::live::target::Writing;

#[derive(Clone)]
pub struct AdminState {
    /// The version written (status and readiness follow it across switches).
    pub writing: Arc<Writing>,
    pub consumer: Arc<LogConsumer>,
    pub kafka: KafkaConfig,
    pub status: Arc<RunnerStatus>,
    pub fast_path: Arc<FastPath>,
    /// Partitions no member of the group consumes.
    pub coverage: Arc<Coverage>,
    /// How long a batch may keep failing before the projection reports not ready.
    pub stall: std::time::Duration,
    /// Whether the event topic still keeps its history (checked while running).
    pub topic: eventline_runtime::topic_guard::TopicGuard,
}

pub fn router(state: AdminState, console: crate::console::ConsoleState) -> Router {
    let ready_state = state.clone();
    let readiness = Readiness::new(move || {
        let state = ready_state.clone();
        async move {
            let database = eventline_runtime::db::ping(&state.writing.current().pool).await;
            let kafka = crate::live::consumer::is_reachable(&state.consumer).await;
            // A fatal error, the breaker open, or a batch failing for longer than the stall bound.
            let halted = state.status.not_ready_because(state.stall);
            let covered = state.coverage.stalled().is_empty();
            vec![
                Check::new("postgres", database),
                Check::new("kafka", kafka),
                Check::failing_because("projection", halted),
                // Lag on partitions that no group member consumes, for longer than the bound.
                Check::new("every partition consumed", covered),
                // Projection goes on without Redis (PostgreSQL alone dedups), but degraded.
                Check::new("redis", state.fast_path.ping().await),
                state.topic.readiness(),
            ]
        }
    });
    let api =
        Router::new().route("/projections", get(status)).route("/status", get(status)).with_state(state);
    traced(with_problem_fallbacks(api.merge(ops_router(readiness)).merge(crate::console::router(console))))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    /// The main projection's, which consumes every event.
    #[serde(flatten)]
    projection: crate::live::status::ProjectionStatus,
    /// Every projection's lag (a projection never live shows its first catch-up).
    projections: Vec<crate::live::status::ProjectionLag>,
    assigned_partitions: Vec<i32>,
    /// Partitions with events to apply that no member of the group owns (from the broker's
    /// description of the group).
    unconsumed_partitions: Vec<i32>,
    database_ok: bool,
    fatal_error: Option<String>,
    /// The batch being retried now, if one is (an outage, an unclassed error, the breaker open).
    failing_batch: Option<crate::live::runner::Failing>,
}

/// `GET /projections` (and `/status`): the `status` subcommand's JSON, plus this instance's view.
async fn status(State(state): State<AdminState>) -> Result<Json<Status>, Problem> {
    let projection =
        crate::live::status::collect(&state.writing.current().pool, &state.kafka).await.map_err(|error| {
            tracing::warn!(%error, "Collecting the projection status failed");
            Problem::new(types::DATABASE_UNAVAILABLE, "The status cannot be read now.").retry_after(1)
        })?;
    let pool = state.writing.current().pool.clone();
    let projections = crate::live::status::projection_lags(&pool, &state.kafka.topic, &projection.partitions)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "Collecting the projections' lag failed");
            Problem::new(types::DATABASE_UNAVAILABLE, "The status cannot be read now.").retry_after(1)
        })?;
    Ok(Json(Status {
        projection,
        projections,
        assigned_partitions: state.status.assigned.lock().map(|a| a.clone()).unwrap_or_default(),
        unconsumed_partitions: state.coverage.unconsumed(),
        database_ok: state.status.database_ok.load(Ordering::Relaxed),
        fatal_error: state.status.fatal.lock().ok().and_then(|f| f.clone()),
        failing_batch: state.status.failing.lock().ok().and_then(|f| f.clone()),
    }))
}
