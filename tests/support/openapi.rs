//! The combined OpenAPI document of both APIs (`docs/openapi/eventline.json`): every operation of
//! the command and the query API, each with its own server, plus the links that cross from a
//! command to the read that shows it (create a user → read it, place an order → read it, …), which
//! neither service's own document can hold. Client generators that want one client, and
//! schemathesis' stateful phase, follow the flows through it.

use serde_json::{Map, Value, json};

/// Adds to the command API's `Problem` schema the members only the query API sends; a member both
/// send keeps both descriptions. Everything else of the two must be equal.
fn merge_problem_members(command: &mut Value, query: &Value) {
    let members = |schema: &Value| schema["properties"].as_object().expect("Problem properties").clone();
    let (mut merged, theirs) = (members(command), members(query));
    for (name, member) in theirs {
        match merged.get_mut(&name) {
            Some(ours) if ours != &member => {
                let description = format!(
                    "{} Query API: {}",
                    ours["description"].as_str().unwrap_or(""),
                    member["description"].as_str().unwrap_or("")
                );
                ours["description"] = description.trim().into();
                let without = |m: &Value| {
                    let mut m = m.clone();
                    m.as_object_mut().expect("member").remove("description");
                    m
                };
                assert_eq!(without(ours), without(&member), "the APIs describe Problem's {name} differently");
            }
            Some(_) => {}
            None => {
                merged.insert(name, member);
            }
        }
    }
    let rest = |schema: &Value| {
        let mut schema = schema.clone();
        schema.as_object_mut().expect("Problem").remove("properties");
        schema
    };
    assert_eq!(rest(command), rest(query), "the APIs describe Problem differently");
    command["properties"] = merged.into();
}

/// Combines the two services' documents; `command_url` and `query_url` are where they run.
pub fn combined(command: &Value, query: &Value, command_url: &str, query_url: &str) -> Value {
    let mut paths = Map::new();
    for (document, url, name) in [(command, command_url, "command"), (query, query_url, "query")] {
        for (path, item) in document["paths"].as_object().expect("paths") {
            // One path can be served by both (`POST /orders` places an order, `GET /orders` lists
            // them): each operation names its server, and the operations of a path are merged.
            let merged = paths.entry(path.clone()).or_insert_with(|| json!({}));
            for (method, operation) in item.as_object().expect("path item") {
                let mut operation = operation.clone();
                if operation.get("operationId").is_some() {
                    operation["servers"] = json!([{ "url": url, "description": format!("The {name} API") }]);
                    // The command API's default security moves onto its operations; reads need none.
                    if let Some(security) = document.get("security")
                        && operation.get("security").is_none()
                    {
                        operation["security"] = security.clone();
                    }
                }
                assert!(merged.get(method).is_none(), "both APIs describe {method} {path}");
                merged[method] = operation;
            }
        }
    }
    let mut schemas = command["components"]["schemas"].as_object().expect("schemas").clone();
    for (name, schema) in query["components"]["schemas"].as_object().expect("schemas") {
        match schemas.get_mut(name) {
            // Each API declares the problem members it sends (`ProblemMember`): the union of both.
            Some(existing) if name == "Problem" => merge_problem_members(existing, schema),
            Some(existing) => assert_eq!(existing, schema, "the APIs describe {name} differently"),
            None => {
                schemas.insert(name.clone(), schema.clone());
            }
        }
    }
    let mut tags: Vec<Value> = command["tags"].as_array().expect("tags").clone();
    for tag in query["tags"].as_array().expect("tags") {
        if !tags.iter().any(|t| t["name"] == tag["name"]) {
            tags.push(tag.clone());
        }
    }
    let mut document = json!({
        "openapi": command["openapi"],
        "info": {
            "title": "eventline API",
            "description": "The command and the query API of eventline in one document, each operation \
                with the server that serves it, and links from every command to the read that shows its \
                effect (with the answer's `Consistency-Token`, so the read reflects the write). Each \
                service also serves its own part at `GET /openapi.json`.",
            "license": command["info"]["license"],
            "version": command["info"]["version"],
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": command["components"]["securitySchemes"],
        },
        "tags": tags,
    });
    let read_back = |operation: &str, id_from: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": { "path.id": id_from, "header.Consistency-Token": "$response.header.Consistency-Token" },
            "description": description,
        })
    };
    link(
        &mut document,
        "create_user",
        "GetUser",
        read_back("get_user", "$response.body#/userId", "Read the user just created."),
    );
    link(
        &mut document,
        "place_order",
        "GetOrder",
        read_back("get_order", "$response.body#/orderId", "Read the order just placed."),
    );
    link(
        &mut document,
        "settle_payment",
        "GetOrder",
        read_back("get_order", "$request.path.orderId", "Read the order just paid."),
    );
    link(
        &mut document,
        "adjust_inventory",
        "GetStock",
        json!({
            "operationId": "get_stock",
            "parameters": { "path.sku": "$request.path.sku", "header.Consistency-Token": "$response.header.Consistency-Token" },
            "description": "Read the stock just adjusted.",
        }),
    );
    document
}

/// Adds `link` named `name` to the `202` answer of the command `from`.
fn link(document: &mut Value, from: &str, name: &str, link: Value) {
    let operation = operations_mut(document)
        .into_iter()
        .find(|operation| operation["operationId"] == from)
        .unwrap_or_else(|| panic!("no operation {from}"));
    operation["responses"]["202"]["links"][name] = link;
}

/// Every operation of a document (path item entries with an `operationId`).
pub fn operations(document: &Value) -> Vec<(&str, &str, &Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if operation.get("operationId").is_some() {
                found.push((path.as_str(), method.as_str(), operation));
            }
        }
    }
    found
}

fn operations_mut(document: &mut Value) -> Vec<&mut Value> {
    document["paths"]
        .as_object_mut()
        .expect("paths")
        .values_mut()
        .flat_map(|item| item.as_object_mut().expect("path item").values_mut())
        .filter(|operation| operation.get("operationId").is_some())
        .collect()
}
