//! A Redis connection made on first use and re-made after failures, with short timeouts: Redis is
//! never on eventline's critical path, so an outage must cost a quick error, not a stall.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::config::RedisConfig;

/// A client for the configured server: with a CA or a client certificate, a TLS client that
/// trusts that CA and presents that certificate (`rediss://` URLs only).
fn client(config: &RedisConfig) -> redis::RedisResult<redis::Client> {
    if config.ca_cert.is_none() && config.client_cert.is_none() {
        return redis::Client::open(config.url.as_str());
    }
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "unreadable TLS file",
                format!("{}: {e}", path.display()),
            ))
        })
    };
    let client_tls = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? })
        }
        _ => None,
    };
    let root_cert = config.ca_cert.as_ref().map(read).transpose()?;
    redis::Client::build_with_tls(config.url.as_str(), redis::TlsCertificates { client_tls, root_cert })
}

pub struct LazyRedis {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
}

impl LazyRedis {
    /// Checks the URL and reads the TLS files; nothing is connected yet.
    pub fn new(config: &RedisConfig) -> redis::RedisResult<Self> {
        Ok(LazyRedis { client: client(config)?, connection: Mutex::new(None) })
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
