//! The HTTP API of the command service: one module per resource, each with its `router()`, and
//! the one pipeline every command goes through (`execute`).

mod batch;
mod inventory;
mod links;
pub mod openapi;
mod orders;
mod payments;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use eventline_events::{ConsistencyToken, Envelope, Event, LogPosition};
use eventline_runtime::http::{CONSISTENCY_TOKEN, Check, Readiness, api_service, is_empty_field};
use eventline_runtime::problem::{FieldError, JsonBody, Problem, ProblemSlug};

use crate::problems;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::access::{self, Access};
use crate::decide::IdGen;
use crate::idempotency::{self, Claim, Fingerprint, IdempotencyStore, StoredResponse};
use crate::log::{AppendError, EventLog, PartialAppend};
use crate::state::{AggregateRef, Outcome, Rejection, WriteModel};

/// Header naming a request's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a response replayed for a repeated idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Largest body of a single command.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Largest body of a batch.
pub const BATCH_BODY_LIMIT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub log: EventLog,
    /// The decision state every command is decided against.
    pub write_model: WriteModel,
    pub idempotency: Arc<IdempotencyStore>,
    /// Tokens and rate limits, checked before any command route.
    pub access: Arc<Access>,
}

pub fn router(state: AppState) -> Router {
    let checks = state.clone();
    let readiness = Readiness::new(move || {
        let state = checks.clone();
        async move {
            // Redis is not a readiness condition: it only serves idempotency keys, and requests
            // without one work without it.
            vec![
                Check { name: "kafka", ok: state.log.is_reachable().await },
                Check { name: "decision-state", ok: state.write_model.is_ready() },
            ]
        }
    });
    let (api, document) = api_routes().split_for_parts();
    let document = openapi::finish(document);
    let access = state.access.clone();
    let api = api
        .with_state(state)
        .layer(middleware::from_fn_with_state(access, access::guard))
        .layer(middleware::from_fn(count_rejections));
    api_service(api, &document, readiness)
}

/// The command routes with their OpenAPI descriptions; the router serves them and the document
/// describes them, so the two cannot drift apart.
fn api_routes() -> OpenApiRouter<AppState> {
    let single = OpenApiRouter::new()
        .merge(users::router())
        .merge(orders::router())
        .merge(payments::router())
        .merge(inventory::router())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    let batch = batch::router().layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT_BYTES));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).merge(single).merge(batch)
}

/// The OpenAPI document of the command API.
pub fn openapi_document() -> serde_json::Value {
    openapi::finish(api_routes().into_openapi())
}

/// Counts every refused command by route and problem type (accepted ones are counted in
/// `execute`, by event type).
async fn count_rejections(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let response = next.run(request).await;
    if let Some(ProblemSlug(reason)) = response.extensions().get::<ProblemSlug>() {
        crate::metrics::rejected(route, reason, response.status().as_u16());
    }
    response
}

/// What the client learns about one accepted command.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The event type, in batch results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Order total computed by the server, a decimal string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The id of the appended event.
    pub event_id: Uuid,
    /// Where the event sits in the log.
    #[schema(value_type = Position)]
    pub position: LogPosition,
}

/// Mirror of `LogPosition` for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Position {
    partition: i32,
    offset: i64,
}

impl Accepted {
    fn of(envelope: &Envelope, position: LogPosition) -> Self {
        let mut accepted = Accepted {
            event_type: None,
            user_id: None,
            order_id: None,
            payment_id: None,
            sku: None,
            total_amount: None,
            currency: None,
            event_id: envelope.event_id,
            position,
        };
        match &envelope.event {
            Event::UserCreated(e) => accepted.user_id = Some(e.user_id),
            Event::OrderPlaced(e) => {
                accepted.order_id = Some(e.order_id);
                accepted.user_id = Some(e.user_id);
                accepted.total_amount = Some(e.total_amount.to_string());
                accepted.currency = Some(e.currency.to_string());
            }
            Event::PaymentSettled(e) => {
                accepted.payment_id = Some(e.payment_id);
                accepted.order_id = Some(e.order_id);
            }
            Event::InventoryAdjusted(e) => accepted.sku = Some(e.sku.clone()),
        }
        accepted
    }
}

