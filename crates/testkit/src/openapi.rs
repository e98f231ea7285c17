//! Checks on the OpenAPI documents the services generate.

/// Checks a service's OpenAPI document against its committed copy (`docs/openapi/<name>.json`),
/// or rewrites the copy when `UPDATE_OPENAPI` is set. `test` is the `cargo test` arguments that
/// run the calling test, for the message that says how to regenerate.
pub fn assert_openapi_committed(document: &serde_json::Value, name: &str, test: &str) {
    let path = crate::repository().join(format!("docs/openapi/{name}.json"));
    let generated = serde_json::to_string_pretty(document).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/{name}.json is out of date; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test {test}` and review the diff"
    );
}

/// Asserts that every `sku` a client sends, as described by an OpenAPI document (a parameter of
/// that name, or a property of a schema), carries the events crate's pattern: utoipa's attributes
/// take only literals, so this keeps the copies honest. `answers` names the schemas that describe
/// answers: their skus come from the log, whose decoder is more lenient than the API (old or
/// foreign writers), so they promise no pattern. Returns how many skus were checked.
pub fn assert_sku_patterns(document: &serde_json::Value, answers: &[&str]) -> usize {
    fn walk(value: &serde_json::Value, found: &mut Vec<serde_json::Value>) {
        match value {
            serde_json::Value::Object(object) => {
                if let Some(sku) = object.get("properties").and_then(|p| p.get("sku")) {
                    found.push(sku.clone());
                }
                if object.get("name").and_then(|n| n.as_str()) == Some("sku") {
                    found.push(object.get("schema").cloned().unwrap_or_default());
                }
                object.values().for_each(|v| walk(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut document = document.clone();
    if let Some(schemas) = document.pointer_mut("/components/schemas").and_then(|s| s.as_object_mut()) {
        for answer in answers {
            assert!(schemas.remove(*answer).is_some(), "no schema {answer} in the document");
        }
    }
    let mut found = Vec::new();
    walk(&document, &mut found);
    for schema in &found {
        assert_eq!(schema["pattern"], eventline_events::SKU_PATTERN, "a sku schema: {schema}");
    }
    found.len()
}
