//! The committed OpenAPI document is the one the router serves. Regenerate it after changing the
//! API with `UPDATE_OPENAPI=1 cargo test -p eventline-command --test openapi`.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

#[test]
fn the_committed_document_matches_the_router() {
    let document = serde_json::to_value(eventline_command::http::openapi_document()).unwrap();
    eventline_testkit::assert_openapi_committed(&document, "command", "-p eventline-command --test openapi");
}

#[test]
fn every_command_documents_its_answers() {
    let document: Value = serde_json::to_value(eventline_command::http::openapi_document()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["license"]["identifier"], "Apache-2.0");
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    assert_eq!(
        documented,
        [
            "/commands/batch",
            "/inventory/{sku}/adjustments",
            "/orders",
            "/orders/{orderId}/payments",
            "/users"
        ]
    );
    for (path, operations) in paths {
        let post = &operations["post"];
        let responses = post["responses"].as_object().unwrap();
        for status in ["202", "400", "409", "413", "415", "422", "503"] {
            assert!(responses.contains_key(status), "{path} does not document {status}");
        }
        assert!(responses["422"]["content"]["application/problem+json"].is_object(), "{path}");
        assert!(responses["202"]["headers"]["Consistency-Token"].is_object(), "{path}");
        let params = post["parameters"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"), "{path}");
    }
}

#[test]
fn every_sku_carries_the_one_sku_pattern() {
    let document = serde_json::to_value(eventline_command::http::openapi_document()).unwrap();
    assert!(eventline_testkit::assert_sku_patterns(&document, &["Accepted"]) > 0, "no sku in the document");
}
