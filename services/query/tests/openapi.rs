//! The committed OpenAPI document is the one the router serves. Regenerate it after changing the
//! API with `UPDATE_OPENAPI=1 cargo test -p eventline-query --test openapi`.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

#[test]
fn the_committed_document_matches_the_router() {
    let document = serde_json::to_value(eventline_query::http::openapi_document()).unwrap();
    eventline_testkit::assert_openapi_committed(&document, "query", "-p eventline-query --test openapi");
}

#[test]
fn every_read_documents_its_answers() {
    let document: Value = serde_json::to_value(eventline_query::http::openapi_document()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["license"]["identifier"], "Apache-2.0");
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    assert_eq!(
        documented,
        [
            "/inventory/{sku}",
            "/inventory/{sku}/history",
            "/inventory/{sku}/live",
            "/orders",
            "/orders/{id}",
            "/orders/{id}/history",
            "/orders/{id}/live",
            "/users/{id}",
            "/users/{id}/history",
            "/users/{id}/live",
            "/users/{id}/orders"
        ]
    );
    for (path, operations) in paths {
        let get = &operations["get"];
        let responses = get["responses"].as_object().unwrap();
        // A live stream is one long answer: no ETag, no 304.
        let live = path.ends_with("/live");
        let statuses: &[&str] =
            if live { &["200", "400", "404", "503"] } else { &["200", "304", "400", "404", "503"] };
        for status in statuses {
            assert!(responses.contains_key(*status), "{path} does not document {status}");
        }
        assert!(responses["404"]["content"]["application/problem+json"].is_object(), "{path}");
        if live {
            let stream = &responses["200"]["content"]["text/event-stream"]["schema"];
            assert!(stream["$ref"].as_str().unwrap().contains("LiveEvents"), "{path}: {stream}");
            assert!(
                get["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Last-Event-ID"),
                "{path}"
            );
        } else {
            assert!(responses["200"]["headers"]["ETag"].is_object(), "{path}");
        }
        let params = get["parameters"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "Consistency-Token" && p["in"] == "header"), "{path}");
    }
}

#[test]
fn every_sku_carries_the_one_sku_pattern() {
    let document = serde_json::to_value(eventline_query::http::openapi_document()).unwrap();
    assert!(
        eventline_testkit::assert_sku_patterns(
            &document,
            &["Stock", "Item", "LiveState_Stock", "LiveChange_Stock"]
        ) > 0,
        "no sku in the document"
    );
}

#[test]
fn every_consistency_token_parameter_carries_the_parser_s_pattern() {
    let document = serde_json::to_value(eventline_query::http::openapi_document()).unwrap();
    let mut found = 0;
    for operations in document["paths"].as_object().unwrap().values() {
        for param in operations["get"]["parameters"].as_array().into_iter().flatten() {
            if param["name"] == "Consistency-Token" {
                // Empty, which reads as no token, or a token.
                let pattern = format!("^$|{}", eventline_events::CONSISTENCY_TOKEN_PATTERN);
                assert_eq!(param["schema"]["pattern"], pattern);
                found += 1;
            }
        }
    }
    assert!(found > 0, "no Consistency-Token parameter");
}
