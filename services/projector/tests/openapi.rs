//! The committed OpenAPI document of the operator console is the one its router serves.
//! Regenerate it after changing the console's API with
//! `UPDATE_OPENAPI=1 cargo test -p eventline-projector --test openapi`.
#![allow(clippy::unwrap_used)]

#[test]
fn the_committed_console_document_matches_the_router() {
    let document = serde_json::to_value(eventline_projector::console::openapi_document()).unwrap();
    eventline_testkit::assert_openapi_committed(
        &document,
        "console",
        "-p eventline-projector --test openapi",
    );
}

#[test]
fn every_console_endpoint_is_described() {
    let document = serde_json::to_value(eventline_projector::console::openapi_document()).unwrap();
    let mut paths: Vec<&str> = document["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/console/api/audit",
            "/console/api/dead-letters",
            "/console/api/dead-letters/discard",
            "/console/api/dead-letters/redrive",
            "/console/api/dead-letters/{id}",
            "/console/api/find",
            "/console/api/parked",
            "/console/api/parked/discard",
            "/console/api/parked/redrive",
            "/console/api/parked/{key}",
            "/console/api/projection",
            "/console/api/projection/trend",
            "/console/api/rebuild",
            "/console/api/rollback",
            "/console/api/session",
            "/console/api/stream",
            "/console/api/verify",
            "/console/api/versions",
        ]
    );
}
