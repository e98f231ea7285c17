//! The command service's configuration, from flags or the environment.

use std::net::SocketAddr;

use clap::Parser;
use eventline_runtime::config::KafkaConfig;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "eventline-command",
    version,
    about = "eventline command service"
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "EVENTLINE_COMMAND_ADDR", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// How long an append may wait for the broker's acknowledgement before the command is
    /// answered 503 (librdkafka's `message.timeout.ms`).
    #[arg(long, env = "EVENTLINE_APPEND_TIMEOUT_MS", default_value_t = 5000)]
    pub append_timeout_ms: u64,
}
