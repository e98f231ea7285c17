//! Hostile input for the event decoder, which reads whatever is on the topic: properties over
//! arbitrary bytes and arbitrary JSON (never a panic, always a typed error or an event), exact
//! round trips of valid events whatever their text, and a bounded mutation-fuzz run over valid
//! encodings (`EVENTLINE_FUZZ_SECS` runs it longer).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use eventline_events::{
    AdjustmentType, Envelope, Event, InventoryAdjusted, OrderItem, OrderPlaced, PaymentSettled,
    PaymentStatus, UserCreated,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Arbitrary JSON, nested a few levels, with any text (control characters, NUL, lone surrogates
/// escaped by serde).
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An envelope-shaped object whose fields are anything: the decoder must sort it out.
fn envelope_shaped() -> impl Strategy<Value = serde_json::Value> {
    let event_type = prop_oneof![
        Just("UserCreated".to_owned()),
        Just("OrderPlaced".to_owned()),
        Just("PaymentSettled".to_owned()),
        Just("InventoryAdjusted".to_owned()),
        any::<String>(),
    ];
    (event_type, any::<i64>(), json(), json(), json()).prop_map(|(event_type, version, data, id, at)| {
        serde_json::json!({"eventId": id, "eventType": event_type, "schemaVersion": version,
                           "occurredAt": at, "aggregateId": "x", "data": data})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_to_an_event_or_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn any_json_decodes_to_an_event_or_a_typed_error(value in json()) {
        let _ = Envelope::decode(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn envelope_shaped_json_decodes_to_an_event_or_a_typed_error(value in envelope_shaped()) {
        if let Err(error) = Envelope::decode(&serde_json::to_vec(&value).unwrap()) {
            // Every failure has a stable code for the dead-letter queue.
            prop_assert!(!error.code().is_empty());
        }
    }

    /// Any text comes back exactly as sent, unless it breaks an invariant the read model relies
    /// on (no NUL anywhere, since PostgreSQL text cannot hold it; a non-empty e-mail), and then
    /// exactly then it is refused as invalid data.
    #[test]
    fn user_events_round_trip_whatever_their_text(
        email in any::<String>(), first in any::<String>(), last in any::<String>()
    ) {
        let violates = email.is_empty() || [&email, &first, &last].iter().any(|t| t.contains('\0'));
        let user_id = uuid::Uuid::now_v7();
        let envelope = Envelope::new(Event::UserCreated(UserCreated { user_id, email, first_name: first, last_name: last }));
        match Envelope::decode(&envelope.encode()) {
            Ok(decoded) => {
                prop_assert!(!violates);
                prop_assert_eq!(decoded, envelope);
            }
            Err(error) => prop_assert!(violates && error.code() == "invalid_data", "{}", error),
        }
    }

    #[test]
    fn inventory_events_round_trip_whatever_their_text(sku in any::<String>(), quantity in any::<i64>(), reason in any::<String>()) {
        let violates = sku.is_empty() || sku.contains('\0') || reason.contains('\0');
        let envelope = Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
            sku, quantity, adjustment_type: AdjustmentType::Set, reason,
        }));
        match Envelope::decode(&envelope.encode()) {
            Ok(decoded) => {
                prop_assert!(!violates);
                prop_assert_eq!(decoded, envelope);
            }
            Err(error) => prop_assert!(violates && error.code() == "invalid_data", "{}", error),
        }
    }
}

/// Valid encodings of every event type, the fuzz run's seeds.
fn corpus() -> Vec<Vec<u8>> {
    let (user, order) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let price = "12.50".parse().unwrap();
    let eur = "EUR".parse().unwrap();
    [
        Event::UserCreated(UserCreated {
            user_id: user,
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        }),
        Event::OrderPlaced(OrderPlaced {
            order_id: order,
            user_id: user,
            currency: eur,
            items: vec![OrderItem { sku: "SKU-1".into(), quantity: 2, price }],
            total_amount: "25.00".parse().unwrap(),
        }),
        Event::PaymentSettled(PaymentSettled {
            payment_id: uuid::Uuid::now_v7(),
            order_id: order,
            amount: "25.00".parse().unwrap(),
            currency: eur,
            payment_method: "card".into(),
            status: PaymentStatus::Completed,
        }),
        Event::InventoryAdjusted(InventoryAdjusted {
            sku: "SKU-1".into(),
            quantity: 5,
            adjustment_type: AdjustmentType::Remove,
            reason: "sold".into(),
        }),
    ]
    .into_iter()
    .map(|event| Envelope::new(event).encode())
    .collect()
}

/// One random edit: flip a bit, overwrite, insert or delete bytes, duplicate or splice a slice,
/// or put an interesting token (quotes, braces, huge numbers, escapes) somewhere.
fn mutate(bytes: &mut Vec<u8>, rng: &mut StdRng) {
    const TOKENS: [&[u8]; 12] = [
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\\u0000",
        b"\\ud800",
        b"1e999999",
        b"-0",
        b"null",
        b"\xff\xfe",
        b"99999999999999999999999",
    ];
    let at = if bytes.is_empty() { 0 } else { rng.random_range(0..bytes.len()) };
    match rng.random_range(0..6) {
        0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.random_range(0..8),
        1 if !bytes.is_empty() => bytes[at] = rng.random(),
        2 => bytes.insert(at, rng.random()),
        3 if !bytes.is_empty() => {
            let end = (at + rng.random_range(1..16)).min(bytes.len());
            bytes.drain(at..end);
        }
        4 if !bytes.is_empty() => {
            let end = (at + rng.random_range(1..64)).min(bytes.len());
            let slice = bytes[at..end].to_vec();
            let to = rng.random_range(0..=bytes.len());
            bytes.splice(to..to, slice);
        }
        _ => {
            let token = TOKENS[rng.random_range(0..TOKENS.len())];
            bytes.splice(at..at, token.iter().copied());
        }
    }
}

#[test]
fn the_decoder_survives_a_mutation_fuzz_run() {
    let seconds = std::env::var("EVENTLINE_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let corpus = corpus();
    let mut rng = StdRng::seed_from_u64(20_261_124);
    let (mut runs, mut decoded) = (0_u64, 0_u64);
    while Instant::now() < deadline {
        let mut input = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..8) {
            mutate(&mut input, &mut rng);
        }
        // A panic here fails the test with the input in the message.
        let outcome = std::panic::catch_unwind(|| Envelope::decode(&input));
        assert!(outcome.is_ok(), "the decoder panicked on {:?}", String::from_utf8_lossy(&input));
        decoded += u64::from(matches!(outcome, Ok(Ok(_))));
        runs += 1;
    }
    eprintln!("{runs} mutated inputs in {seconds} s, {decoded} still decoded as events");
    assert!(runs > 10_000, "the fuzz run was too short to mean anything: {runs} inputs");
}
