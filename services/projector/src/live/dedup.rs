//! The Redis fast path for dedup: event ids applied recently, so that redelivered events are
//! recognised without a database round trip.
//!
//! It is only ever an optimisation. An id is remembered only after its transaction committed, so
//! "known" always means "applied"; keys are scoped by the database's projection id, so ids
//! remembered for another database (or an earlier incarnation of this one) never hide an event.
//! When Redis is down, slow or flushed, every id simply goes to PostgreSQL, which alone decides.

use eventline_runtime::config::RedisConfig;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Instrument as _;

use eventline_runtime::redis::LazyRedis;
use uuid::Uuid;

/// How long an applied id is remembered: redeliveries come within minutes, not weeks.
const REMEMBER_SECS: u64 = 7 * 24 * 3600;

pub struct FastPath {
    redis: LazyRedis,
    available: AtomicBool,
}

/// The key remembering that `id` was applied to the projection `projection_id`.
fn key(projection_id: Uuid, id: &Uuid) -> String {
    format!("eventline:applied:{projection_id}:{id}")
}

impl FastPath {
    pub fn new(redis: &RedisConfig) -> redis::RedisResult<Self> {
        Ok(FastPath { redis: LazyRedis::new(redis)?, available: AtomicBool::new(true) })
    }

    /// Which of `ids` Redis says were applied to the projection `projection_id`; none when Redis
    /// cannot say.
    pub async fn known(&self, projection_id: Uuid, ids: &[Uuid]) -> HashSet<Uuid> {
        if ids.is_empty() {
            return HashSet::new();
        }
        let keys: Vec<String> = ids.iter().map(|id| key(projection_id, id)).collect();
        let result: redis::RedisResult<Vec<Option<u8>>> = async {
            let mut connection = self.redis.get().await?;
            redis::cmd("MGET").arg(&keys).query_async(&mut connection).await
        }
        .instrument(eventline_runtime::redis::span("MGET"))
        .await;
        match result {
            Ok(values) => {
                self.mark(true, None);
                let known: HashSet<Uuid> =
                    ids.iter().zip(values).filter(|(_, v)| v.is_some()).map(|(id, _)| *id).collect();
                crate::metrics::fast_path("hit", known.len());
                crate::metrics::fast_path("miss", ids.len() - known.len());
                known
            }
            Err(error) => {
                self.mark(false, Some(&error));
                crate::metrics::fast_path("unavailable", ids.len());
                HashSet::new()
            }
        }
    }

    /// Remembers ids whose transaction has committed. Best effort.
    pub async fn remember(&self, projection_id: Uuid, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        let result: redis::RedisResult<()> = async {
            let mut connection = self.redis.get().await?;
            let mut pipeline = redis::pipe();
            for id in ids {
                pipeline.cmd("SET").arg(key(projection_id, id)).arg(1).arg("EX").arg(REMEMBER_SECS).ignore();
            }
            pipeline.query_async(&mut connection).await
        }
        .instrument(eventline_runtime::redis::span("SET"))
        .await;
        self.mark(result.is_ok(), result.as_ref().err());
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> bool {
        self.redis.ping().await
    }

    /// Logs transitions only, so an outage is one warning, not one per batch.
    fn mark(&self, available: bool, error: Option<&redis::RedisError>) {
        let was = self.available.swap(available, Ordering::Relaxed);
        match (was, available) {
            (true, false) => tracing::warn!(
                error = error.map(ToString::to_string),
                "Redis unavailable: deduplicating through PostgreSQL alone until it is back"
            ),
            (false, true) => tracing::info!("Redis is back: dedup fast path restored"),
            _ => {}
        }
        crate::metrics::fast_path_available(available);
    }
}
