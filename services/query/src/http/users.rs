//! `GET /users/{id}`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use eventline_runtime::problem::Problem;
use serde::Serialize;
use uuid::Uuid;

use super::{AppState, database_problem, parse_id};

pub fn router() -> Router<AppState> {
    Router::new().route("/users/{id}", get(get_user))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct User {
    user_id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "eventline_events::serialize_rfc3339")]
    updated_at: DateTime<Utc>,
}

async fn get_user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<User>, Problem> {
    let user_id = parse_id(&id, "user")?;
    let user: Option<User> = sqlx::query_as(
        "SELECT user_id, email, first_name, last_name, created_at, updated_at FROM users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&state.pool)
    .await
    .map_err(database_problem)?;
    user.map(Json).ok_or_else(|| Problem::not_found(format!("No user {user_id}.")))
}