/// Body of a batch's `202`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    /// One result per command, in the order of the request.
    pub results: Vec<Accepted>,
}

/// What a handler decided.
pub enum Decided {
    One(Event),
    Batch(Vec<Event>),
}

/// The method and path of a request as the client sent it (`POST /orders/0190…/payments`): what an
/// idempotency key's fingerprint covers besides the body, so the same key on another route or
/// another order is a different request. Taken from the request, never typed beside the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestTarget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(RequestTarget(format!("{} {}", parts.method, parts.uri.path())))
    }
}

/// The pipeline of every command: idempotency key, decision, durable append, answer.
///
/// The decision runs first (invalid commands are refused without touching Redis or Kafka); ids
/// come from the idempotency key when there is one, so a retried request decides the same events.
pub async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    target: &RequestTarget,
    body: JsonBody,
    decide: impl FnOnce(JsonBody, &mut IdGen) -> Result<Decided, Problem>,
) -> Result<Response, Problem> {
    let key = idempotency_key(headers)?;
    let fingerprint = key.as_deref().map(|k| Fingerprint::of(k, &target.0, &body.0));
    let mut ids = fingerprint.as_ref().map_or_else(IdGen::random, |f| IdGen::derived(f.seed()));
    let decided = decide(body, &mut ids)?;
    let (events, batch) = match decided {
        Decided::One(event) => (vec![event], false),
        Decided::Batch(events) => (events, true),
    };
    let expect = match (if_match(headers)?, events.as_slice()) {
        (None, _) => None,
        (Some(version), [one]) if !batch => Some((aggregate_of(one), version)),
        (Some(_), _) => {
            return Err(Problem::new(
                problems::INVALID_IF_MATCH,
                "If-Match applies to a command on one aggregate, not to a batch.",
            ));
        }
    };

    if let (Some(key), Some(fingerprint)) = (&key, &fingerprint) {
        match state.idempotency.claim(key, fingerprint).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Replay(stored)) => return Ok(replay(stored)),
            Ok(Claim::Conflict) => return Err(key_reused()),
            Ok(Claim::InProgress) => return Err(key_in_progress()),
            Err(error) => {
                tracing::warn!(%error, "Idempotency store unavailable");
                return Err(Problem::new(
                    problems::IDEMPOTENCY_UNAVAILABLE,
                    "Requests with an Idempotency-Key cannot be handled now; retry later, or send the request without one.",
                )
                .retry_after(1));
            }
        }
    }

    let occurred_at = Utc::now();
    let envelopes: Vec<Envelope> =
        events.into_iter().map(|e| Envelope::at(e, ids.next_id(), occurred_at)).collect();

    let started = std::time::Instant::now();
    let outcome = state
        .write_model
        .decider
        .decide(crate::state::Request {
            envelopes: envelopes.clone(),
            expect,
            span: tracing::Span::current(),
        })
        .await;
    crate::metrics::decided(started.elapsed().as_secs_f64());
    let positions = match outcome {
        Outcome::Accepted(positions) => positions,
        refused => {
            release(state, key.as_deref()).await;
            return Err(refusal_problem(refused, batch, key.is_some()));
        }
    };

    for envelope in &envelopes {
        crate::metrics::accepted(envelope.event_type().as_str());
    }
    let token: ConsistencyToken = positions.iter().copied().collect();
    let results: Vec<Accepted> = envelopes
        .iter()
        .zip(&positions)
        .map(|(envelope, position)| Accepted {
            event_type: batch.then(|| envelope.event_type().as_str().to_owned()),
            ..Accepted::of(envelope, *position)
        })
        .collect();
    let body = if batch {
        serde_json::to_value(BatchAccepted { results })
    } else {
        serde_json::to_value(&results[0])
    }
    .map_err(|error| {
        tracing::error!(%error, "Serializing an accepted response failed");
        Problem::internal()
    })?;
    let stored = StoredResponse { status: 202, consistency_token: Some(token.to_string()), body };

    if let (Some(key), Some(fingerprint)) = (&key, &fingerprint) {
        // The events are in the log whatever happens here; a retry that finds no stored response
        // re-appends the same event ids, which the projector ignores.
        if let Err(error) = state.idempotency.complete(key, fingerprint, stored.clone()).await {
            tracing::warn!(%error, "Storing an idempotent response failed");
        }
    }
    Ok(respond(stored))
}

