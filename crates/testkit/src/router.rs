//! Router-level tests: a service built as its `main` builds it, over a `#[sqlx::test]` database,
//! sent requests with `tower::ServiceExt::oneshot` (no listener, and no broker for what never
//! reaches one).

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt as _;

/// The URL of `pool`'s database, on the server `DATABASE_URL` names (`#[sqlx::test]` makes its
/// databases there).
pub async fn database_url(pool: &PgPool) -> String {
    let database: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    let server = server.split('?').next().unwrap().rsplit_once('/').unwrap().0.to_owned();
    format!("{server}/{database}")
}

/// Ends every other session on `pool`'s database: a `#[sqlx::test]` database is dropped when its
/// test ends, and PostgreSQL drops one that has sessions only after a wait. Stop the service
/// first (drop it), or its tasks reconnect.
pub async fn end_other_sessions(pool: &PgPool) {
    // A moment for the dropped service's tasks to see they were stopped.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A service's answer: its status, headers and JSON body (`null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The problem type's last segment (`…/problems/invalid-id` → `invalid-id`).
    pub fn problem(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default()
    }
}

/// Sends `request` to `router` and reads the whole answer.
pub async fn send(router: &axum::Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    Answer { status: parts.status, headers: parts.headers, body }
}
