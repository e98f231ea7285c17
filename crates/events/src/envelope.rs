//! The envelope every event travels in, and its encoding as a Kafka message value.
//!
//! ```json
//! {"eventId": "…", "eventType": "UserCreated", "schemaVersion": 1,
//!  "occurredAt": "2026-11-23T10:00:00.123456Z", "aggregateId": "…", "data": {…}}
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::types::Event;
use crate::upcast;

/// Kafka header names carried by every event message.
pub const HEADER_EVENT_TYPE: &str = "event-type";
pub const HEADER_EVENT_ID: &str = "event-id";
pub const HEADER_SCHEMA_VERSION: &str = "schema-version";
pub const HEADER_CONTENT_TYPE: &str = "content-type";
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The four kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    UserCreated,
    OrderPlaced,
    PaymentSettled,
    InventoryAdjusted,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::UserCreated,
        EventType::OrderPlaced,
        EventType::PaymentSettled,
        EventType::InventoryAdjusted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserCreated => "UserCreated",
            EventType::OrderPlaced => "OrderPlaced",
            EventType::PaymentSettled => "PaymentSettled",
            EventType::InventoryAdjusted => "InventoryAdjusted",
        }
    }

    /// The schema version new events of this type are written with. Older versions are upcast
    /// on read (see `upcast`).
    pub fn current_version(self) -> u32 {
        match self {
            EventType::UserCreated => 1,
            EventType::OrderPlaced => 1,
            EventType::PaymentSettled => 1,
            EventType::InventoryAdjusted => 1,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| DecodeError::UnknownEventType(s.to_owned()))
    }
}

/// Why a message could not be decoded into an event. Every variant is permanent: the same bytes
/// will never decode, so the projector dead-letters them.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("payload is not an event envelope: {0}")]
    InvalidEnvelope(serde_json::Error),
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("{event_type} schema version {version} is not supported (known: 1..={current})")]
    UnsupportedSchemaVersion { event_type: EventType, version: u32, current: u32 },
    #[error("{event_type} data is invalid: {reason}")]
    InvalidData { event_type: EventType, reason: String },
    #[error("aggregateId {envelope:?} does not match the event's own id {data:?}")]
    AggregateMismatch { envelope: String, data: String },
}

impl DecodeError {
    /// A short stable code for metrics and the dead-letter queue.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::NotJson(_) => "not_json",
            DecodeError::InvalidEnvelope(_) => "invalid_envelope",
            DecodeError::UnknownEventType(_) => "unknown_event_type",
            DecodeError::UnsupportedSchemaVersion { .. } => "unsupported_schema_version",
            DecodeError::InvalidData { .. } => "invalid_data",
            DecodeError::AggregateMismatch { .. } => "aggregate_mismatch",
        }
    }
}

/// An event with its identity and time: what is appended to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub event: Event,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a, T: Serialize> {
    event_id: Uuid,
    event_type: &'static str,
    schema_version: u32,
    #[serde(serialize_with = "serialize_rfc3339")]
    occurred_at: DateTime<Utc>,
    aggregate_id: String,
    data: &'a T,
}

/// Serializes a time as RFC 3339 in UTC with `Z`, and only as many fraction digits as needed
/// (0, 3 or 6): the one timestamp format of events and APIs.
pub fn serialize_rfc3339<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    occurred_at: DateTime<Utc>,
    aggregate_id: String,
    data: Value,
}

impl Envelope {
    /// A new event with a fresh time-ordered id (UUIDv7), stamped now.
    pub fn new(event: Event) -> Self {
        Self::at(event, Uuid::now_v7(), Utc::now())
    }

    /// An event with a given id and time. The time is cut to microseconds, the precision of the
    /// read model, so that a replay reproduces exactly the same rows.
    pub fn at(event: Event, event_id: Uuid, occurred_at: DateTime<Utc>) -> Self {
        Envelope { event_id, occurred_at: occurred_at.trunc_subsecs(6), event }
    }

    pub fn event_type(&self) -> EventType {
        self.event.event_type()
    }

    pub fn aggregate_id(&self) -> String {
        self.event.aggregate_id()
    }

    /// The JSON message value.
    pub fn encode(&self) -> Vec<u8> {
        fn wire<T: Serialize>(envelope: &Envelope, data: &T) -> Vec<u8> {
            let event_type = envelope.event_type();
            let out = WireOut {
                event_id: envelope.event_id,
                event_type: event_type.as_str(),
                schema_version: event_type.current_version(),
                occurred_at: envelope.occurred_at,
                aggregate_id: envelope.aggregate_id(),
                data,
            };
            // Serializing these plain structs into a Vec cannot fail: no maps with non-string
            // keys, no I/O.
            serde_json::to_vec(&out).unwrap_or_default()
        }
        match &self.event {
            Event::UserCreated(e) => wire(self, e),
            Event::OrderPlaced(e) => wire(self, e),
            Event::PaymentSettled(e) => wire(self, e),
            Event::InventoryAdjusted(e) => wire(self, e),
        }
    }

    /// Decodes a message value, upcasting older schema versions to the current one.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireIn = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() { DecodeError::InvalidEnvelope(e) } else { DecodeError::NotJson(e) }
        })?;
        let event_type: EventType = wire.event_type.parse()?;
        let data = upcast::to_current(event_type, wire.schema_version, wire.data)?;
        let event = Event::from_data(event_type, data)?;
        event.check_invariants().map_err(|reason| DecodeError::InvalidData { event_type, reason })?;
        if event.aggregate_id() != wire.aggregate_id {
            return Err(DecodeError::AggregateMismatch {
                envelope: wire.aggregate_id,
                data: event.aggregate_id(),
            });
        }
        Ok(Envelope { event_id: wire.event_id, occurred_at: wire.occurred_at, event })
    }
}
