//! What a query handler takes from its request, each parsed once and refused with a problem when
//! it cannot be: the id or sku in its path, the log position it must read after, and the entity
//! tag the client holds. Handlers name these in their arguments instead of parsing headers and
//! path segments by hand; axum runs them in argument order, before the handler's body.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventline_events::ConsistencyToken;
use eventline_read_models::documents::{self, Tagged};
use eventline_runtime::http::{CONSISTENCY_TOKEN, is_empty_field};
use eventline_runtime::problem::Problem;
use serde::Serialize;
use uuid::Uuid;

use crate::problems;

/// The `{id}` of a user's path.
pub struct UserId(pub Uuid);

/// The `{id}` of an order's path.
pub struct OrderId(pub Uuid);

/// The `{sku}` of an inventory path.
pub struct Sku(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Ok(UserId(parse_id(&path_segment(parts, state, "user id").await?, "user")?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OrderId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Ok(OrderId(parse_id(&path_segment(parts, state, "order id").await?, "order")?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Sku {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let sku = path_segment(parts, state, "sku").await?;
        if eventline_events::is_valid_sku(&sku) {
            return Ok(Sku(sku));
        }
        Err(Problem::new(problems::INVALID_ID, format!("A sku is {}.", eventline_events::SKU_RULE)))
    }
}

/// The route's one path parameter, `what` (for the problem when it cannot be read: a segment
/// that percent-decodes to bytes that are not UTF-8, such as `%FF`).
async fn path_segment<S: Send + Sync>(parts: &mut Parts, state: &S, what: &str) -> Result<String, Problem> {
    let Path(segment) = Path::<String>::from_request_parts(parts, state).await.map_err(|rejection| {
        Problem::new(
            problems::INVALID_ID,
            format!("The {what} in the path cannot be read: {}", rejection.body_text()),
        )
    })?;
    Ok(segment)
}

/// Parses a UUID (a path segment or a parameter), or says clearly why not.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw).map_err(|_| {
        Problem::new(
            problems::INVALID_ID,
            format!("{what} id {:?} is not a UUID", raw.chars().take(64).collect::<String>()),
        )
    })
}

/// The position in the log a read must reflect: the request's `Consistency-Token`, if it has one
/// (read-your-writes). The read models are asked for it by `AppState::read_models`, once the
/// rest of the request has been checked.
pub struct ReadAfter(pub Option<ConsistencyToken>);

/// Where a live stream resumes: the `Last-Event-ID` its client sends back on reconnecting (a
/// consistency token), if any.
pub struct ResumeAfter(pub Option<ConsistencyToken>);

impl<S: Send + Sync> FromRequestParts<S> for ReadAfter {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        token_header(parts, CONSISTENCY_TOKEN.as_str()).map(ReadAfter)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ResumeAfter {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        token_header(parts, "Last-Event-ID").map(ResumeAfter)
    }
}

/// The consistency token in header `name` (absent or blank: none).
fn token_header(parts: &Parts, name: &str) -> Result<Option<ConsistencyToken>, Problem> {
    let Some(value) = parts.headers.get(name).filter(|v| !is_empty_field(v)) else {
        return Ok(None);
    };
    let token = value.to_str().ok().and_then(|v| v.parse().ok()).ok_or_else(|| {
        Problem::new(
            problems::INVALID_CONSISTENCY_TOKEN,
            format!(
                "Pass the {name} header exactly as it was given (a consistency token, e.g. \"0:15,3:7\")."
            ),
        )
    })?;
    Ok(Some(token))
}

/// The request's `If-None-Match`: the entity tags the client holds already. A document is
/// answered through it (`answer`): `304` when the client has it, else `200` with its ETag.
pub struct IfNoneMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

impl IfNoneMatch {
    /// Whether the client holds `etag` already (or anything, with `*`).
    fn holds(&self, etag: &str) -> bool {
        let Some(value) = self.0.as_ref().and_then(|v| v.to_str().ok()) else { return false };
        value.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
    }

    /// `304` with the ETag when the client holds the document, else `200` with it as JSON.
    pub fn answer(&self, document: Result<Tagged, Problem>) -> Result<Response, Problem> {
        let Tagged { body, etag } = document?;
        let etag_value = HeaderValue::from_str(&etag).map_err(|_| Problem::internal())?;
        if self.holds(&etag) {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
        }
        let json = HeaderValue::from_static("application/json");
        Ok((StatusCode::OK, [(header::ETAG, etag_value), (header::CONTENT_TYPE, json)], body).into_response())
    }
}

/// `body` as JSON, tagged by a digest of itself (a page, a list: no version fits).
pub fn by_digest(body: &impl Serialize) -> Result<Tagged, Problem> {
    let body = serde_json::to_string(body).map_err(unserializable)?;
    let etag = documents::digest_etag(body.as_bytes());
    Ok(Tagged { body, etag })
}

/// `body` as JSON, tagged by its aggregate's version (`"<version>"`), which a command on that
/// aggregate may send back as `If-Match`. Only for a body that changes exactly when its
/// aggregate gets an event.
pub fn by_version(body: &impl Serialize, version: i64) -> Result<Tagged, Problem> {
    let body = serde_json::to_string(body).map_err(unserializable)?;
    Ok(Tagged { body, etag: format!("\"{version}\"") })
}

/// A document assembled here, tagged as the projector tags the stored ones.
pub fn assembled(document: serde_json::Result<Tagged>) -> Result<Tagged, Problem> {
    document.map_err(unserializable)
}

/// A read model that cannot be serialized: logged here, a plain 500 for the client.
fn unserializable(error: serde_json::Error) -> Problem {
    tracing::error!(%error, "Serializing a read model failed");
    Problem::internal()
}
