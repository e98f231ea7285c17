//! `POST /users`: create a user.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use eventline_runtime::problem::{JsonBody, Problem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Decided, RequestTarget, execute};
use crate::decide::{self, CreateUser, Errors};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_user))
}

/// Create a user
///
/// Appends `UserCreated`, keyed by the user id. The user id is generated (UUIDv7) when absent.
#[utoipa::path(
    post, path = "/users", tag = "users", request_body = CreateUser,
    params(super::openapi::IdempotencyKey, super::openapi::IfMatch),
    responses(super::openapi::CommandAccepted, super::openapi::CommandProblems)
)]
pub async fn create_user(
    State(state): State<AppState>,
    target: RequestTarget,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, Problem> {
    execute(&state, &headers, &target, body, |body, ids| {
        let command: CreateUser = body.parse()?;
        decide::create_user(command, ids, Errors::default()).map(Decided::One).map_err(Problem::validation)
    })
    .await
}
