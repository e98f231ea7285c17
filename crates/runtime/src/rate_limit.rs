//! A token bucket per client: over its rate a client is answered `429 rate-limited` with
//! `Retry-After`, and other clients are not slowed. Clients are keyed by who they are (the
//! authenticated principal), or by address when the service lets everyone in.
//!
//! Our own rather than a crate's (`governor` keys buckets the same way but would bring a
//! concurrent map and a clock crate for what is a short function here): keyed by strings the
//! services choose, and bounded in memory. At most `MAX_CLIENTS` buckets are kept; when that many
//! clients are tracked, buckets that have refilled are forgotten (at most once a second, so a
//! full map costs a request a lookup, not a scan), and clients still beyond the bound share one
//! overflow bucket: a flood of new identities neither grows the map nor escapes the limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Most clients with a bucket of their own.
    max_clients: usize,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    by_client: HashMap<String, Bucket>,
    /// Shared by the clients beyond `max_clients`.
    overflow: Bucket,
    /// When refilled buckets were last forgotten.
    swept_at: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, at: now }
    }

    /// Its tokens at `now`, refilled at `rate` up to `burst`.
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst)
    }

    /// Takes one token at `now`; how long to wait when there is none.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), f64> {
        self.tokens = self.refilled(now, rate, burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / rate)
        }
    }
}

/// Buckets kept before refilled ones are forgotten.
const MAX_CLIENTS: usize = 10_000;

/// Least time between two sweeps of a full map.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl RateLimiter {
    pub fn new(limit: RateLimit, what: &'static str) -> Arc<RateLimiter> {
        RateLimiter::bounded(limit, what, MAX_CLIENTS)
    }

    fn bounded(limit: RateLimit, what: &'static str, max_clients: usize) -> Arc<RateLimiter> {
        let now = Instant::now();
        let buckets = Buckets {
            by_client: HashMap::new(),
            overflow: Bucket::full(limit.burst, now),
            swept_at: now.checked_sub(SWEEP_EVERY).unwrap_or(now),
        };
        Arc::new(RateLimiter { limit, what, max_clients, buckets: Mutex::new(buckets) })
    }

    /// Takes one request from `client`'s bucket; how long to wait when it is empty.
    pub fn admit(&self, client: &str) -> Result<(), f64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut guard) = self.buckets.lock() else { return Ok(()) };
        let buckets = &mut *guard;
        let (rate, burst) = (self.limit.per_second, self.limit.burst.max(1.0));
        let now = Instant::now();
        if let Some(bucket) = buckets.by_client.get_mut(client) {
            return bucket.take(now, rate, burst);
        }
        if buckets.by_client.len() >= self.max_clients && now.duration_since(buckets.swept_at) >= SWEEP_EVERY
        {
            buckets.swept_at = now;
            buckets.by_client.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        if buckets.by_client.len() >= self.max_clients {
            return buckets.overflow.take(now, rate, burst);
        }
        let bucket = buckets.by_client.entry(client.to_owned()).or_insert(Bucket::full(burst, now));
        bucket.take(now, rate, burst)
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

    #[test]
    fn clients_beyond_the_bound_share_one_bucket_and_the_map_stays_bounded() {
        let limiter = RateLimiter::bounded(RateLimit::new(1.0, 1.0), "requests", 3);
        for client in ["a", "b", "c"] {
            assert!(limiter.admit(client).is_ok());
        }
        // The map is full of drained buckets: newcomers share the overflow bucket.
        assert!(limiter.admit("d").is_ok(), "the overflow bucket's one request");
        assert!(limiter.admit("e").is_err(), "shared with d");
        assert!(limiter.admit("a").is_err(), "a keeps its own (drained) bucket");
        let tracked = limiter.buckets.lock().map(|b| b.by_client.len()).unwrap_or_default();
        assert_eq!(tracked, 3);
    }

    #[test]
    fn refilled_buckets_are_forgotten_to_make_room() {
        let limiter = RateLimiter::bounded(RateLimit::new(1000.0, 1.0), "requests", 2);
        assert!(limiter.admit("a").is_ok());
        assert!(limiter.admit("b").is_ok());
        std::thread::sleep(Duration::from_millis(5)); // both refill (1 ms each)
        assert!(limiter.admit("c").is_ok());
        let tracked: Vec<String> =
            limiter.buckets.lock().map(|b| b.by_client.keys().cloned().collect()).unwrap_or_default();
        assert_eq!(tracked, ["c"], "a and b were full again, so forgotten");
    }
}
