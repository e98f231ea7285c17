//! Dead letters in the console: grouped by error kind, event type and age; one opened with its
//! error, trace, position and headers (the payload only for an operator); and redrive or discard
//! of one entry, a selection or everything matching a filter.
//!
//! Guards, enforced by the server: an action names its selection explicitly (ids, a filter, or
//! `all`); a dry run answers how many entries it would touch and the confirmation to type; acting
//! on more than one entry needs that confirmation (`redrive 380`), and the count must still be
//! the same when it runs (otherwise a 409 asks for a new dry run); a discard needs a reason. A
//! redrive is [`dlq::redrive`], the code path the CLI uses.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use eventline_events::HEADER_EVENT_TYPE;
use eventline_runtime::problem::{Problem, ProblemType, types};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ConsoleState;
use super::access::Caller;
use super::audit;
use crate::dlq::{self, DeadLetter, Redriven};

pub const CONFIRMATION_REQUIRED: ProblemType =
    ProblemType::new(StatusCode::CONFLICT, "console-confirmation-required", "Confirmation required");

/// Entries listed at most in one answer (the groups count them all).
const LISTED: i64 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Only entries with this error code (e.g. `undecodable-payload`).
    error_code: Option<String>,
    /// Only entries of this event type (their `event-type` header).
    event_type: Option<String>,
}

/// The dead letters, grouped and listed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetters {
    /// Entries matching the filter.
    pub total: i64,
    pub groups: Vec<Group>,
    /// The oldest matching entries (at most 200).
    pub entries: Vec<Summary>,
}

/// Entries of one error code and event type, by age.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub error_code: String,
    /// Absent when the message had no `event-type` header.
    pub event_type: Option<String>,
    pub count: i64,
    pub last_hour: i64,
    pub last_day: i64,
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
    pub error_code: String,
    pub error: String,
    pub event_type: Option<String>,
    pub attempts: i32,
    pub dead_at: DateTime<Utc>,
    pub trace_id: Option<String>,
}

/// One dead letter opened.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(flatten)]
    pub summary: Summary,
    pub headers: std::collections::BTreeMap<String, String>,
    pub key: Option<String>,
    /// The message as text; absent for the viewer role (`payloadMasked`).
    pub payload: Option<String>,
    pub payload_masked: bool,
    /// The trace in Jaeger's API, when the message carried one.
    pub trace_url: Option<String>,
}

/// Which entries an action is for: ids, a filter, or `all` — never nothing by accident.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selection {
    pub ids: Option<Vec<i64>>,
    pub error_code: Option<String>,
    pub event_type: Option<String>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionRequest {
    pub selection: Selection,
    /// Count what would be touched, and change nothing. Defaults to true.
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// For more than one entry: the confirmation the dry run answered, typed (`redrive 3`).
    pub confirm: Option<String>,
    /// Why (required to discard).
    pub reason: Option<String>,
}

/// Actions default to a dry run.
pub(super) fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionAnswer {
    pub action: String,
    pub dry_run: bool,
    /// Entries the selection matches (now).
    pub matching: usize,
    /// What to send as `confirm` to act on them (absent when one entry needs none).
    pub confirmation: Option<String>,
    /// What became of each entry (absent for a dry run).
    #[schema(value_type = Option<Vec<Object>>)]
    pub outcomes: Option<Vec<serde_json::Value>>,
}

/// List dead letters, grouped
#[utoipa::path(get, path = "/console/api/dead-letters", tag = "dead letters", params(Filter),
    responses((status = 200, body = DeadLetters), (status = 401, description = "Not signed in")))]
