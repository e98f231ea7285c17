//! The command service's configuration, from flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use eventline_runtime::config::{KafkaConfig, RedisConfig};

#[derive(Debug, Clone, Parser)]
#[command(name = "eventline-command", version, about = "eventline command service")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "EVENTLINE_COMMAND_ADDR", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    /// How long an append may wait for the broker's acknowledgement before the command is
    /// answered 503 (librdkafka's `message.timeout.ms`). With the queue wait on top the answer
    /// comes within about 1.06 × this.
    #[arg(long, env = "EVENTLINE_APPEND_TIMEOUT_MS", default_value_t = 4000)]
    pub append_timeout_ms: u64,
    /// How long a completed request is remembered under its `Idempotency-Key`, in seconds.
    #[arg(long, env = "EVENTLINE_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,
}

impl Config {
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs.max(1))
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
