//! The event log as a published contract: JSON Schema of every payload, generated from the types
//! above (so the schema cannot drift from the decoder), and the AsyncAPI 3.0 document that
//! describes the topic, its messages, keys and headers (`docs/asyncapi.yaml`). Behind the `schema`
//! feature: the services do not need it.
//!
//! The constraints are the decoder's (`Envelope::decode` and `Event::check_invariants`): uuid ids,
//! decimal-string money, ISO 4217 currencies, the adjustment enum, non-empty ids and text without
//! NUL. The command API is stricter (sku format, lengths, an email's shape); the log promises only
//! what every event in it satisfies, whatever wrote it.

use std::borrow::Cow;

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value, json};

use crate::envelope::{HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION};
use crate::{Amount, Currency, EventType, InventoryAdjusted, OrderPlaced, PaymentSettled, UserCreated};

/// Text without a NUL character (PostgreSQL text cannot hold one, so the decoder refuses it).
pub(crate) const TEXT: &str = r"^[^\u0000]*$";
/// Non-empty text without a NUL character.
pub(crate) const NON_EMPTY_TEXT: &str = r"^[^\u0000]+$";
/// A decimal amount as writers emit it: digits, an optional fraction, no exponent.
pub(crate) const AMOUNT: &str = r"^-?[0-9]+(\.[0-9]+)?$";
pub(crate) const NON_NEGATIVE_AMOUNT: &str = r"^[0-9]+(\.[0-9]+)?$";
/// Greater than zero: some digit other than 0.
pub(crate) const POSITIVE_AMOUNT: &str = r"^(0*[1-9][0-9]*(\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)$";

impl JsonSchema for Amount {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> schemars::Schema {
        json_schema!({
            "type": "string",
            "pattern": AMOUNT,
            "description": "An exact decimal as a string (never a float), e.g. \"10.50\"; no more fraction digits than the currency has.",
        })
    }
}

impl JsonSchema for Currency {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = Currency::all().map(|currency| currency.code()).collect();
        json_schema!({
            "type": "string",
            "description": "An ISO 4217 currency code with a minor unit (funds, metals and test codes are refused).",
            "enum": codes,
        })
    }
}

/// The JSON Schema (draft-07, as AsyncAPI 3.0's schema format) of every payload type, by name,
/// with references of the form `#/components/schemas/<name>`: the four events' `data`, the types
/// they use, and one envelope per event type.
pub fn schemas() -> Map<String, Value> {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    generator.subschema_for::<UserCreated>();
    generator.subschema_for::<OrderPlaced>();
    generator.subschema_for::<PaymentSettled>();
    generator.subschema_for::<InventoryAdjusted>();
    let mut schemas = generator.take_definitions(true);
    for event_type in EventType::ALL {
        schemas.insert(format!("{event_type}Envelope"), envelope(event_type));
    }
    schemas
}

/// The envelope of `event_type`'s messages at its current schema version.
fn envelope(event_type: EventType) -> Value {
    json!({
        "type": "object",
        "description": format!(
            "A {event_type} event as the message value. `aggregateId` equals the message key and the \
             aggregate's id inside `data` (the decoder refuses a mismatch)."
        ),
        "required": ["eventId", "eventType", "schemaVersion", "occurredAt", "aggregateId", "data"],
        "properties": {
            "eventId": {"type": "string", "format": "uuid", "description": "Unique per event; a consumer dedups on it."},
            "eventType": {"type": "string", "const": event_type.as_str()},
            "schemaVersion": {
                "type": "integer",
                "const": event_type.current_version(),
                "description": "The version of `data`'s schema. Older versions in the log are upcast on read (docs/events.md).",
            },
            "occurredAt": {"type": "string", "format": "date-time", "description": "RFC 3339 in UTC (`Z`), at most microseconds."},
            "aggregateId": {"type": "string", "minLength": 1},
            "data": {"$ref": format!("#/components/schemas/{event_type}")},
        },
    })
}

/// The message key of `event_type`: the aggregate id.
fn key(event_type: EventType) -> Value {
    match event_type {
        EventType::UserCreated => json!({"type": "string", "format": "uuid", "description": "The user id."}),
        EventType::OrderPlaced | EventType::PaymentSettled => json!({
            "type": "string", "format": "uuid",
            "description": "The order id: an order's payments share its key, so they follow it in one partition.",
        }),
        EventType::InventoryAdjusted => {
            json!({"type": "string", "minLength": 1, "pattern": NON_EMPTY_TEXT, "description": "The sku."})
        }
    }
}

