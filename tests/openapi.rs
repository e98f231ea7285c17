//! The combined OpenAPI document (`docs/openapi/eventline.json`) is the two services' documents
//! put together with the links between them; and every link, in it and in the services' own
//! documents, leads somewhere real. Regenerate the committed copy after changing either API with
//! `UPDATE_OPENAPI=1 cargo test -p eventline-e2e --test e2e openapi::`.

use crate::support::openapi;
use serde_json::Value;

fn command() -> Value {
    serde_json::to_value(eventline_command::http::openapi_document()).unwrap()
}

fn query() -> Value {
    serde_json::to_value(eventline_query::http::openapi_document()).unwrap()
}

/// The combined document for the local stack (the servers each service's document names).
fn combined() -> Value {
    let (command, query) = (command(), query());
    let url = |document: &Value| document["servers"][0]["url"].as_str().unwrap().to_owned();
    openapi::combined(&command, &query, &url(&command), &url(&query))
}

#[test]
fn the_committed_combined_document_matches_the_services() {
    eventline_testkit::assert_openapi_committed(
        &combined(),
        "eventline",
        "-p eventline-e2e --test e2e openapi::",
    );
}

#[test]
fn every_link_names_an_operation_and_its_parameters() {
    let mut checked = 0;
    for document in [command(), query(), combined()] {
        let operations = openapi::operations(&document);
        for (path, method, operation) in &operations {
            for (status, answer) in operation["responses"].as_object().unwrap() {
                let Some(links) = answer.get("links").and_then(Value::as_object) else { continue };
                for (name, link) in links {
                    let at = format!("{method} {path} {status} link {name}");
                    let target = operations
                        .iter()
                        .find(|(_, _, o)| o["operationId"] == link["operationId"])
                        .unwrap_or_else(|| panic!("{at}: no operation {}", link["operationId"]));
                    for (parameter, expression) in link["parameters"].as_object().into_iter().flatten() {
                        let (location, name) = parameter.split_once('.').unwrap();
                        let known = target.2["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["in"] == location && p["name"] == name);
                        assert!(known, "{at}: {} has no {location} parameter {name}", target.0);
                        assert!(expression.as_str().unwrap().starts_with('$'), "{at}: {expression}");
                    }
                    if let Some(body) = link.get("requestBody").and_then(Value::as_object) {
                        let schema =
                            &target.2["requestBody"]["content"]["application/json"]["schema"]["$ref"];
                        let name = schema.as_str().unwrap().rsplit('/').next().unwrap();
                        let properties = &document["components"]["schemas"][name]["properties"];
                        for field in body.keys() {
                            assert!(properties.get(field).is_some(), "{at}: {name} has no property {field}");
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    // command: 2, query: 12 (4, each resource to its history and each history to its next page,
    // and orders by status to its first order and next page), combined: those 14 and 4 from
    // commands to reads.
    assert_eq!(checked, 32);
}

#[test]
fn every_command_links_to_the_read_that_shows_it() {
    let document = combined();
    for (_, method, operation) in openapi::operations(&document) {
        let id = operation["operationId"].as_str().unwrap();
        if method != "post" || id == "batch" {
            continue;
        }
        let links = operation["responses"]["202"]["links"].as_object().unwrap();
        let reads: Vec<&Value> =
            links.values().filter(|l| l["operationId"].as_str().unwrap().starts_with("get_")).collect();
        assert_eq!(reads.len(), 1, "{id} links to {} reads", reads.len());
        assert_eq!(
            reads[0]["parameters"]["header.Consistency-Token"], "$response.header.Consistency-Token",
            "{id}"
        );
    }
}
