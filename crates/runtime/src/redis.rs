//! A Redis connection made on first use and re-made after failures, with short timeouts: Redis is
//! never on eventline's critical path, so an outage must cost a quick error, not a stall.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

pub struct LazyRedis {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
}

impl LazyRedis {
    /// Checks the URL only; nothing is connected yet.
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(LazyRedis { client: redis::Client::open(url)?, connection: Mutex::new(None) })
    }

    /// A connection (cheap to clone), connecting first if needed within about a second.
    pub async fn get(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Whether Redis answers a PING.
    pub async fn ping(&self) -> bool {
        let Ok(mut connection) = self.get().await else { return false };
        redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
    }
}

/// A client span for one Redis command or pipeline (OpenTelemetry database conventions).
pub fn span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = operation,
    )
}
