//! Idempotency keys, remembered in Redis.
//!
//! A request with an `Idempotency-Key` first claims the key (`SET NX` with a short lease) together
//! with the request's fingerprint (method, route and canonical JSON body). The claimant appends and
//! stores its response under the key for the TTL; a repeat with the same fingerprint gets that
//! response back, one with another fingerprint is refused, and concurrent repeats wait for the
//! claimant. The ids of the request (entity ids and event ids) are derived from key and
//! fingerprint, so even a retry after a crash between append and response appends the very same
//! events, which the projector dedups by event id.

use eventline_runtime::config::RedisConfig;
use std::time::Duration;

use eventline_runtime::redis::{LazyRedis, span as redis_span};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

/// How long a claim holds without a stored response; longer than any append can take, so only a
/// crashed claimant's claim expires.
const CLAIM_LEASE: Duration = Duration::from_secs(15);
/// How long a concurrent repeat waits for the claimant's response.
const WAIT_FOR_CLAIMANT: Duration = Duration::from_secs(10);
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// A response worth replaying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub consistency_token: Option<String>,
    pub body: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    response: Option<StoredResponse>,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The key is ours: do the work, then `complete` (or `release` on failure).
    Claimed,
    /// The same request was already answered: answer the same.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Conflict,
    /// The same request is still being worked on elsewhere.
    InProgress,
}

#[derive(Debug, thiserror::Error)]
#[error("Redis is unavailable for idempotency keys: {0}")]
pub struct StoreUnavailable(String);

impl From<redis::RedisError> for StoreUnavailable {
    fn from(error: redis::RedisError) -> Self {
        StoreUnavailable(error.to_string())
    }
}

/// The fingerprint of a request and the seed its ids are derived from.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    hex: String,
    seed: [u8; 32],
}

impl Fingerprint {
    /// `route` names the operation (method and path); `body` is the parsed JSON, whose
    /// serialization is canonical (object keys sorted, numbers as written).
    pub fn of(key: &str, route: &str, body: &serde_json::Value) -> Self {
        let request = Sha256::new()
            .chain_update(route.as_bytes())
            .chain_update([0])
            .chain_update(serde_json::to_vec(body).unwrap_or_default())
            .finalize();
        let seed = Sha256::new()
            .chain_update(b"eventline idempotency v1\0")
            .chain_update(key.as_bytes())
            .chain_update([0])
            .chain_update(request)
            .finalize();
        Fingerprint { hex: hex(&request), seed: seed.into() }
    }

    /// Seed for the ids of this request (see `decide::IdGen::derived`).
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a header value can be an idempotency key: 1–255 visible ASCII characters.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The store; connects lazily so the service runs (without keys) while Redis is down.
pub struct IdempotencyStore {
    redis: LazyRedis,
    ttl: Duration,
}

impl IdempotencyStore {
    pub fn new(redis: &RedisConfig, ttl: Duration) -> redis::RedisResult<Self> {
        Ok(IdempotencyStore { redis: LazyRedis::new(redis)?, ttl })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreUnavailable> {
        Ok(self.redis.get().await?)
    }

    fn redis_key(key: &str) -> String {
        format!("eventline:idempotency:{key}")
    }

    /// Claims `key` for a request, or finds what became of an earlier one.
    pub async fn claim(&self, key: &str, fingerprint: &Fingerprint) -> Result<Claim, StoreUnavailable> {
        let mut redis = self.connection().await?;
        let redis_key = Self::redis_key(key);
        let pending = serde_json::to_string(&Record { fingerprint: fingerprint.hex.clone(), response: None })
            .map_err(|e| StoreUnavailable(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + WAIT_FOR_CLAIMANT;
        loop {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(&redis_key)
                .arg(&pending)
                .arg("NX")
                .arg("PX")
                .arg(CLAIM_LEASE.as_millis() as u64)
                .query_async(&mut redis)
                .instrument(redis_span("SET"))
                .await?;
            if claimed.is_some() {
                return Ok(Claim::Claimed);
            }
            let existing: Option<String> = redis::cmd("GET")
                .arg(&redis_key)
                .query_async(&mut redis)
                .instrument(redis_span("GET"))
                .await?;
            // Gone between SET and GET (lease expired, or released): try to claim again.
            let Some(existing) = existing else { continue };
            let record: Record = match serde_json::from_str(&existing) {
                Ok(record) => record,
                Err(_) => return Ok(Claim::Conflict),
            };
            if record.fingerprint != fingerprint.hex {
                return Ok(Claim::Conflict);
            }
            if let Some(response) = record.response {
                return Ok(Claim::Replay(response));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Claim::InProgress);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stores the response of a claimed key for the TTL.
    pub async fn complete(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        response: StoredResponse,
    ) -> Result<(), StoreUnavailable> {
        let mut redis = self.connection().await?;
        let record =
            serde_json::to_string(&Record { fingerprint: fingerprint.hex.clone(), response: Some(response) })
                .map_err(|e| StoreUnavailable(e.to_string()))?;
        let _: () = redis::cmd("SET")
            .arg(Self::redis_key(key))
            .arg(record)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut redis)
            .instrument(redis_span("SET"))
            .await?;
        Ok(())
    }

    /// Gives a claim up after a failure, so a retry can proceed at once. Best effort: if it
    /// fails, the lease runs out by itself.
    pub async fn release(&self, key: &str) {
        let Ok(mut redis) = self.connection().await else { return };
        let result: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(Self::redis_key(key))
            .query_async(&mut redis)
            .instrument(redis_span("DEL"))
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "Releasing an idempotency claim failed; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_ignore_key_order_but_not_values_routes_or_keys() {
        let a = Fingerprint::of("k", "POST /users", &json!({"email": "a@b.co", "firstName": "A"}));
        let b = Fingerprint::of(
            "k",
            "POST /users",
            &serde_json::from_str(r#"{"firstName":"A","email":"a@b.co"}"#).unwrap(),
        );
        assert_eq!(a.hex, b.hex);
        assert_eq!(a.seed, b.seed);
        let other_value = Fingerprint::of("k", "POST /users", &json!({"email": "x@b.co", "firstName": "A"}));
        let other_route = Fingerprint::of("k", "POST /orders", &json!({"email": "a@b.co", "firstName": "A"}));
        let other_key = Fingerprint::of("j", "POST /users", &json!({"email": "a@b.co", "firstName": "A"}));
        assert_ne!(a.hex, other_value.hex);
        assert_ne!(a.hex, other_route.hex);
        assert_eq!(a.hex, other_key.hex, "the request is the same");
        assert_ne!(a.seed, other_key.seed, "but its ids are the key's own");
    }

    #[test]
    fn key_syntax() {
        assert!(is_valid_key("order-2026-11-23-0001"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("has space"));
        assert!(!is_valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(!is_valid_key("ü"));
    }
}
