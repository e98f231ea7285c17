//! The event log as a published contract (docs/asyncapi.yaml, AsyncAPI 3.0):
//!
//! - the committed document is the one generated from the Rust event types (JSON Schema through
//!   schemars, so it carries the decoder's constraints and cannot drift from them);
//! - the AsyncAPI CLI accepts it (`--fail-severity warn`);
//! - every golden fixture, and every message the services append while commands of every kind
//!   flow, conforms to it, as judged by a consumer written apart from the Rust code
//!   (clients/python/log_consumer.py, which knows the log only through the document);
//! - the compatibility gate: the payload schema of each event type's schema version may only
//!   change in a way docs/events.md calls compatible (a new optional field) against the schema
//!   frozen when that version was published (crates/events/schemas/), and every version that
//!   ever existed keeps a golden fixture that must decode forever (crates/events/tests/golden.rs).

use crate::support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::support::tools::{python_venv, repository};
use eventline_events::{EventType, schema};
use serde_json::{Map, Value, json};

fn asyncapi_path() -> PathBuf {
    repository().join("docs/asyncapi.yaml")
}

#[test]
fn the_committed_asyncapi_document_is_the_generated_one() {
    let generated = schema::to_yaml(&schema::asyncapi());
    if std::env::var_os("UPDATE_ASYNCAPI").is_some() {
        std::fs::write(asyncapi_path(), &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(asyncapi_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/asyncapi.yaml is out of date; regenerate it with \
         `UPDATE_ASYNCAPI=1 cargo test -p eventline-e2e --test e2e log_contract::` and review the diff"
    );
}

#[test]
fn the_asyncapi_cli_accepts_the_document() {
    let cli = std::env::var_os("EVENTLINE_ASYNCAPI_CLI").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap())
            .join(".cache/eventline/asyncapi/node_modules/.bin/asyncapi")
    });
    // No usage metrics sent anywhere (the CLI reads its analytics switch from this file), and
    // no user configuration touched.
    let analytics = std::env::temp_dir().join("eventline-asyncapi-analytics.json");
    std::fs::write(
        &analytics,
        r#"{"analyticsEnabled":"false","infoMessageShown":"true","userID":"eventline-tests"}"#,
    )
    .unwrap();
    let output = Command::new(&cli)
        .arg("validate")
        .arg(asyncapi_path())
        .args(["--fail-severity", "warn", "--diagnostics-format", "text"])
        .env("ASYNCAPI_METRICS_CONFIG_PATH", &analytics)
        .env("SUPPRESS_NO_CONFIG_WARNING", "1")
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): `make test` installs the AsyncAPI CLI", cli.display()));
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "asyncapi validate refused docs/asyncapi.yaml:\n{printed}");
}

/// Runs the independent consumer with `args`; returns what it printed.
fn log_consumer(args: &[&str]) -> String {
    let python = python_venv().join("bin/python");
    let output = Command::new(&python)
        .arg(repository().join("clients/python/log_consumer.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): `make test` installs the Python tools", python.display()));
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the independent consumer refused: {printed}");
    printed
}

