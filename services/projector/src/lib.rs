//! The projector: consumes the event log and applies it to the PostgreSQL read models so that each
//! event changes them exactly once, whatever Kafka redelivers and wherever a crash happens.
//!
//! - `consumer`: the Kafka consumer and its partition assignments;
//! - `coverage`: partitions with lag that no member of the group consumes;
//! - `checkpoint`: per-partition positions stored with the read models;
//! - `dedup`: the Redis fast path that recognises redelivered events early;
//! - `dlq`: the dead-letter queue (durable in PostgreSQL, mirrored to a Redis stream);
//! - `project`: one transaction per batch — dedup by event id, the upserts, the checkpoint;
//! - `runner`: the loop that ties them together, with retries;
//! - `spans`: traces of that work, joined to the traces of the requests that appended the events;
//! - `target`: which read-model version is written;
//! - `rebuild`: a new version filled from the log next to the live one, then switched to;
//! - `verify`: the live version compared with a fold of the log, to detect drift;
//! - `progress`: progress bars and log lines for those long commands;
//! - `log_check`: whether the read models belong to the log the broker serves;
//! - `admin`: health, readiness, metrics and status over HTTP.

mod admin;
pub mod checkpoint;
pub mod cli;
pub mod config;
mod consumer;
mod coverage;
mod dedup;
pub mod dlq;
pub mod log_check;
pub mod progress;
pub mod project;
pub mod rebuild;
mod runner;
mod spans;
mod startup;
pub mod status;
mod target;
pub mod verify;

pub use config::Config;
pub use startup::Application;
