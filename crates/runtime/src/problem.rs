//! RFC 9457 problem details (`application/problem+json`), the one error shape of every HTTP API,
//! and a JSON extractor whose rejections are problems too.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

use crate::server::BodyReadTimeout;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Base of every problem `type` URI; each type is documented in `docs/problems.md`.
const TYPE_BASE: &str = "https://eventline.dev/problems/";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON pointer-like path of the field, e.g. `email` or `items[2].price`.
    pub field: String,
    /// What is wrong with it, for people.
    pub message: String,
    /// The problem type of this entry when it is a broken business rule (a command of a batch),
    /// e.g. `https://eventline.dev/problems/insufficient-stock`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", serialize_with = "optional_type_uri")]
    #[schema(value_type = Option<String>)]
    pub slug: Option<&'static str>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into(), slug: None }
    }

    /// An entry for a broken rule, of problem type `slug`.
    pub fn rule(field: impl Into<String>, slug: &'static str, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into(), slug: Some(slug) }
    }
}

fn optional_type_uri<S: serde::Serializer>(
    slug: &Option<&'static str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match slug {
        Some(slug) => serializer.collect_str(&format_args!("{TYPE_BASE}{slug}")),
        None => serializer.serialize_none(),
    }
}

/// A problem type: its stable slug (the last segment of its `type` URI), title and status. Each
/// service lists the types it answers with in one catalogue (`ALL` here and in each service's
/// `problems` module); docs/problems.md lists the same, and a test holds the two together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemType {
    pub slug: &'static str,
    pub title: &'static str,
    pub status: StatusCode,
}

impl ProblemType {
    pub const fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        ProblemType { slug, title, status }
    }
}

