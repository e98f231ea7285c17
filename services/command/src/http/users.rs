//! `POST /users`: create a user.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use eventline_events::{Envelope, LogPosition};
use eventline_runtime::problem::{ApiJson, Problem};
use serde::Serialize;
use uuid::Uuid;

use super::{AppState, accepted, append};
use crate::decide::{self, CreateUser};

pub fn router() -> Router<AppState> {
    Router::new().route("/users", post(create_user))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserAccepted {
    user_id: Uuid,
    event_id: Uuid,
    position: LogPosition,
}

async fn create_user(
    State(state): State<AppState>,
    ApiJson(command): ApiJson<CreateUser>,
) -> Result<Response, Problem> {
    let event = decide::create_user(command).map_err(Problem::validation)?;
    let envelope = Envelope::new(event);
    let eventline_events::Event::UserCreated(user) = &envelope.event else {
        return Err(Problem::internal());
    };
    let user_id = user.user_id;
    let position = append(&state.log, &envelope).await?;
    tracing::info!(%user_id, event_id = %envelope.event_id, partition = position.partition, offset = position.offset, "User created");
    Ok(accepted(
        UserAccepted {
            user_id,
            event_id: envelope.event_id,
            position,
        },
        [position],
    ))
}
