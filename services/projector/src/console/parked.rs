//! Parked keys in the console: grouped by error, one opened with its events (payloads only for an
//! operator), and redrive or discard of one key behind a dry run and a typed confirmation
//! (`redrive <key>`, `discard <key>`); a discard needs a reason. Both are [`crate::parked`]'s,
//! the code the CLI runs, and both are audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use eventline_runtime::problem::{Problem, types};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ConsoleState;
use super::access::Caller;
use super::audit;
use super::dead_letters::CONFIRMATION_REQUIRED;
use crate::parked::{self, ErrorGroup, ParkedKey, Redriven};

/// Keys listed at most in one answer (the groups count them all).
const LISTED: i64 = 200;

/// The parked keys, grouped by error and listed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    pub groups: Vec<ErrorGroup>,
    /// The oldest parked keys (at most 200).
    pub keys: Vec<ParkedKey>,
}

/// One parked key opened.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkedDetail {
    #[serde(flatten)]
    pub key: ParkedKey,
    pub events: Vec<ParkedEventShown>,
    /// Whether the payloads are withheld (the viewer role).
    pub payload_masked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkedEventShown {
    #[serde(flatten)]
    pub event: parked::ParkedEvent,
    /// The event as text; absent for the viewer role.
    pub payload: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyAction {
    /// The parked key (its text, as listed).
    pub key: String,
    /// Try and change nothing (a redrive applies and rolls back). Defaults to true.
    #[serde(default = "super::dead_letters::yes")]
    pub dry_run: bool,
    /// The confirmation the dry run answered, typed (`redrive <key>`).
    pub confirm: Option<String>,
    /// Why (required to discard).
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyAnswer {
    pub action: String,
    pub dry_run: bool,
    /// Events of the key parked now.
    pub events: usize,
    /// What to send as `confirm` to act.
    pub confirmation: String,
    /// What the redrive did or, in a dry run, would do (absent for a discard's dry run).
    pub outcome: Option<Redriven>,
}

/// List parked keys, grouped by error
#[utoipa::path(get, path = "/console/api/parked", tag = "parked keys",
    responses((status = 200, body = Parked), (status = 401, description = "Not signed in")))]
pub async fn list(_caller: Caller, State(state): State<ConsoleState>) -> Result<Json<Parked>, Problem> {
    let pool = state.writing.current().pool.clone();
    let topic = &state.kafka.topic;
    let groups = parked::groups(&pool, topic).await.map_err(|e| super::cannot_read("The parked keys", e))?;
    let keys =
        parked::list(&pool, topic, LISTED).await.map_err(|e| super::cannot_read("The parked keys", e))?;
    Ok(Json(Parked { groups, keys }))
}

/// Open one parked key with its events
#[utoipa::path(get, path = "/console/api/parked/{key}", tag = "parked keys",
    params(("key" = String, Path, description = "The parked key")),
    responses((status = 200, body = ParkedDetail), (status = 404, description = "The key is not parked")))]
pub async fn show(
    caller: Caller,
    State(state): State<ConsoleState>,
    Path(key): Path<String>,
) -> Result<Json<ParkedDetail>, Problem> {
    let pool = state.writing.current().pool.clone();
    let (found, events) = parked::get(&pool, &state.kafka.topic, key.as_bytes())
        .await
        .map_err(|e| super::cannot_read("The parked keys", e))?
        .ok_or_else(|| Problem::not_found(format!("Key {key:?} is not parked.")))?;
    let operator = caller.principal.role == super::access::Role::Operator;
    let events = events
        .into_iter()
        .map(|event| {
            let payload = operator.then(|| event.payload_text());
            ParkedEventShown { event, payload }
        })
        .collect();
    Ok(Json(ParkedDetail { key: found, events, payload_masked: !operator }))
}

/// Redrive a parked key (dry run first)
#[utoipa::path(post, path = "/console/api/parked/redrive", tag = "parked keys", request_body = KeyAction,
    responses((status = 200, body = KeyAnswer), (status = 403, description = "Not an operator, or read-only"),
              (status = 404, description = "The key is not parked"),
              (status = 409, description = "Confirmation missing")))]
pub async fn redrive(
    caller: Caller,
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Json(request): Json<KeyAction>,
) -> Result<Json<KeyAnswer>, Problem> {
    act(caller, state, headers, request, "redrive").await
}

/// Discard a parked key's events (dry run first; a reason is required)
#[utoipa::path(post, path = "/console/api/parked/discard", tag = "parked keys", request_body = KeyAction,
    responses((status = 200, body = KeyAnswer), (status = 403, description = "Not an operator, or read-only"),
              (status = 404, description = "The key is not parked"),
              (status = 409, description = "Confirmation missing")))]
pub async fn discard(
    caller: Caller,
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Json(request): Json<KeyAction>,
) -> Result<Json<KeyAnswer>, Problem> {
    act(caller, state, headers, request, "discard").await
}

async fn act(
    caller: Caller,
    state: ConsoleState,
    headers: HeaderMap,
    request: KeyAction,
    action: &'static str,
) -> Result<Json<KeyAnswer>, Problem> {
    if !request.dry_run {
        state.access.may_act(&caller, &headers, &format!("{action} parked keys"))?;
    }
    let reason = request.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if action == "discard" && !request.dry_run && reason.is_none_or(|r| r.len() > 500) {
        return Err(Problem::new(
            types::BAD_REQUEST,
            "A discard needs a `reason` (1 to 500 characters), kept in the audit.",
        ));
    }
    let target = state.writing.current();
    let topic = &state.kafka.topic;
    let key = request.key.as_bytes();
    let (_, events) = parked::get(&target.pool, topic, key)
        .await
        .map_err(|e| super::cannot_read("The parked keys", e))?
        .ok_or_else(|| Problem::not_found(format!("Key {:?} is not parked.", request.key)))?;
    let confirmation = format!("{action} {}", request.key);
    let unavailable = |error: sqlx::Error| {
        Problem::new(types::DATABASE_UNAVAILABLE, format!("The {action} stopped: {error}. Nothing changed."))
            .retry_after(1)
    };
    if !request.dry_run && request.confirm.as_deref().map(str::trim) != Some(confirmation.as_str()) {
        return Err(Problem::new(
            CONFIRMATION_REQUIRED,
            format!("Send `confirm: \"{confirmation}\"` after a dry run shows what it does."),
        ));
    }
    let outcome = match action {
        "redrive" => Some(
            parked::redrive(&target.pool, target.version, topic, key, request.dry_run)
                .await
                .map_err(unavailable)?,
        ),
        _ if request.dry_run => None,
        _ => {
            let discarded = parked::discard(&target.pool, topic, key).await.map_err(unavailable)?;
            (discarded.is_none()).then_some(Redriven::NotParked)
        }
    };
    if !request.dry_run {
        let succeeded = outcome.as_ref().is_none_or(|o| matches!(o, Redriven::Applied { .. }));
        let offsets: Vec<String> =
            events.iter().map(|e| format!("{}:{} {}", e.partition, e.offset, e.event_id)).collect();
        let parameters =
            serde_json::json!({ "key": request.key, "confirm": request.confirm, "reason": reason });
        let result = serde_json::json!({ "events": offsets, "outcome": outcome });
        audit::record(&state.public, &caller, &format!("parked.{action}"), &parameters, succeeded, &result)
            .await;
    }
    Ok(Json(KeyAnswer {
        action: action.to_owned(),
        dry_run: request.dry_run,
        events: events.len(),
        confirmation,
        outcome,
    }))
}
