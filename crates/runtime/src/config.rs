//! Configuration pieces every service shares, read from the environment (or flags).

use clap::Args;

/// Where the event log is.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The event topic (the log).
    #[arg(long = "topic", env = "EVENTLINE_TOPIC", default_value = "eventline.events")]
    pub topic: String,
    /// Partitions of the event topic when a service has to create it.
    #[arg(long = "topic-partitions", env = "EVENTLINE_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Replication factor of the event topic when a service has to create it.
    #[arg(long = "topic-replication", env = "EVENTLINE_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
}

/// Where the read models are.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/eventline"
    )]
    pub url: String,
    /// Largest number of pooled connections.
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
}

/// Where Redis is.
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Redis connection URL.
    #[arg(id = "redis_url", long = "redis-url", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
}
