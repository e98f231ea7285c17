//! The one pipeline every command goes through: idempotency key, decision against the log's
//! state, durable append, answer.

use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use eventline_events::{ConsistencyToken, Envelope, Event};
use eventline_runtime::problem::{JsonBody, Problem};

use super::answers::{self, Accepted, BatchAccepted};
use super::{AppState, headers, refusals};
use crate::decide::IdGen;
use crate::idempotency::{Claim, Fingerprint, StoredResponse};
use crate::state::{AggregateRef, Outcome};

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
    let key = headers::idempotency_key(headers)?;
    let fingerprint = key.as_deref().map(|k| Fingerprint::of(k, &target.0, &body.0));
    let mut ids = fingerprint.as_ref().map_or_else(IdGen::random, |f| IdGen::derived(f.seed()));
    let decided = decide(body, &mut ids)?;
    let (events, batch) = match decided {
        Decided::One(event) => (vec![event], false),
        Decided::Batch(events) => (events, true),
    };
    let expect = match (headers::if_match(headers)?, events.as_slice()) {
        (None, _) => None,
        (Some(version), [one]) if !batch => Some((aggregate_of(one), version)),
        (Some(_), _) => {
            return Err(refusals::if_match_on_a_batch());
        }
    };

    if let (Some(key), Some(fingerprint)) = (&key, &fingerprint) {
        match state.idempotency.claim(key, fingerprint).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Replay(stored)) => return Ok(answers::replay(stored)),
            Ok(Claim::Conflict) => return Err(refusals::key_reused()),
            Ok(Claim::InProgress) => return Err(refusals::key_in_progress()),
            Err(error) => {
                tracing::warn!(%error, "Idempotency store unavailable");
                return Err(refusals::idempotency_unavailable());
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
            return Err(refusals::refusal_problem(refused, batch, key.is_some()));
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
    Ok(answers::respond(stored))
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
