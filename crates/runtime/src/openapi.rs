//! Small additions to generated OpenAPI documents that utoipa's derives cannot express.

use serde_json::Value;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

/// A link to the operation `operation_id`, passing `parameters` (`"path.id"` → a runtime
/// expression) and, if given, a request body whose strings may be expressions.
///
/// utoipa 5.5 serializes `Link`'s `operation_id` and `request_body` under those snake_case names,
/// which no tool reads; they are written as the OpenAPI names `operationId` and `requestBody`
/// through the link's extension map instead (its names are written as given).
pub fn link(
    operation_id: &str,
    description: &str,
    parameters: &[(&str, &str)],
    request_body: Option<Value>,
) -> Link {
    let mut fields = vec![("operationId", Value::from(operation_id))];
    fields.extend(request_body.map(|body| ("requestBody", body)));
    parameters
        .iter()
        .fold(LinkBuilder::new(), |link, (name, expression)| link.parameter(*name, *expression))
        .description(description)
        .extensions(Some(Extensions::from_iter(fields)))
        .build()
}

/// Declares `link` on the `status` answer of the operation `from` (an `operationId`). Panics when
/// either is missing: links are declared once at start-up from names in the code, and a wrong name
/// is a programming error the OpenAPI tests catch.
pub fn add_link(document: &mut OpenApi, from: &str, status: &str, name: &str, link: Link) {
    let (_, _, operation) = operations(document)
        .find(|(_, _, operation)| operation.operation_id.as_deref() == Some(from))
        .unwrap_or_else(|| panic!("no operation {from:?} to link from"));
    let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) else {
        panic!("operation {from:?} has no {status} answer to link from");
    };
    response.links.insert(name.to_owned(), RefOr::T(link));
}

/// Every operation of `document`, with its path and its method (upper case).
pub fn operations(document: &mut OpenApi) -> impl Iterator<Item = (&str, &'static str, &mut Operation)> {
    document.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ]
        .into_iter()
        .filter_map(move |(method, operation)| Some((path.as_str(), method, operation.as_mut()?)))
    })
}
