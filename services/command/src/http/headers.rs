//! The request headers a command may carry beside its body: `Idempotency-Key` and `If-Match`.

use axum::http::{HeaderMap, HeaderName};
use eventline_runtime::http::is_empty_field;
use eventline_runtime::problem::Problem;

use crate::idempotency;
use crate::problems;

/// Header naming a request's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a response replayed for a repeated idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's `Idempotency-Key`, if it sent one.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    match value.to_str() {
        Ok(key) if idempotency::is_valid_key(key) => Ok(Some(key.to_owned())),
        _ => Err(Problem::new(
            problems::INVALID_IDEMPOTENCY_KEY,
            format!("An Idempotency-Key is 1 to {} visible ASCII characters.", idempotency::MAX_KEY_LEN),
        )),
    }
}

/// `If-Match: "<version>"`, the version the client last read (the query API's ETag): 1 to 18
/// digits in double quotes, as the document's pattern says. An empty value is an empty list of
/// entity tags (RFC 9110, 5.6.1), the same as no header.
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let mut values = headers.get_all(axum::http::header::IF_MATCH).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let single = values.next().is_none();
    if single && is_empty_field(value) {
        return Ok(None);
    }
    let digits = |v: &str| !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit());
    let version = value
        .to_str()
        .ok()
        .filter(|_| single)
        .and_then(|v| v.trim().strip_prefix('"')?.strip_suffix('"').filter(|v| digits(v)))
        .and_then(|v| v.parse::<i64>().ok());
    match version {
        Some(version) => Ok(Some(version)),
        None => Err(Problem::new(
            problems::INVALID_IF_MATCH,
            "If-Match is one version in double quotes, as the query API's ETag gives it, e.g. \"3\".",
        )),
    }
}