#[test]
fn every_golden_fixture_conforms_to_the_contract() {
    let fixtures = repository().join("crates/events/tests/fixtures");
    let printed = log_consumer(&["fixtures", asyncapi_path().to_str().unwrap(), fixtures.to_str().unwrap()]);
    assert!(printed.contains("fixtures conform"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_the_services_append_conforms_to_the_contract() {
    let env = eventline_testkit::TestEnv::new().await;
    let command = support::command(&env).await;
    let http = eventline_testkit::http();
    let user = uuid::Uuid::now_v7().to_string();
    let order = uuid::Uuid::now_v7().to_string();
    let sku = format!("SKU-{}", env.id);
    let post = |path: &str, body: Value, key: Option<&str>| {
        let mut request = http.post(command.url(path)).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    let created = post(
        "/users",
        json!({"userId": user, "email": format!("{}@example.com", env.id), "firstName": "Grace", "lastName": "Hopper"}),
        None,
    );
    assert_eq!(created.await.unwrap().status(), 202);
    let placed = post(
        "/orders",
        json!({"orderId": order, "userId": user, "currency": "JPY", "items": [{"sku": sku, "quantity": 3, "price": "1200"}]}),
        Some(&format!("contract-{}", env.id)),
    );
    assert_eq!(placed.await.unwrap().status(), 202);
    let paid = post(
        &format!("/orders/{order}/payments"),
        json!({"amount": "3600", "currency": "JPY", "paymentMethod": "credit_card"}),
        None,
    );
    assert_eq!(paid.await.unwrap().status(), 202);
    for (kind, quantity) in [("add", 10), ("remove", 4), ("set", 0)] {
        let body = json!({"adjustmentType": kind, "quantity": quantity, "reason": "contract"});
        assert_eq!(post(&format!("/inventory/{sku}/adjustments"), body, None).await.unwrap().status(), 202);
    }
    let batch = json!({"commands": [
        {"type": "CreateUser", "email": format!("b{}@example.com", env.id), "firstName": "B", "lastName": "Atch"},
        {"type": "AdjustInventory", "sku": sku, "adjustmentType": "add", "quantity": 1, "reason": "batch"},
    ]});
    assert_eq!(post("/commands/batch", batch, None).await.unwrap().status(), 202);
    command.stop().await.unwrap();

    let printed =
        log_consumer(&["topic", asyncapi_path().to_str().unwrap(), &env.kafka.brokers, &env.kafka.topic]);
    let summary: Value = serde_json::from_str(printed.trim().lines().last().unwrap()).unwrap();
    assert_eq!(summary["messages"], 8, "{summary}");
    assert_eq!(
        summary["by_type"],
        json!({"UserCreated": 2, "OrderPlaced": 1, "PaymentSettled": 1, "InventoryAdjusted": 4})
    );
}

/// The schema of `name` with every schema it references, by name.
fn closure(name: &str, schemas: &Map<String, Value>) -> Map<String, Value> {
    fn references(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.insert(target.trim_start_matches("#/components/schemas/").to_owned());
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }
    let mut result = Map::new();
    let mut pending = vec![name.to_owned()];
    while let Some(next) = pending.pop() {
        if result.contains_key(&next) {
            continue;
        }
        let schema = schemas.get(&next).unwrap_or_else(|| panic!("no schema {next}")).clone();
        let mut found = BTreeSet::new();
        references(&schema, &mut found);
        pending.extend(found);
        result.insert(next, schema);
    }
    result
}

/// Where `new` differs from `old` in a way a reader of `old`'s events would notice: anything but
/// a new optional property or changed prose (`description`, `title`, `examples`).
fn incompatibilities(path: &str, old: &Value, new: &Value, found: &mut Vec<String>) {
    const PROSE: [&str; 3] = ["description", "title", "examples"];
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                if PROSE.contains(&key.as_str()) {
                    continue;
                }
                let here = format!("{path}/{key}");
                match (key.as_str(), new.get(key)) {
                    (_, None) => found.push(format!("{here} was removed")),
                    ("properties", Some(new_value)) => {
                        let required: BTreeSet<&str> = new
                            .get("required")
                            .and_then(Value::as_array)
                            .map(|r| r.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        for (property, schema) in new_value.as_object().into_iter().flatten() {
                            match old_value.get(property) {
                                Some(old_schema) => incompatibilities(
                                    &format!("{here}/{property}"),
                                    old_schema,
                                    schema,
                                    found,
                                ),
                                None if required.contains(property.as_str()) => {
                                    found.push(format!("{here}/{property} is new and required"))
                                }
                                None => {} // a new optional field: compatible
                            }
                        }
                        for property in old_value.as_object().into_iter().flatten().map(|(p, _)| p) {
                            if !new_value.as_object().is_some_and(|n| n.contains_key(property)) {
                                found.push(format!("{here}/{property} was removed"));
                            }
                        }
                    }
                    (_, Some(new_value)) => incompatibilities(&here, old_value, new_value, found),
                }
            }
            for key in new.keys().filter(|k| !old.contains_key(*k) && !PROSE.contains(&k.as_str())) {
                found.push(format!("{path}/{key} was added (a new constraint)"));
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (i, (old, new)) in old.iter().zip(new).enumerate() {
                incompatibilities(&format!("{path}/{i}"), old, new, found);
            }
        }
        (old, new) if old != new => found.push(format!("{path} changed from {old} to {new}")),
        _ => {}
    }
}

#[test]
fn event_schemas_only_change_compatibly_and_every_version_keeps_a_fixture() {
    let schemas = schema::schemas();
    let frozen_dir = repository().join("crates/events/schemas");
    let fixtures = repository().join("crates/events/tests/fixtures");
    for event_type in EventType::ALL {
        let generated = Value::Object(closure(event_type.as_str(), &schemas));
        let current = event_type.current_version();
        let frozen_path = frozen_dir.join(format!("{event_type}.v{current}.json"));
        if !frozen_path.exists() && std::env::var_os("UPDATE_EVENT_SCHEMAS").is_some() {
            // A version is frozen once, when it is published; never rewritten.
            std::fs::create_dir_all(&frozen_dir).unwrap();
            std::fs::write(&frozen_path, serde_json::to_string_pretty(&generated).unwrap() + "\n").unwrap();
        }
        let frozen: Value =
            serde_json::from_str(&std::fs::read_to_string(&frozen_path).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: a new schema version is frozen with \
                 `UPDATE_EVENT_SCHEMAS=1 cargo test -p eventline-e2e --test e2e log_contract::`",
                    frozen_path.display()
                )
            }))
            .unwrap();
        let mut found = Vec::new();
        incompatibilities(&format!("{event_type} v{current}"), &frozen, &generated, &mut found);
        assert!(
            found.is_empty(),
            "{event_type} schema version {current} changed incompatibly (docs/events.md: bump the \
             version and add an upcaster instead): {found:#?}"
        );
        // Every version that ever existed: its frozen schema and a golden fixture, which golden.rs
        // decodes into today's type.
        let snake = snake_case(event_type.as_str());
        for version in 1..=current {
            assert!(
                frozen_dir.join(format!("{event_type}.v{version}.json")).exists(),
                "{event_type} v{version} has no frozen schema"
            );
            let fixture =
                if version == current { format!("{snake}.json") } else { format!("{snake}.v{version}.json") };
            assert!(
                fixtures.join(&fixture).exists(),
                "{event_type} v{version} has no golden fixture {fixture}"
            );
        }
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn the_gate_refuses_what_would_break_old_events_and_allows_a_new_optional_field() {
    let schemas = schema::schemas();
    let old = Value::Object(closure("OrderPlaced", &schemas));
    let mut found = Vec::new();
    // A new optional field: compatible.
    let mut added = old.clone();
    added["OrderPlaced"]["properties"]["note"] = json!({"type": "string"});
    incompatibilities("", &old, &added, &mut found);
    assert!(found.is_empty(), "{found:?}");
    // A new required field, a removed one, a changed type, a tightened constraint: each refused.
    let mut required = added.clone();
    required["OrderPlaced"]["required"].as_array_mut().unwrap().push(json!("note"));
    let mut removed = old.clone();
    removed["OrderPlaced"]["properties"].as_object_mut().unwrap().remove("currency");
    let mut retyped = old.clone();
    retyped["OrderItem"]["properties"]["quantity"]["type"] = json!("string");
    let mut tightened = old.clone();
    tightened["OrderItem"]["properties"]["sku"]["maxLength"] = json!(10);
    for (what, new) in
        [("required", required), ("removed", removed), ("retyped", retyped), ("tightened", tightened)]
    {
        let mut found = Vec::new();
        incompatibilities("", &old, &new, &mut found);
        assert!(!found.is_empty(), "{what} was let through");
    }
}
