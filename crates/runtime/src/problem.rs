//! RFC 9457 problem details (`application/problem+json`), the one error shape of every HTTP API,
//! and a JSON extractor whose rejections are problems too.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Base of every problem `type` URI; each type is documented in `docs/problems.md`.
const TYPE_BASE: &str = "https://eventline.dev/problems/";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer-like path of the field, e.g. `email` or `items[2].price`.
    pub field: String,
    /// What is wrong with it, for people.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A problem response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    /// A problem of a stable `slug` (the last segment of its type URI).
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Problem {
            errors,
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-error",
                "Validation failed",
                detail,
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, slug, title, detail)
    }

    /// A dependency is down; the client may retry after `retry_after_secs`.
    pub fn unavailable(
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Problem {
            retry_after_secs: Some(retry_after_secs),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, title, detail)
        }
    }

    /// An unexpected failure. The detail stays generic; the cause is logged where it happened.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "The request could not be completed; the error was logged.",
        )
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after_secs;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `axum::Json` whose rejections are problem+json: malformed JSON → 400, a body of the wrong shape
/// → 422 with the offending field, wrong content type → 415, body over the limit → 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(json_rejection_problem)
    }
}

fn json_rejection_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // The inner serde error names the path and the reason: "email: missing field `email`".
            let text = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.body_text());
            let (field, message) = match text.split_once(": ") {
                Some((path, msg)) if !path.contains(' ') => (path.to_owned(), msg.to_owned()),
                _ => (".".to_owned(), text.clone()),
            };
            Problem::validation(vec![FieldError::new(field, message)])
        }
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(
            "malformed-json",
            "Malformed JSON",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "The request body is over this endpoint's size limit.",
            )
        }
        other => Problem::bad_request("unreadable-body", "Unreadable body", other.body_text()),
    }
}

/// Fallback for routes that do not exist.
pub async fn route_not_found() -> Problem {
    Problem::not_found("No such route.")
}

/// Fallback for a known route called with the wrong method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "This route does not accept that method.",
    )
}
