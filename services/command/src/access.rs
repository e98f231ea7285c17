//! Who may send commands, and how fast: bearer tokens (`EVENTLINE_API_TOKENS`, compared in
//! constant time) and a token bucket per client (429 with `Retry-After` when it is empty). A
//! client is its token, or its address when tokens are off.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eventline_runtime::problem::Problem;
use eventline_runtime::rate_limit::{self, RateLimit, RateLimiter};

use crate::problems;
use eventline_runtime::secrets::{SecretDigests, bearer};

/// The bearer tokens clients must present, as configured (comma-separated). Shown redacted.
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<String>);

impl ApiTokens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Why the list is not usable, naming a token by its place, never by its value.
    pub fn check(&self) -> Result<(), String> {
        match self.0.iter().position(|t| t.len() < 16) {
            Some(short) => Err(format!("token {} of the list is shorter than 16 characters", short + 1)),
            None => Ok(()),
        }
    }
}

/// Parsing never fails, so that an error message can never echo a secret: `check` validates.
impl std::str::FromStr for ApiTokens {
    type Err = std::convert::Infallible;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Ok(ApiTokens(list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()))
    }
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} redacted)", self.0.len())
    }
}

/// The guard's state.
pub struct Access {
    digests: SecretDigests,
    limiter: Arc<RateLimiter>,
}

impl Access {
    pub fn new(tokens: &ApiTokens, limit: RateLimit) -> Arc<Access> {
        let digests = SecretDigests::new(tokens.0.iter().map(String::as_str));
        Arc::new(Access { digests, limiter: RateLimiter::new(limit, "commands") })
    }

    /// Which client presented `header` (an `Authorization` value): `Ok(None)` when tokens are off,
    /// the matching token's digest prefix when on, an error when missing or wrong.
    fn authenticate(&self, header: Option<&str>) -> Result<Option<String>, Problem> {
        if self.digests.is_empty() {
            return Ok(None);
        }
        let presented =
            bearer(header).ok_or_else(|| unauthorized("Send `Authorization: Bearer <token>`."))?;
        match self.digests.position(presented) {
            Some(i) => Ok(Some(format!("token-{i}"))),
            None => Err(unauthorized("The bearer token is not valid.")),
        }
    }
}

fn unauthorized(detail: &'static str) -> Problem {
    Problem::new(problems::UNAUTHORIZED, detail)
}

/// The middleware in front of every command route.
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let client = match access.authenticate(authorization) {
        Ok(Some(token)) => token,
        Ok(None) => rate_limit::client_address(&request),
        Err(problem) => {
            let mut response = problem.into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if let Err(problem) = access.limiter.check(&client) {
        return problem.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &str) -> ApiTokens {
        list.parse().unwrap_or_default()
    }

    #[test]
    fn only_configured_tokens_authenticate() {
        let access = Access::new(
            &tokens("first-token-0123456789, second-token-012345678"),
            RateLimit { per_second: 0.0, burst: 0.0 },
        );
        assert_eq!(
            access.authenticate(Some("Bearer second-token-012345678")).ok(),
            Some(Some("token-1".into()))
        );
        assert!(access.authenticate(Some("Bearer second-token-01234567")).is_err());
        assert!(access.authenticate(Some("Basic Zm9vOmJhcg==")).is_err());
        assert!(access.authenticate(None).is_err());
    }

    #[test]
    fn without_tokens_everyone_is_let_in() {
        let access = Access::new(&ApiTokens::default(), RateLimit { per_second: 0.0, burst: 0.0 });
        assert_eq!(access.authenticate(None).ok(), Some(None));
    }

    #[test]
    fn short_tokens_are_refused_and_never_shown() {
        let error = tokens("ok-token-0123456789,short").check().err().unwrap_or_default();
        assert_eq!(error, "token 2 of the list is shorter than 16 characters");
        assert_eq!(format!("{:?}", tokens("a-secret-token-0123456789")), "ApiTokens(1 redacted)");
    }
}
