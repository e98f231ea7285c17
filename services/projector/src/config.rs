//! The projector's configuration, from flags or the environment.

use std::net::SocketAddr;

use clap::Args;
use eventline_runtime::config::{DatabaseConfig, KafkaConfig, RedisConfig};

use eventline_runtime::auth::{JwtConfig, StaticTokens};

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address of the admin API (health, readiness, metrics, status).
    #[arg(long, env = "EVENTLINE_PROJECTOR_ADDR", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
    /// Consumer group shared by all projector instances.
    #[arg(long, env = "EVENTLINE_PROJECTOR_GROUP", default_value = "eventline-projector")]
    pub group_id: String,
    /// How long the group waits for a silent instance (crashed, partitioned) before giving its
    /// partitions to the others, in milliseconds.
    #[arg(long, env = "EVENTLINE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Most events applied in one transaction. Batches are never waited for: each holds what was
    /// read while the one before it committed, so they reach this size only when behind.
    #[arg(long, env = "EVENTLINE_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,
    /// Longest wait of a fetch for new data, in milliseconds (librdkafka's default). Kafka answers
    /// a waiting fetch as soon as data arrives, so this only bounds idle fetches and does not
    /// delay freshness.
    #[arg(long, env = "EVENTLINE_FETCH_WAIT_MS", default_value_t = 500)]
    pub fetch_wait_ms: u64,
    /// How long a partition with events to apply may be owned by no member of the group before
    /// this instance reports not ready, in seconds (a rebalance takes a few).
    #[arg(long, env = "EVENTLINE_UNCONSUMED_PARTITION_SECS", default_value_t = 30)]
    pub unconsumed_partition_secs: u64,
    /// Who may use the console (`/console` on the admin port): comma-separated
    /// `<name>:<scopes>:<token>` entries, scopes `view` (look) and `operate` (act), joined by `+`
    /// (the roles `viewer` and `operator` are kept as aliases), tokens of 16 characters or more.
    /// The name is what the audit records. With neither these nor an identity provider the
    /// console refuses everyone.
    #[arg(long, env = "EVENTLINE_CONSOLE_TOKENS", default_value = "", hide_default_value = true)]
    pub console_tokens: StaticTokens,
    /// The identity provider whose JWTs the console accepts.
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// Refuse every console action (redrive, discard, rebuild…) with 403, whatever the role.
    #[arg(long, env = "EVENTLINE_CONSOLE_READ_ONLY", default_value_t = false)]
    pub console_read_only: bool,
    /// A partition with events to apply whose checkpoint has not moved for this long is shown
    /// as stalled by the console, in seconds.
    #[arg(long, env = "EVENTLINE_STALL_SECS", default_value_t = 30)]
    pub stall_secs: u64,
    /// The breaker: most aggregate keys parked at once (behind an event the database refused).
    /// A batch that would park more applies nothing and the projection halts, not ready, until
    /// the cause is fixed (a bad deploy, a dropped column), then resumes by itself.
    #[arg(long, env = "EVENTLINE_PARK_MAX_KEYS", default_value_t = 100)]
    pub park_max_keys: usize,
    /// Most keys (event ids, users, orders, payments, skus) a rebuild's bulk load holds in memory
    /// (roughly 200 bytes each); a log with more is replayed batch by batch instead. 0 turns the
    /// bulk load off.
    #[arg(long, env = "EVENTLINE_REBUILD_BULK_MAX_KEYS", default_value_t = 20_000_000)]
    pub rebuild_bulk_max_keys: usize,
    /// Where the console links a dead letter's trace: Jaeger's address (its UI and API).
    #[arg(long, env = "EVENTLINE_JAEGER_URL", default_value = "http://127.0.0.1:16686")]
    pub jaeger_url: String,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub serving: eventline_runtime::server::ServeConfig,
}
