//! Runtime glue shared by the three eventline services. Nothing domain-specific lives here.

pub mod checkpoints;
pub mod config;
pub mod db;
pub mod http;
pub mod kafka;
pub mod log_identity;
pub mod metrics;
pub mod problem;
pub mod read_models;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
