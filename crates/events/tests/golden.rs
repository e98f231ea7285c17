//! Golden fixtures: every event type decodes from its committed JSON into the expected value and
//! encodes back to the same JSON. A change that breaks either breaks the log's compatibility.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use eventline_events::*;
use serde_json::Value;
use uuid::Uuid;

fn fixture(name: &str) -> Vec<u8> {
    // Where cargo runs the test from, not where it was compiled (a shared build directory reuses
    // binaries compiled in another checkout).
    let package =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = format!("{package}/tests/fixtures/{name}.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn uuid(s: &str) -> Uuid {
    s.parse().unwrap()
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn amount(s: &str) -> Amount {
    s.parse().unwrap()
}

fn expected() -> Vec<(&'static str, Envelope)> {
    let user = uuid("550e8400-e29b-41d4-a716-446655440000");
    let order = uuid("650e8400-e29b-41d4-a716-446655440000");
    let usd: Currency = "USD".parse().unwrap();
    vec![
        (
            "user_created",
            Envelope::at(
                Event::UserCreated(UserCreated {
                    user_id: user,
                    email: "ada@example.com".into(),
                    first_name: "Ada".into(),
                    last_name: "Lovelace".into(),
                }),
                uuid("0193a1b2-0000-7000-8000-000000000001"),
                time("2026-11-23T10:00:00.123456Z"),
            ),
        ),
        (
            "order_placed",
            Envelope::at(
                Event::OrderPlaced(OrderPlaced {
                    order_id: order,
                    user_id: user,
                    currency: usd,
                    items: vec![
                        OrderItem { sku: "LAPTOP-001".into(), quantity: 1, price: amount("299.99") },
                        OrderItem { sku: "MOUSE-002".into(), quantity: 2, price: amount("10.50") },
                    ],
                    total_amount: amount("320.99"),
                }),
                uuid("0193a1b2-0000-7000-8000-000000000002"),
                time("2026-11-23T10:01:00Z"),
            ),
        ),
        (
            "payment_settled",
            Envelope::at(
                Event::PaymentSettled(PaymentSettled {
                    payment_id: uuid("750e8400-e29b-41d4-a716-446655440000"),
                    order_id: order,
                    amount: amount("320.99"),
                    currency: usd,
                    payment_method: "credit_card".into(),
                    status: PaymentStatus::Completed,
                }),
                uuid("0193a1b2-0000-7000-8000-000000000003"),
                time("2026-11-23T10:02:00.500Z"),
            ),
        ),
        (
            "inventory_adjusted",
            Envelope::at(
                Event::InventoryAdjusted(InventoryAdjusted {
                    sku: "LAPTOP-001".into(),
                    quantity: 10,
                    adjustment_type: AdjustmentType::Add,
                    reason: "restock".into(),
                }),
                uuid("0193a1b2-0000-7000-8000-000000000004"),
                time("2026-11-23T10:03:00Z"),
            ),
        ),
    ]
}

#[test]
fn every_fixture_decodes_to_the_expected_event() {
    for (name, want) in expected() {
        let got = Envelope::decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn every_event_encodes_to_its_fixture() {
    for (name, envelope) in expected() {
        let encoded: Value = serde_json::from_slice(&envelope.encode()).unwrap();
        let golden: Value = serde_json::from_slice(&fixture(name)).unwrap();
        assert_eq!(encoded, golden, "{name}");
    }
}

#[test]
fn every_event_type_is_covered_by_a_fixture() {
    let covered: Vec<EventType> = expected().iter().map(|(_, e)| e.event_type()).collect();
    for t in EventType::ALL {
        assert!(covered.contains(&t), "{t} has no golden fixture");
    }
}

#[test]
fn money_sent_as_json_numbers_is_read_exactly() {
    let text = String::from_utf8(fixture("order_placed")).unwrap();
    let text = text.replace(r#""299.99""#, "299.99").replace(r#""320.99""#, "320.99");
    let envelope = Envelope::decode(text.as_bytes()).unwrap();
    let Event::OrderPlaced(order) = envelope.event else { panic!("not an order") };
    assert_eq!(order.total_amount.to_string(), "320.99");
    assert_eq!(order.items[0].price.to_string(), "299.99");
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    Envelope::decode(bytes).expect_err("should not decode")
}

fn mutate(name: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn malformed_payloads_are_typed_errors() {
    assert_eq!(decode_err(b"").code(), "not_json");
    assert_eq!(decode_err(b"{\"eventId\": ").code(), "not_json");
    assert_eq!(decode_err(&[0xff, 0xfe, 0x00]).code(), "not_json");
    assert_eq!(decode_err(br#"{"invalid": "json"}"#).code(), "invalid_envelope");
    assert_eq!(decode_err(b"[1,2,3]").code(), "invalid_envelope");
    assert_eq!(
        decode_err(&mutate("user_created", |v| v["eventType"] = "UserDeleted".into())).code(),
        "unknown_event_type"
    );
    assert_eq!(
        decode_err(&mutate("user_created", |v| v["schemaVersion"] = 2.into())).code(),
        "unsupported_schema_version"
    );
    assert_eq!(
        decode_err(&mutate("user_created", |v| v["schemaVersion"] = 0.into())).code(),
        "unsupported_schema_version"
    );
    assert_eq!(
        decode_err(&mutate("user_created", |v| v["data"]["userId"] = "not-a-uuid".into())).code(),
        "invalid_data"
    );
    assert_eq!(
        decode_err(&mutate("order_placed", |v| v["data"]["items"] = Value::Array(vec![]))).code(),
        "invalid_data"
    );
    assert_eq!(
        decode_err(&mutate("order_placed", |v| v["data"]["totalAmount"] = "12,50".into())).code(),
        "invalid_data"
    );
    assert_eq!(
        decode_err(&mutate("inventory_adjusted", |v| v["data"]["adjustmentType"] = "steal".into())).code(),
        "invalid_data"
    );
    assert_eq!(
        decode_err(&mutate("user_created", |v| v["data"]["lastName"] = "Love\u{0}lace".into())).code(),
        "invalid_data"
    );
    assert_eq!(
        decode_err(&mutate("inventory_adjusted", |v| v["aggregateId"] = "OTHER".into())).code(),
        "aggregate_mismatch"
    );
}