/// The headers of `event_type`'s messages (Kafka header values are bytes; these are UTF-8 text).
fn headers(event_type: EventType) -> Value {
    json!({
        "type": "object",
        "required": [HEADER_EVENT_TYPE, HEADER_EVENT_ID, HEADER_SCHEMA_VERSION, HEADER_CONTENT_TYPE],
        "properties": {
            HEADER_EVENT_TYPE: {"type": "string", "const": event_type.as_str()},
            HEADER_EVENT_ID: {"type": "string", "format": "uuid", "description": "The envelope's `eventId`."},
            HEADER_SCHEMA_VERSION: {"type": "string", "const": event_type.current_version().to_string()},
            HEADER_CONTENT_TYPE: {"type": "string", "const": "application/json"},
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context of the request that appended the event, when it was traced.",
            },
            "tracestate": {"type": "string", "description": "W3C trace state, with `traceparent`."},
        },
    })
}

/// What a message of `event_type` means, for people.
fn summary(event_type: EventType) -> &'static str {
    match event_type {
        EventType::UserCreated => "A user signed up.",
        EventType::OrderPlaced => "A user placed an order; the total is computed from the items.",
        EventType::PaymentSettled => "An order's payment was settled (the whole total, once).",
        EventType::InventoryAdjusted => "The stock of a sku was adjusted: add, remove, or set to a value.",
    }
}

/// The AsyncAPI 3.0 document of the event log.
pub fn asyncapi() -> Value {
    let mut messages = Map::new();
    let mut refs = Vec::new();
    for event_type in EventType::ALL {
        let name = event_type.as_str();
        messages.insert(
            name.to_owned(),
            json!({
                "name": name,
                "title": name,
                "summary": summary(event_type),
                "contentType": "application/json",
                "headers": headers(event_type),
                "payload": {"$ref": format!("#/components/schemas/{name}Envelope")},
                "bindings": {"kafka": {"key": key(event_type), "bindingVersion": "0.5.0"}},
            }),
        );
        refs.push(json!({"$ref": format!("#/channels/events/messages/{name}")}));
    }
    let channel_messages: Map<String, Value> = EventType::ALL
        .into_iter()
        .map(|t| (t.as_str().to_owned(), json!({"$ref": format!("#/components/messages/{t}")})))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "eventline event log",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The event log of eventline, kept forever: every accepted command is one \
                event here, appended before the command is answered. Consumers read it from the \
                start of each partition; events of one aggregate share a key and so a partition, \
                in order. Each event has a unique `eventId`: a redelivered or duplicated message \
                repeats it, so a consumer that records the ids it applied applies each event once. \
                Compatibility: events already in the log never change; a new optional field is a \
                compatible change, anything else is a new `schemaVersion` of the type, which \
                readers upcast (docs/events.md).",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The broker `make up` runs (Apache Kafka 4.4, one KRaft node), plaintext.",
            },
            "docker-compose": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Apache Kafka of `docker compose up` (inside the compose network: kafka:29092).",
            },
        },
        "channels": {
            "events": {
                "address": "eventline.events",
                "title": "The event log",
                "description": "The topic (`EVENTLINE_TOPIC`, default `eventline.events`): 6 partitions by \
                    default, `retention.ms=-1`, `cleanup.policy=delete`. Keyed by aggregate id.",
                "messages": channel_messages,
                "bindings": {"kafka": {"topic": "eventline.events", "partitions": 6, "topicConfiguration": {
                    "retention.ms": -1, "cleanup.policy": ["delete"]}, "bindingVersion": "0.5.0"}},
            },
        },
        "operations": {
            "appendEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "title": "The command service appends events",
                "summary": "One event per accepted command (a batch appends several), idempotent producer, acks=all.",
                "messages": refs.clone(),
            },
            "projectEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/events"},
                "title": "The projector applies events to the read models",
                "summary": "Consumer group `eventline-projector`; each event applied once, by its eventId.",
                "messages": refs,
                "bindings": {"kafka": {"groupId": {"type": "string", "const": "eventline-projector"}, "bindingVersion": "0.5.0"}},
            },
        },
        "components": {"messages": messages, "schemas": schemas()},
    })
}

/// `value` as YAML (block style; strings quoted when plain YAML could misread them).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                out.push_str(&format!("{pad}{}:", scalar(&Value::String(key.clone()))));
                nested(value, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first entry on the dash's line, the rest aligned under it.
                        let mut first = String::new();
                        write_yaml(item, indent + 2, &mut first);
                        out.push(' ');
                        out.push_str(first.trim_start());
                    }
                    _ => nested(item, indent, out),
                }
            }
        }
        scalar_value => {
            out.push_str(&format!("{pad}{}\n", scalar(scalar_value)));
        }
    }
}

/// After `key:` or `-`: a scalar or empty collection on the same line, else a block below.
fn nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        scalar_value => out.push_str(&format!(" {}\n", scalar(scalar_value))),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => {
            let plain = text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && text.chars().all(|c| c.is_ascii_alphanumeric() || " _-./()".contains(c))
                && !text.ends_with(' ')
                && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"]
                    .contains(&text.to_ascii_lowercase().as_str());
            if plain { text.clone() } else { Value::String(text.clone()).to_string() }
        }
        other => other.to_string(),
    }
}
