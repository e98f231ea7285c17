//! What an accepted command answers: `202` with where its events sit in the log and the
//! Consistency-Token to read them with; the same answer replayed for a repeated idempotency key.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventline_events::{Envelope, Event, LogPosition};
use eventline_runtime::http::CONSISTENCY_TOKEN;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::headers::IDEMPOTENT_REPLAYED;
use crate::idempotency::StoredResponse;

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
    pub(super) fn of(envelope: &Envelope, position: LogPosition) -> Self {
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

pub(super) fn respond(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (status, axum::Json(stored.body)).into_response();
    if let Some(value) = stored.consistency_token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(CONSISTENCY_TOKEN, value);
    }
    response
}

pub(super) fn replay(stored: StoredResponse) -> Response {
    let mut response = respond(stored);
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}
