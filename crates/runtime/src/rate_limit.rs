//! A token bucket per client: over its rate a client is answered `429 rate-limited` with
//! `Retry-After`, and other clients are not slowed. Clients are keyed by who they are (the
//! authenticated principal), or by address when the service lets everyone in.
//!
//! Our own rather than a crate's: it is twenty lines, keyed by strings the services choose, and
//! bounded in memory (idle buckets are forgotten past `MAX_CLIENTS`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Principal;
use crate::problem::{Problem, types};

/// Requests per second and burst of each client's bucket; a rate of 0 turns limiting off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    /// The limit as configured: a negative rate is off, a burst is at least one request.
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimit { per_second: per_second.max(0.0), burst: burst.max(1.0) }
    }
}

/// Every client's bucket.
pub struct RateLimiter {
    limit: RateLimit,
    /// What the limit counts, for the refusal ("commands", "reads").
    what: &'static str,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before idle ones are forgotten.
const MAX_CLIENTS: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit, what: &'static str) -> Arc<RateLimiter> {
        Arc::new(RateLimiter { limit, what, buckets: Mutex::new(HashMap::new()) })
    }

    /// Takes one request from `client`'s bucket; how long to wait when it is empty.
    pub fn admit(&self, client: &str) -> Result<(), f64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let (rate, burst) = (self.limit.per_second, self.limit.burst.max(1.0));
        let now = Instant::now();
        if buckets.len() >= MAX_CLIENTS {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / rate)
        }
    }

    /// Admits `client`, or the `429` to answer it.
    pub fn check(&self, client: &str) -> Result<(), Problem> {
        self.admit(client).map_err(|wait| {
            let seconds = wait.ceil().max(1.0) as u32;
            let detail = format!(
                "This client may send {} {} per second (bursts of {}); retry after {seconds} s.",
                self.limit.per_second, self.what, self.limit.burst
            );
            Problem::new(types::RATE_LIMITED, detail).retry_after(seconds)
        })
    }
}

/// The client a request comes from by address: the peer's IP (a proxy in front makes all its
/// clients one; the forwarding headers are not trusted).
pub fn client_address(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |ConnectInfo(address)| address.ip().to_string())
}

/// The client a request is counted as: the authenticated caller (see `auth::require`, which runs
/// first), or its address when the service lets everyone in.
pub fn client(request: &Request) -> String {
    match request.extensions().get::<Principal>() {
        Some(principal) if !principal.is_anonymous() => format!("principal:{}", principal.name),
        _ => client_address(request),
    }
}

/// Middleware limiting each client.
pub async fn by_client(State(limiter): State<Arc<RateLimiter>>, request: Request, next: Next) -> Response {
    match limiter.check(&client(&request)) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_asks_to_wait() {
        let limiter = RateLimiter::new(RateLimit::new(10.0, 3.0), "requests");
        for _ in 0..3 {
            assert!(limiter.admit("a").is_ok());
        }
        let wait = limiter.admit("a").err().unwrap_or_default();
        assert!(wait > 0.0 && wait <= 0.1, "{wait}");
        assert!(limiter.admit("b").is_ok(), "clients have buckets of their own");
    }

    #[test]
    fn a_rate_of_zero_admits_everything() {
        let limiter = RateLimiter::new(RateLimit::new(0.0, 1.0), "requests");
        assert!((0..1000).all(|_| limiter.admit("a").is_ok()));
    }
}