async fn release(state: &AppState, key: Option<&str>) {
    if let Some(key) = key {
        state.idempotency.release(key).await;
    }
}

/// The aggregate an `If-Match` on a single command is about.
fn aggregate_of(event: &Event) -> AggregateRef {
    match event {
        Event::UserCreated(e) => AggregateRef::User(e.user_id),
        Event::OrderPlaced(e) => AggregateRef::Order(e.order_id),
        Event::PaymentSettled(e) => AggregateRef::Order(e.order_id),
        Event::InventoryAdjusted(e) => AggregateRef::Sku(e.sku.clone()),
    }
}

/// `If-Match: "<version>"`, the version the client last read (the query API's ETag): 1 to 18
/// digits in double quotes, as the document's pattern says. An empty value is an empty list of
/// entity tags (RFC 9110, 5.6.1), the same as no header.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let mut values = headers.get_all(axum::http::header::IF_MATCH).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let single = values.next().is_none();
    if single && is_empty_field(value) {
        return Ok(None);
    }
    let digits = |v: &str| !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit());
    let version = value
        .to_str()
        .ok()
        .filter(|_| single)
        .and_then(|v| v.trim().strip_prefix('"')?.strip_suffix('"').filter(|v| digits(v)))
        .and_then(|v| v.parse::<i64>().ok());
    match version {
        Some(version) => Ok(Some(version)),
        None => Err(Problem::new(
            problems::INVALID_IF_MATCH,
            "If-Match is one version in double quotes, as the query API's ETag gives it, e.g. \"3\".",
        )),
    }
}

/// The answer to a command that was not accepted.
/// `keyed`: the request carried an Idempotency-Key, so the answer may tell the client to retry with it.
fn refusal_problem(outcome: Outcome, batch: bool, keyed: bool) -> Problem {
    match outcome {
        Outcome::Accepted(_) => Problem::internal(),
        Outcome::Rejected(rejections) => rejected(rejections, batch),
        Outcome::NotAppended(partial) => append_problem(partial, batch, keyed),
        Outcome::StateUnavailable(cause) => {
            tracing::warn!(%cause, "Command not decided: decision state unavailable");
            Problem::new(
                problems::DECISION_STATE_UNAVAILABLE,
                "The command could not be checked against the current state (PostgreSQL is unavailable), so \
                 nothing was decided or appended. Retry later.",
            )
            .retry_after(1)
        }
        Outcome::NotReady => Problem::new(
            problems::DECISION_STATE_REBUILDING,
            "The command service is folding the log into its decision state and decides nothing until it \
             is complete. Retry later.",
        )
        .retry_after(2),
    }
}

/// Broken rules: a single command's own problem, or for a batch one problem listing every failing
/// command by index (nothing of the batch was appended).
fn rejected(rejections: Vec<(usize, Rejection)>, batch: bool) -> Problem {
    if !batch && let Some((_, rejection)) = rejections.first() {
        return rejection.problem();
    }
    let status = match rejections.as_slice() {
        [(_, first), rest @ ..] if rest.iter().all(|(_, r)| r.status() == first.status()) => first.status(),
        _ => problems::BATCH_REJECTED.status,
    };
    let detail = format!(
        "{} of the batch's commands break a rule, so none was appended; each is listed by index.",
        rejections.len()
    );
    Problem {
        errors: rejections
            .iter()
            .map(|(i, r)| FieldError::rule(format!("commands[{i}]"), r.slug(), r.detail()))
            .collect(),
        status: status.as_u16(),
        ..Problem::new(problems::BATCH_REJECTED, detail)
    }
}

