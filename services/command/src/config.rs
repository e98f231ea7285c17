//! The command service's configuration, from flags or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventline_runtime::config::{DatabaseConfig, KafkaConfig, RedisConfig};

use eventline_runtime::auth::ApiAccess;
use eventline_runtime::rate_limit::RateLimit;

/// The command line: serve (the default), or operate the decision state.
#[derive(Debug, Parser)]
#[command(name = "eventline-command", version, about = "eventline command service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the command API (the default).
    Serve,
    /// The decision state the business rules are checked against.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum StateAction {
    /// Compare the decision state with a fold of the log; exit 1 if they differ. Decisions
    /// pause while the log is read.
    Verify,
    /// Replace the decision state with a fold of the log. Decisions pause meanwhile.
    Rebuild,
}

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
    /// Where the decision state is kept (schema `command_state`, beside the read models).
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub serving: eventline_runtime::server::ServeConfig,
    #[command(flatten)]
    pub cors: eventline_runtime::cors::CorsConfig,
    /// Deciders working at once; each decides every command waiting, in one transaction.
    #[arg(long, env = "EVENTLINE_DECIDERS", default_value_t = 2)]
    pub deciders: usize,
    /// How long an append may wait for the broker's acknowledgement before the command is
    /// answered 503 (librdkafka's `message.timeout.ms`). With the queue wait on top the answer
    /// comes within about 1.06 × this.
    #[arg(long, env = "EVENTLINE_APPEND_TIMEOUT_MS", default_value_t = 4000)]
    pub append_timeout_ms: u64,
    /// How long a completed request is remembered under its `Idempotency-Key`, in seconds.
    #[arg(long, env = "EVENTLINE_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,
    /// Who may send commands.
    #[command(flatten)]
    pub access: ApiAccess,
    /// Commands per second each client may send (its token, or its address without tokens);
    /// 0 turns rate limiting off.
    #[arg(long, env = "EVENTLINE_RATE_LIMIT_PER_S", default_value_t = 1000.0)]
    pub rate_limit_per_s: f64,
    /// How many commands a client may send at once above that rate.
    #[arg(long, env = "EVENTLINE_RATE_LIMIT_BURST", default_value_t = 2000.0)]
    pub rate_limit_burst: f64,
}

impl Config {
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs.max(1))
    }

    pub fn rate_limit(&self) -> RateLimit {
        RateLimit::new(self.rate_limit_per_s, self.rate_limit_burst)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
        super::Cli::command().debug_assert();
    }
}