/// Declares problem types once each: a constant per type, and `ALL`, every one of them in order.
/// Each service's `problems` module declares its own this way.
#[macro_export]
macro_rules! problem_types {
    ($($(#[$attr:meta])* $name:ident = ($status:ident, $slug:literal, $title:literal);)*) => {
        $($(#[$attr])*
        pub const $name: $crate::problem::ProblemType =
            $crate::problem::ProblemType::new($crate::problem::StatusCode::$status, $slug, $title);)*

        /// Every problem type declared here, in order.
        pub const ALL: &[$crate::problem::ProblemType] = &[$($name),*];
    };
}

#[doc(hidden)]
pub use axum::http::StatusCode;

/// The problem types of the HTTP plumbing every service shares.
pub mod types {
    crate::problem_types! {
        VALIDATION_ERROR = (UNPROCESSABLE_ENTITY, "validation-error", "Validation failed");
        BAD_REQUEST = (BAD_REQUEST, "bad-request", "Bad request");
        RATE_LIMITED = (TOO_MANY_REQUESTS, "rate-limited", "Too many requests");
        MALFORMED_JSON = (BAD_REQUEST, "malformed-json", "Malformed JSON");
        UNSUPPORTED_MEDIA_TYPE = (UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type");
        AMBIGUOUS_CONTENT_TYPE = (BAD_REQUEST, "ambiguous-content-type", "Ambiguous Content-Type");
        PAYLOAD_TOO_LARGE = (PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large");
        REQUEST_TIMEOUT = (REQUEST_TIMEOUT, "request-timeout", "Request timeout");
        UNREADABLE_BODY = (BAD_REQUEST, "unreadable-body", "Unreadable body");
        INVALID_QUERY = (BAD_REQUEST, "invalid-query", "Invalid query string");
        NOT_FOUND = (NOT_FOUND, "not-found", "Not found");
        METHOD_NOT_ALLOWED = (METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed");
        DATABASE_UNAVAILABLE = (SERVICE_UNAVAILABLE, "database-unavailable", "Database unavailable");
        INTERNAL_ERROR = (INTERNAL_SERVER_ERROR, "internal-error", "Internal error");
    }
}

/// The slug of a problem response, left in the response's extensions for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemSlug(pub &'static str);

/// A member particular to some problem types (an RFC 9457 "extension member", an integer), e.g.
/// `available` on `insufficient-stock`. The service that sends it declares it once, as a constant:
/// the constant both sets it ([`Problem::with`]) and describes it in that service's OpenAPI
/// document, so the shared `Problem` carries no service's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemMember {
    pub name: &'static str,
    pub description: &'static str,
}

impl ProblemMember {
    /// Adds these members to the `Problem` schema of `document`. Panics when the document has no
    /// `Problem` schema: members are declared at start-up from names in the code, and the OpenAPI
    /// tests catch a missing one.
    pub fn declare(document: &mut utoipa::openapi::OpenApi, members: &[ProblemMember]) {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
        let schema =
            document.components.as_mut().and_then(|components| components.schemas.get_mut("Problem"));
        let Some(RefOr::T(Schema::Object(problem))) = schema else {
            panic!("the document has no Problem schema to declare members on");
        };
        for member in members {
            let schema = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .description(Some(member.description));
            problem.properties.insert(member.name.to_owned(), schema.into());
        }
    }
}

/// A problem response (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable name of the problem type; serialized as its `type` URI.
    #[serde(rename = "type", serialize_with = "type_uri")]
    #[schema(value_type = String, example = "https://eventline.dev/problems/validation-error")]
    pub slug: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Members particular to some problem types (RFC 9457 §3.2), set with [`Problem::with`]. The
    /// service that sends one declares it in its OpenAPI document ([`ProblemMember::declare`]).
    #[serde(flatten)]
    #[schema(ignore)]
    pub(crate) members: BTreeMap<&'static str, i64>,
    #[serde(skip)]
    pub retry_after_secs: Option<u32>,
}

fn type_uri<S: serde::Serializer>(slug: &&'static str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{TYPE_BASE}{slug}"))
}

impl Problem {
    /// A problem of type `kind`, with what happened this time in `detail`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            slug: kind.slug,
            title: kind.title,
            status: kind.status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            members: BTreeMap::new(),
            retry_after_secs: None,
        }
    }

    /// The same problem with `member` set to `value`.
    pub fn with(mut self, member: ProblemMember, value: i64) -> Self {
        self.members.insert(member.name, value);
        self
    }

    /// The same problem with a `Retry-After` of `secs`: a dependency is down, the client may retry.
    pub fn retry_after(self, secs: u32) -> Self {
        Problem { retry_after_secs: Some(secs), ..self }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Problem { errors, ..Problem::new(types::VALIDATION_ERROR, detail) }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(types::NOT_FOUND, detail)
    }

    /// An unexpected failure. The detail stays generic; the cause is logged where it happened.
    pub fn internal() -> Self {
        Problem::new(types::INTERNAL_ERROR, "The request could not be completed; the error was logged.")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after_secs;
        let slug = self.slug;
        let mut response = (status, Json(self)).into_response();
        response.extensions_mut().insert(ProblemSlug(slug));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON request body, checked and parsed, whose failures are problems: wrong content type → 415,
/// over the route's size limit → 413, not JSON → 400. [`JsonBody::parse`] then reads it into a type,
/// reporting a wrong shape as 422 with the path of the offending field (`items[2].price`).
#[derive(Debug, Clone)]
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.headers().get_all(header::CONTENT_TYPE).iter().nth(1).is_some() {
            // Two media types for one body: which one the client meant is a guess.
            return Err(Problem::new(
                types::AMBIGUOUS_CONTENT_TYPE,
                "Send exactly one `Content-Type` header, `application/json`.",
            ));
        }
        if !has_json_content_type(req.headers()) {
            return Err(Problem::new(
                types::UNSUPPORTED_MEDIA_TYPE,
                "Send the body as JSON with `Content-Type: application/json`.",
            ));
        }
        // A body that trickles in holds a connection and a handler: it gets a deadline.
        let BodyReadTimeout(limit) = req.extensions().get().copied().unwrap_or_default();
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state)).await.map_err(|_| {
            Problem::new(
                types::REQUEST_TIMEOUT,
                format!("The request body did not arrive within {} s; nothing was done.", limit.as_secs()),
            )
        })?;
        let bytes = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(types::PAYLOAD_TOO_LARGE, "The request body is over this endpoint's size limit.")
            } else {
                Problem::new(types::UNREADABLE_BODY, rejection.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Problem::new(types::MALFORMED_JSON, format!("The body is not valid JSON: {e}")))
    }
}

impl JsonBody {
    /// Reads the body into `T`; a field of the wrong type, a missing or an unknown one is a 422.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, Problem> {
        parse_value(self.0, "").map_err(|e| Problem::validation(vec![e]))
    }
}

/// `axum::extract::Query` whose rejection is a problem (400 `invalid-query`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // A parameter with an empty value (`?cursor=`) is read as absent, as an empty header is.
        let query = parts.uri.query().unwrap_or_default();
        let given: Vec<&str> =
            query.split('&').filter(|pair| pair.contains('=') && !pair.ends_with('=')).collect();
        let uri: axum::http::Uri = format!("/?{}", given.join("&"))
            .parse()
            .map_err(|_| Problem::new(types::INVALID_QUERY, "The query string cannot be read."))?;
        axum::extract::Query::<T>::try_from_uri(&uri)
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|rejection| Problem::new(types::INVALID_QUERY, rejection.body_text()))
    }
}

/// Reads `value` into `T`, reporting the failing field's path below `prefix` (e.g. `commands[3].`).
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = match (path.as_str(), prefix.trim_end_matches('.')) {
            (".", "") => ".".to_owned(),
            (".", whole) => whole.to_owned(),
            (path, _) => format!("{prefix}{path}"),
        };
        FieldError::new(field, error.into_inner().to_string())
    })
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Fallback for routes that do not exist.
pub async fn route_not_found() -> Problem {
    Problem::not_found("No such route.")
}

/// Fallback for a known route called with the wrong method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(types::METHOD_NOT_ALLOWED, "This route does not accept that method.")
}
