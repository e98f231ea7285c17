//! Runtime glue shared by the three eventline services. Nothing domain-specific lives here.
//! The Kafka and Redis clients are behind the `kafka` and `redis` features, so a service links
//! only what it uses.

pub mod auth;
pub mod backoff;
pub mod config;
pub mod cors;
pub mod db;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
mod kafka_wire;
pub mod log_end;
pub mod log_identity;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "kafka")]
pub mod topic_guard;
