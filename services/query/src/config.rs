//! The query service's configuration, from flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use eventline_runtime::config::{DatabaseConfig, KafkaSecurity};

#[derive(Debug, Clone, Parser)]
#[command(name = "eventline-query", version, about = "eventline query service")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "EVENTLINE_QUERY_ADDR", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub serving: eventline_runtime::server::ServeConfig,
    #[command(flatten)]
    pub cors: eventline_runtime::cors::CorsConfig,
    /// Who may read.
    #[command(flatten)]
    pub access: eventline_runtime::auth::ApiAccess,
    /// Seconds a read may take before it is answered 503 (live streams are not limited).
    #[arg(long, env = "EVENTLINE_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub read_timeout_secs: u64,
    /// Reads per second each client (its token's name, or its address) may make; 0 turns rate limiting off.
    #[arg(long, env = "EVENTLINE_READ_RATE_LIMIT_PER_S", default_value_t = 5000.0)]
    pub read_rate_limit_per_s: f64,
    /// How many reads a client may make at once above that rate.
    #[arg(long, env = "EVENTLINE_READ_RATE_LIMIT_BURST", default_value_t = 10000.0)]
    pub read_rate_limit_burst: f64,
    /// The event topic whose projection consistency tokens refer to.
    #[arg(long = "topic", env = "EVENTLINE_TOPIC", default_value = "eventline.events")]
    pub topic: String,
    /// Kafka bootstrap servers of the event log, asked which log they serve (the read models are
    /// not served as current against another log); empty disables the check.
    #[arg(long = "brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// How to reach the brokers securely (the same settings as the other services).
    #[command(flatten)]
    pub kafka_security: KafkaSecurity,
    /// Longest wait for the projection to reach a request's Consistency-Token before answering
    /// 503, in milliseconds.
    #[arg(long, env = "EVENTLINE_CONSISTENCY_WAIT_MS", default_value_t = 2000)]
    pub consistency_wait_ms: u64,
    /// Changes a live stream may fall behind by (a client not reading) before it is sent `reset`
    /// and the current state instead.
    #[arg(long, env = "EVENTLINE_LIVE_BUFFER", default_value_t = 1024)]
    pub live_buffer: usize,
    /// Seconds between the comments that keep an idle live stream open through proxies.
    #[arg(long, env = "EVENTLINE_LIVE_HEARTBEAT_SECS", default_value_t = 15)]
    pub live_heartbeat_secs: u64,
}

impl Config {
    pub fn read_rate_limit(&self) -> eventline_runtime::rate_limit::RateLimit {
        eventline_runtime::rate_limit::RateLimit::new(self.read_rate_limit_per_s, self.read_rate_limit_burst)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs.max(1))
    }

    pub fn consistency_wait(&self) -> Duration {
        Duration::from_millis(self.consistency_wait_ms)
    }

    pub fn live_heartbeat(&self) -> Duration {
        Duration::from_secs(self.live_heartbeat_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
