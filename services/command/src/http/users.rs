//! `POST /users`: create a user.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use eventline_runtime::problem::{JsonBody, Problem};

use super::{AppState, Decided, execute};
use crate::decide::{self, CreateUser, Errors};

pub fn router() -> Router<AppState> {
    Router::new().route("/users", post(create_user))
}

/// Create a user: appends `UserCreated`, keyed by the user id.
pub async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, "POST /users", body, |body, ids| {
        let command: CreateUser = body.parse()?;
        decide::create_user(command, ids, Errors::default()).map(Decided::One).map_err(Problem::validation)
    })
    .await
}