fn respond(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (status, axum::Json(stored.body)).into_response();
    if let Some(value) = stored.consistency_token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(CONSISTENCY_TOKEN, value);
    }
    response
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = respond(stored);
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    match value.to_str() {
        Ok(key) if idempotency::is_valid_key(key) => Ok(Some(key.to_owned())),
        _ => Err(Problem::new(
            problems::INVALID_IDEMPOTENCY_KEY,
            format!("An Idempotency-Key is 1 to {} visible ASCII characters.", idempotency::MAX_KEY_LEN),
        )),
    }
}

fn key_reused() -> Problem {
    Problem::new(
        problems::IDEMPOTENCY_KEY_REUSED,
        "This Idempotency-Key was used for a different request; use a new key for a new request.",
    )
}

fn key_in_progress() -> Problem {
    Problem::new(
        problems::IDEMPOTENCY_IN_PROGRESS,
        "A request with this Idempotency-Key is still being processed; retry shortly for its response.",
    )
    .retry_after(1)
}

/// Maps a failed append to a problem; never reports success for an event the broker did not
/// acknowledge.
///
/// The advice to retry with the same Idempotency-Key is given only to a request that sent one;
/// without a key a retry is a new request, and the client must check whether the first took effect.
fn append_problem(partial: PartialAppend, batch: bool, keyed: bool) -> Problem {
    let appended = partial.positions.iter().filter(|p| p.is_some()).count();
    match partial.error {
        AppendError::NotConfirmed(cause) => {
            tracing::warn!(%cause, appended, total = partial.positions.len(), "Decided, but the append is not confirmed");
            let advice = if keyed {
                "Retry with the same Idempotency-Key to get its confirmation."
            } else {
                "Read the resource back before retrying: a retry would be a new command."
            };
            let mut problem = Problem::new(
                problems::LOG_UNAVAILABLE,
                format!(
                    "The command was decided but the event log did not confirm the append; it stays pending and \
                     will be appended. {advice}"
                ),
            )
            .retry_after(1);
            if batch {
                problem.errors = not_appended(&partial.positions);
            }
            problem
        }
        AppendError::Unavailable(cause) => {
            tracing::warn!(error = %cause, appended, total = partial.positions.len(), "Append failed: event log unavailable");
            let detail = match (appended, keyed) {
                (0, true) => "The event log did not acknowledge the append in time, so the command is not confirmed; \
                     the broker may still have recorded it. Retry with the same Idempotency-Key: the retry carries \
                     the same event id, so the command takes effect once."
                    .to_owned(),
                (0, false) => "The event log did not acknowledge the append in time, so the command is not confirmed; \
                     the broker may still have recorded it. Read the resource back before retrying: a retry \
                     would be a new command."
                    .to_owned(),
                (_, true) => format!(
                    "The event log became unavailable: {appended} of {} events were appended, the others were not. \
                     Retry with the same Idempotency-Key to complete the batch without duplicates.",
                    partial.positions.len()
                ),
                (_, false) => format!(
                    "The event log became unavailable: {appended} of {} events were appended, the others were not \
                     (`errors` lists them). Resend only those.",
                    partial.positions.len()
                ),
            };
            let mut problem = Problem::new(problems::LOG_UNAVAILABLE, detail).retry_after(1);
            if batch {
                problem.errors = not_appended(&partial.positions);
            }
            problem
        }
        AppendError::Refused(cause) => {
            tracing::error!(error = %cause, "Append refused by the broker");
            Problem::internal()
        }
    }
}

fn not_appended(positions: &[Option<LogPosition>]) -> Vec<FieldError> {
    positions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| FieldError::new(format!("commands[{i}]"), "not appended"))
        .collect()
}
