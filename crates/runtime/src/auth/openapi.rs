//! The access model in an OpenAPI document: the `bearerAuth` scheme, and on every operation the
//! scope it needs (OpenAPI 3.1 lets a bearer requirement list role names) and its `401`/`403`
//! answers.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, Ref, ResponseBuilder, Type, header::Header};

use super::Scope;
use crate::problem::PROBLEM_CONTENT_TYPE;

pub const SCHEME: &str = "bearerAuth";

/// Declares the scheme, and the scope `scope_of` gives each operation (by path and method in
/// upper case; `None` leaves an operation open, like the console's sign-in).
pub fn declare(document: &mut OpenApi, scope_of: impl Fn(&str, &str) -> Option<Scope>) {
    let components = document.components.get_or_insert_with(Default::default);
    let mut scheme = Http::new(HttpAuthScheme::Bearer);
    scheme.description = Some(
        "A static token from the service's token list, or a JWT from the identity provider \
         (`EVENTLINE_JWKS_URL`). Each operation lists the scope it takes: read, write, operate or view."
            .to_owned(),
    );
    components.add_security_scheme(SCHEME, SecurityScheme::Http(scheme));
    for (path, method, operation) in crate::openapi::operations(document) {
        if let Some(scope) = scope_of(path, method) {
            guard(operation, scope);
        }
    }
}

fn guard(operation: &mut Operation, scope: Scope) {
    operation.security = Some(vec![SecurityRequirement::new(SCHEME, [scope.name()])]);
    let problem = || ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let responses = &mut operation.responses.responses;
    responses.entry("401".into()).or_insert_with(|| {
        ResponseBuilder::new()
            .description(
                "No bearer token, or one that is not valid (`unauthorized`; `WWW-Authenticate` says why).",
            )
            .header("WWW-Authenticate", Header::new(ObjectBuilder::new().schema_type(Type::String)))
            .content(PROBLEM_CONTENT_TYPE, problem())
            .build()
            .into()
    });
    responses.entry("403".into()).or_insert_with(|| {
        ResponseBuilder::new()
            .description(format!("The token lacks the `{scope}` scope (`forbidden`)."))
            .content(PROBLEM_CONTENT_TYPE, problem())
            .build()
            .into()
    });
}
