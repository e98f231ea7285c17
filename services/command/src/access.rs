//! Who may send commands, and how fast: bearer tokens (`EVENTLINE_API_TOKENS`, compared in
//! constant time) and a token bucket per client (429 with `Retry-After` when it is empty). A
//! client is its token, or its address when tokens are off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eventline_runtime::problem::Problem;

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

/// Requests per second and burst of each client's bucket; 0 turns limiting off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// The guard's state.
pub struct Access {
    digests: SecretDigests,
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before idle ones are forgotten.
const MAX_CLIENTS: usize = 10_000;

impl Access {
    pub fn new(tokens: &ApiTokens, limit: RateLimit) -> Arc<Access> {
        let digests = SecretDigests::new(tokens.0.iter().map(String::as_str));
        Arc::new(Access { digests, limit, buckets: Mutex::new(HashMap::new()) })
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

    /// Takes one request from `client`'s bucket; how long to wait when it is empty.
    fn admit(&self, client: &str) -> Result<(), f64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let now = Instant::now();
        if buckets.len() >= MAX_CLIENTS {
            let (rate, burst) = (self.limit.per_second, self.limit.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket =
            buckets.entry(client.to_owned()).or_insert(Bucket { tokens: self.limit.burst.max(1.0), at: now });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.limit.burst.max(1.0));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / self.limit.per_second)
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
        Ok(None) => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |ConnectInfo(address)| address.ip().to_string()),
        Err(problem) => {
            let mut response = problem.into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if let Err(wait) = access.admit(&client) {
        let seconds = wait.ceil().max(1.0) as u32;
        let problem = Problem::new(
            problems::RATE_LIMITED,
            format!(
                "This client may send {} commands per second (bursts of {}); retry after {seconds} s.",
                access.limit.per_second, access.limit.burst
            ),
        );
        return problem.retry_after(seconds).into_response();
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

    #[test]
    fn a_bucket_admits_its_burst_then_asks_to_wait() {
        let access = Access::new(&ApiTokens::default(), RateLimit { per_second: 10.0, burst: 3.0 });
        for _ in 0..3 {
            assert!(access.admit("a").is_ok());
        }
        let wait = access.admit("a").err().unwrap_or_default();
        assert!(wait > 0.0 && wait <= 0.1, "{wait}");
        assert!(access.admit("b").is_ok(), "clients have buckets of their own");
    }
}