pub async fn list(
    _caller: Caller,
    State(state): State<ConsoleState>,
    Query(filter): Query<Filter>,
) -> Result<Json<DeadLetters>, Problem> {
    let pool = state.writing.current().pool.clone();
    let topic = &state.kafka.topic;
    let groups: Vec<Group> = sqlx::query_as(
        "SELECT error_code, headers->>$2 AS event_type, count(*) AS count,
                count(*) FILTER (WHERE dead_at > now() - interval '1 hour') AS last_hour,
                count(*) FILTER (WHERE dead_at > now() - interval '1 day') AS last_day,
                min(dead_at) AS oldest, max(dead_at) AS newest
         FROM dead_letters
         WHERE topic = $1 AND ($3::text IS NULL OR error_code = $3) AND ($4::text IS NULL OR headers->>$2 = $4)
         GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2",
    )
    .bind(topic)
    .bind(HEADER_EVENT_TYPE)
    .bind(&filter.error_code)
    .bind(&filter.event_type)
    .fetch_all(&pool)
    .await
    .map_err(|e| super::cannot_read("The dead letters", e))?;
    let selection =
        Selection { error_code: filter.error_code, event_type: filter.event_type, ..Selection::default() };
    let entries = matching(&state, &selection, Some(LISTED)).await?;
    Ok(Json(DeadLetters {
        total: groups.iter().map(|g| g.count).sum(),
        groups,
        entries: entries.iter().map(summary).collect(),
    }))
}

/// Open one dead letter
#[utoipa::path(get, path = "/console/api/dead-letters/{id}", tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = Detail), (status = 404, description = "No such dead letter")))]
pub async fn show(
    caller: Caller,
    State(state): State<ConsoleState>,
    Path(id): Path<i64>,
) -> Result<Json<Detail>, Problem> {
    let pool = state.writing.current().pool.clone();
    let entry = dlq::get(&pool, id)
        .await
        .map_err(|e| super::cannot_read("The dead letters", e))?
        .ok_or_else(|| Problem::not_found(format!("No dead letter {id}.")))?;
    let shown = entry.shown();
    let operator = caller.principal.role == super::access::Role::Operator;
    let jaeger = state.jaeger_url.trim_end_matches('/');
    Ok(Json(Detail {
        summary: summary(&entry),
        headers: entry.headers.0.clone(),
        key: shown.key,
        payload: operator.then_some(shown.payload),
        payload_masked: !operator,
        trace_url: entry.trace_id.as_ref().map(|t| format!("{jaeger}/api/v3/traces/{t}")),
    }))
}

/// Redrive dead letters (dry run first)
#[utoipa::path(post, path = "/console/api/dead-letters/redrive", tag = "dead letters", request_body = ActionRequest,
    responses((status = 200, body = ActionAnswer), (status = 403, description = "Not an operator, or read-only"),
              (status = 409, description = "Confirmation missing or stale")))]
pub async fn redrive(
    caller: Caller,
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Json(request): Json<ActionRequest>,
) -> Result<Json<ActionAnswer>, Problem> {
    act(caller, state, headers, request, "redrive").await
}

/// Discard dead letters (dry run first; a reason is required)
#[utoipa::path(post, path = "/console/api/dead-letters/discard", tag = "dead letters", request_body = ActionRequest,
    responses((status = 200, body = ActionAnswer), (status = 403, description = "Not an operator, or read-only"),
              (status = 409, description = "Confirmation missing or stale")))]
pub async fn discard(
    caller: Caller,
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Json(request): Json<ActionRequest>,
) -> Result<Json<ActionAnswer>, Problem> {
    act(caller, state, headers, request, "discard").await
}

async fn act(
    caller: Caller,
    state: ConsoleState,
    headers: HeaderMap,
    request: ActionRequest,
    action: &'static str,
) -> Result<Json<ActionAnswer>, Problem> {
    // A dry run changes nothing, so a viewer may count too; acting takes the operator role.
    if !request.dry_run {
        state.access.may_act(&caller, &headers, &format!("{action} dead letters"))?;
    }
    let selection = &request.selection;
    let named = selection.ids.as_ref().is_some_and(|ids| !ids.is_empty())
        || selection.error_code.is_some()
        || selection.event_type.is_some();
    if !named && !selection.all {
        return Err(Problem::new(
            types::BAD_REQUEST,
            "Name the entries: `ids`, a filter (`errorCode`, `eventType`), or `all: true`.",
        ));
    }
    let reason = request.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if action == "discard" && !request.dry_run && reason.is_none_or(|r| r.len() > 500) {
        return Err(Problem::new(
            types::BAD_REQUEST,
            "A discard needs a `reason` (1 to 500 characters), kept in the audit.",
        ));
    }
    let entries = matching(&state, selection, None).await?;
    let confirmation = (entries.len() > 1).then(|| format!("{action} {}", entries.len()));
    if request.dry_run {
        return Ok(Json(ActionAnswer {
            action: action.to_owned(),
            dry_run: true,
            matching: entries.len(),
            confirmation,
            outcomes: None,
        }));
    }
    if let Some(expected) = &confirmation
        && request.confirm.as_deref().map(str::trim) != Some(expected.as_str())
    {
        return Err(Problem::new(
            CONFIRMATION_REQUIRED,
            format!(
                "The selection matches {} entries now: send `confirm: \"{expected}\"` after a dry run shows that count.",
                entries.len()
            ),
        ));
    }
    let outcomes = match action {
        "redrive" => redrive_each(&state, &entries).await,
        _ => discard_each(&state, &entries).await,
    };
    state.status.mirror_dirty.store(true, Ordering::Relaxed);
    let succeeded = outcomes.is_ok();
    let result = match &outcomes {
        Ok(outcomes) => serde_json::json!({ "matching": entries.len(), "outcomes": outcomes }),
        Err(error) => serde_json::json!({ "matching": entries.len(), "error": error }),
    };
    let parameters =
        serde_json::json!({ "selection": selection, "confirm": request.confirm, "reason": reason });
    audit::record(&state.public, &caller, &format!("dead-letters.{action}"), &parameters, succeeded, &result)
        .await;
    let outcomes = outcomes.map_err(|error| {
        Problem::new(
            types::DATABASE_UNAVAILABLE,
            format!("The {action} stopped: {error}. Entries done before it stay done."),
        )
        .retry_after(1)
    })?;
    Ok(Json(ActionAnswer {
        action: action.to_owned(),
        dry_run: false,
        matching: entries.len(),
        confirmation: None,
        outcomes: Some(outcomes),
    }))
}

async fn redrive_each(
    state: &ConsoleState,
    entries: &[DeadLetter],
) -> Result<Vec<serde_json::Value>, String> {
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        let outcome = dlq::redrive(&state.public, entry).await.map_err(|e| e.to_string())?;
        let stop = matches!(outcome, Redriven::NotLive { .. });
        outcomes.push(serde_json::to_value(&outcome).map_err(|e| e.to_string())?);
        if stop {
            // The live version changed under the redrive: the rest waits for a new run.
            break;
        }
    }
    Ok(outcomes)
}

async fn discard_each(
    state: &ConsoleState,
    entries: &[DeadLetter],
) -> Result<Vec<serde_json::Value>, String> {
    let pool = state.writing.current().pool.clone();
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        let gone = dlq::purge(&pool, entry.id).await.map_err(|e| e.to_string())?;
        outcomes.push(
            serde_json::json!({ "id": entry.id, "outcome": if gone { "discarded" } else { "alreadyGone" } }),
        );
    }
    Ok(outcomes)
}

/// The entries of the topic that `selection` names, oldest first (at most `limit`).
async fn matching(
    state: &ConsoleState,
    selection: &Selection,
    limit: Option<i64>,
) -> Result<Vec<DeadLetter>, Problem> {
    let pool = state.writing.current().pool.clone();
    let ids = selection.ids.clone().filter(|ids| !ids.is_empty());
    dlq::select(
        &pool,
        &state.kafka.topic,
        ids.as_deref(),
        selection.error_code.as_deref(),
        selection.event_type.as_deref(),
        limit,
    )
    .await
    .map_err(|e| super::cannot_read("The dead letters", e))
}

fn summary(entry: &DeadLetter) -> Summary {
    Summary {
        id: entry.id,
        partition: entry.partition,
        offset: entry.offset,
        error_code: entry.error_code.clone(),
        error: entry.error.clone(),
        event_type: entry.headers.0.get(HEADER_EVENT_TYPE).cloned(),
        attempts: entry.attempts,
        dead_at: entry.dead_at,
        trace_id: entry.trace_id.clone(),
    }
}
